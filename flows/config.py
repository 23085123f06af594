"""The one configuration model, with named presets.

Precedence, lowest first: preset < TOML file < environment (``AUDIOCLUST_<FIELD>``) < CLI flags.

* ``seed``    - the report exactly: 288x432 Mel image, six 144x144x3 blocks, 18-layer
                autoencoder to a 9x9x1 code, batch 4, EarlyStopping(0.009, 15), 200 epochs,
                K-Means into 20 clusters. Hours on a CPU; minutes on a GPU.
* ``default`` - our best (issue 8, measured in ``bench/quality.py``): leading/trailing silence
                trimmed, the trimmed clip stretched to a 64-band log-Mel image of up to 128
                frames (the corpus's 95th-percentile duration sets the frame count), kept whole
                (one block per clip); each clip's band means removed; a small CNN trained
                contrastively (SimCLR) on the corpus itself; GAP+GMP clip embedding ->
                standardize -> PCA-whitened (4 k components) -> a consensus of 100
                K-Means runs on random leading sub-spaces (co-association, average linkage).
* ``fast``    - a small geometry and few epochs, for tests and the demo.

``"auto"`` audio values (``duration``, ``n_frames``) are resolved from the corpus when a store
is created, and recorded in the store so a later run on a grown corpus keeps them (and stays
incremental). ``epochs = "auto"`` (contrastive objective) is set from the clip count at training.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage import Geometry
from tasks.audio import AudioSpec
from tasks.cluster import ClusterSpec, FeatureSpec
from tasks.model import ModelSpec
from tasks.train import TrainSpec


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line for the user."""


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIOCLUST_", extra="forbid", validate_assignment=True)

    preset: Literal["seed", "default", "fast"] = "default"
    # audio -> image
    sample_rate: int = 22050
    duration: float | Literal["auto"] = 5.0  # auto: 95th percentile of the corpus's durations, in [0.5, 10] s
    trim_db: float = 0.0  # > 0: trim leading/trailing audio quieter than peak - trim_db dB before windowing
    time_normalize: bool = False  # stretch each (trimmed) clip's spectrogram to the full image width
    min_duration: float = 0.5
    min_sample_rate: int = 4000
    silence_db: float = -60.0
    spectrogram: Literal["mel", "log", "linear"] = "mel"
    n_mels: int = 288
    n_frames: int | Literal["auto"] = 432  # auto: about one frame per 512 samples, a multiple of 8, 16..max_frames
    max_frames: int = 128
    n_fft: int = 2048
    block: int | Literal["image"] = 144  # square block side; "image": the whole image is one block
    channels: Literal[1, 3] = 3
    # store and Dask
    clips_per_chunk: int = 32
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dask_address: str | None = None
    max_in_flight: int = 16  # batches submitted at once: bounds the flow's memory on huge corpora
    clips_per_task: int = 1024  # a preprocessing task takes consecutive chunks up to this many clips, leaving each worker >= 2 tasks
    dashboard_address: str = "127.0.0.1:8787"
    # model
    objective: Literal["autoencoder", "contrastive"] = "autoencoder"  # how the network learns its codes
    input_norm: Literal["band", "clip"] = "band"  # contrastive: per-band corpus z-score, or remove each clip's band means
    filters: list[int] = [32, 32, 16]
    code_channels: int = 1
    kernel: int = 3
    activation: str = "relu"
    encoder: Literal["strided", "dense", "pool"] = "pool"  # report cases 1, 2, 3
    decoder: Literal["strided", "dense", "upsample"] = "upsample"  # report cases 1, 2, 3
    # training
    epochs: int | Literal["auto"] = 200  # auto (contrastive): about 40 000 clip-views, 30..100 epochs
    batch_size: int = 4
    learning_rate: float = 1e-3
    patience: int = 15
    min_delta: float = 0.009
    validation_fraction: float = 0.0
    seed: int = 0
    train_threads: int = 0  # 0: all cores; 1: bit-for-bit repeatable CPU training (measured 1.45x slower on 2 cores)
    shuffle_chunks: int = 4
    mixed_precision: bool = False
    temperature: float = 0.1  # contrastive: NT-Xent temperature
    crop: float = 0.6  # contrastive: fraction of the frames each augmented view keeps
    max_train_clips: int = 20000  # contrastive: train on a seeded sample of at most this many clips
    # clip features and clustering
    features: Literal["network", "mfcc-stats"] = "network"  # mfcc-stats: the handcrafted baseline, no network
    block_pool: Literal["concat", "mean", "meanmax"] = "concat"  # how a clip's block codes combine
    standardize: bool = False  # z-score each feature over the corpus
    pca: int | Literal["auto"] = 0  # > 0: project onto this many principal components; auto: 1.6 k (consensus: 4 k)
    whiten: bool = False  # scale the components to unit variance
    cluster: Literal["kmeans", "consensus", "idec"] = "kmeans"  # consensus: of many K-Means runs; idec: inside the network
    k: int = 20
    n_init: int = 10
    consensus_runs: int = 100  # consensus: K-Means partitions combined
    consensus_sample: int = 4000  # consensus: clips its co-association is computed on (the rest go to the nearest centroid)
    dec_gamma: float = 0.1  # IDEC: weight of the clustering (KL) loss against the reconstruction loss
    dec_tol: float = 0.001  # IDEC: stop when fewer than this fraction of assignments change
    dec_epochs: int = 30  # IDEC: at most this many passes over the clips
    dec_learning_rate: float = 1e-4
    split_seed: int = 0
    resolved_auto: list[str] = []  # set by resolve(): which fields were "auto" (they stay auto in fingerprints)

    @model_validator(mode="after")
    def _check(self) -> "Config":
        if self.resolved:
            self.geometry()
            if self.objective == "autoencoder":
                self.model_spec().code_side
        if self.k < 2:
            raise ValueError(f"k (the number of clusters) must be at least 2, got {self.k}")
        for name in ("clips_per_chunk", "clips_per_task", "n_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.objective == "autoencoder" and self.epochs == "auto":
            raise ValueError("epochs 'auto' is for the contrastive objective; give a number")
        if self.consensus_runs < 1 or self.consensus_sample < self.k:
            raise ValueError("consensus_runs must be >= 1 and consensus_sample >= k")
        if self.cluster == "consensus" and self.pca == 0:
            raise ValueError("cluster 'consensus' draws sub-spaces of principal components: set pca > 0 or 'auto'")
        if self.pca_components < 0 or not 0 < self.crop <= 1:
            raise ValueError("pca must be >= 0 and crop in (0, 1]")
        return self

    @property
    def resolved(self) -> bool:
        """False while ``duration`` or ``n_frames`` is still ``"auto"`` (see :meth:`resolve`)."""
        return self.duration != "auto" and self.n_frames != "auto"

    def resolve(self, durations: list[float]) -> "Config":
        """A copy with ``"auto"`` audio fields fixed from a sample of the corpus's clip durations (s)."""
        duration = self.duration
        if duration == "auto":
            q = float(np.percentile(durations, 95)) if len(durations) else 5.0
            duration = round(float(np.clip(q, 0.5, 10.0)), 2)
        frames = self.n_frames
        if frames == "auto":
            frames = int(min(self.max_frames, max(16, 8 * round(duration * self.sample_rate / 512 / 8))))
        return self.with_resolved({"duration": duration, "n_frames": frames})

    def with_resolved(self, values: dict) -> "Config":
        """A copy with the ``"auto"`` fields among ``values`` set to them."""
        auto = [f for f in ("duration", "n_frames") if getattr(self, f) == "auto"]
        return self.model_copy(update={**{f: values[f] for f in auto}, "resolved_auto": auto})

    def as_configured(self, field: str):
        """The field as the user configured it: ``"auto"`` if it was resolved from the corpus."""
        return "auto" if field in self.resolved_auto else getattr(self, field)

    def geometry(self) -> Geometry:
        if not self.resolved:
            raise ConfigError("duration / n_frames are 'auto': resolve them from the corpus first")
        if self.block == "image":
            return Geometry(freq=self.n_mels, frames=self.n_frames, block=self.n_mels, channels=self.channels, block_width=self.n_frames)
        return Geometry(freq=self.n_mels, frames=self.n_frames, block=self.block, channels=self.channels)

    def audio_spec(self) -> AudioSpec:
        if not self.resolved:
            raise ConfigError("duration / n_frames are 'auto': resolve them from the corpus first")
        return AudioSpec(
            trim_db=self.trim_db,
            time_normalize=self.time_normalize,
            sample_rate=self.sample_rate,
            duration=self.duration,
            min_duration=self.min_duration,
            min_sample_rate=self.min_sample_rate,
            silence_db=self.silence_db,
            kind=self.spectrogram,
            freq=self.n_mels,
            frames=self.n_frames,
            n_fft=self.n_fft,
            channels=self.channels,
        )

    def model_spec(self) -> ModelSpec:
        return ModelSpec(
            block=self.n_mels if self.block == "image" else self.block,
            channels=self.channels,
            filters=tuple(self.filters),
            code_channels=self.code_channels,
            kernel=self.kernel,
            activation=self.activation,
            encoder=self.encoder,
            decoder=self.decoder,
            objective=self.objective,
            input_norm=self.input_norm,
        )

    def train_spec(self) -> TrainSpec:
        return TrainSpec(
            epochs=0 if self.epochs == "auto" else self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience=self.patience,
            min_delta=self.min_delta,
            validation_fraction=self.validation_fraction,
            seed=self.seed,
            threads=self.train_threads,
            shuffle_chunks=self.shuffle_chunks,
            mixed_precision=self.mixed_precision,
            temperature=self.temperature,
            crop=self.crop,
            max_clips=self.max_train_clips,
        )

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(
            source=self.features, block_pool=self.block_pool, standardize=self.standardize, pca=self.pca_components, whiten=self.whiten
        )

    @property
    def pca_components(self) -> int:
        """``pca`` as a number. ``"auto"``: for K-Means, about 1.6 components per cluster (16 for
        k = 10, measured on esc10); for ``consensus``, 4 per cluster (40 for k = 10), in [2, 64].

        Whitening gives every kept component equal weight, so one K-Means on many more than the
        k - 1 directions that separate k cluster means fits noise dimensions (measured: k = 4 on
        40 clips drops from NMI 0.85 at 6 components to 0.25 at 16). The consensus draws each
        of its runs from the first 4 to all components, so it can be given more (measured on the
        default preset's codes, 3 networks each: 16 / 32 / 40 / 64 components gave esc10 NMI
        0.61 / 0.67 / 0.67 / 0.65 and fsdd 0.35 / 0.50 / 0.55 / 0.57)."""
        if self.pca != "auto":
            return self.pca
        per_cluster = 4.0 if self.cluster == "consensus" else 1.6
        return int(np.clip(round(per_cluster * self.k), 2, 64 if self.cluster == "consensus" else 32))

    def cluster_spec(self) -> ClusterSpec:
        return ClusterSpec(
            method=self.cluster, k=self.k, n_init=self.n_init, runs=self.consensus_runs, sample=self.consensus_sample,
            seed=self.seed, gamma=self.dec_gamma, tol=self.dec_tol,
            epochs=self.dec_epochs, learning_rate=self.dec_learning_rate, batch_size=256 if self.objective == "contrastive" else 16,
        )


SEED: dict[str, Any] = {}  # the field defaults above are the report's system
DEFAULT: dict[str, Any] = {  # our best: see docs/research/README.md and bench/quality.py
    "duration": "auto",
    "min_duration": 0.1,  # spoken words are often shorter than the report's 0.5 s
    "trim_db": 40.0,
    "n_mels": 64,
    "n_frames": "auto",
    "n_fft": 1024,
    "time_normalize": True,  # the trimmed clip fills the image: words of any speed line up
    "block": "image",
    "channels": 1,
    "objective": "contrastive",
    "input_norm": "clip",  # each clip's band means removed: speaker, microphone and room drop out
    "crop": 0.8,
    "filters": [16, 32, 64],
    "epochs": "auto",
    "batch_size": 64,
    "learning_rate": 1e-3,
    "clips_per_chunk": 256,  # 1-4 MB chunks; fewer, larger tasks (Prefect's per-task cost: 1.90x -> 1.45x bare dask)
    "block_pool": "concat",
    "standardize": True,
    "pca": "auto",
    "whiten": True,
    "cluster": "consensus",  # K-Means NMI esc10 0.614 / fsdd 0.386 -> 0.664 / 0.545 on the same networks (README)
}
PRESETS: dict[str, dict[str, Any]] = {
    "seed": SEED,
    "default": DEFAULT,
    "fast": {
        "n_mels": 64,
        "n_frames": 96,
        "block": 32,
        "channels": 1,
        "filters": [8, 8],
        "epochs": 12,
        "batch_size": 16,
        "patience": 4,
        "min_delta": 1e-4,
        "clips_per_chunk": 16,
    },
}


def _env_values() -> dict[str, Any]:
    """Fields set through ``AUDIOCLUST_*`` environment variables only."""
    try:
        env = Config()
    except ValidationError as exc:
        raise ConfigError(f"bad AUDIOCLUST_* environment variable: {_first_error(exc)}") from None
    return {name: getattr(env, name) for name in env.model_fields_set}


def _first_error(exc: ValidationError) -> str:
    """The first problem, as ``field: what is wrong`` (or just what is wrong, for a check across fields)."""
    errors = exc.errors()
    err = errors[0]
    loc = err.get("loc", ())
    msg = err["msg"].removeprefix("Value error, ")
    same = [e for e in errors if e.get("loc", ())[:1] == loc[:1]]
    if len(same) > 1 and all(len(e["loc"]) == 2 and isinstance(e["loc"][1], str) for e in same):
        # a field of several types (a number or "auto"): each alternative's complaint
        msg = f"{err.get('input')!r} is not accepted: " + "; ".join(e["msg"] for e in same)
    return f"{loc[0]}: {msg}" if loc else msg


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file's contents; a missing or malformed file is one :class:`ConfigError` line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def config_file_fields(path: str | Path) -> dict[str, Any]:
    """The configuration fields of a TOML file: flat, or under ``[audioclust]``."""
    data = read_toml(path, "config file")
    return dict(data.get("audioclust", data))


def load_config(preset: str | None = None, file: str | Path | None = None, fallback: str = "default", **overrides: Any) -> Config:
    """Build the configuration: preset < TOML file < environment < ``overrides`` (None = unset).

    The preset is the one named by the caller (a ``--preset`` flag, a deployment's or grid's
    parameter), else by ``AUDIOCLUST_PRESET``, else by the file, else ``fallback``.
    """
    env = _env_values()
    from_file = config_file_fields(file) if file is not None else {}
    cli = {k: v for k, v in overrides.items() if v is not None}
    name = cli.get("preset") or preset or env.get("preset") or from_file.get("preset") or fallback
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    data = {**PRESETS[name], **from_file, **env, **cli, "preset": name}
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_first_error(exc)}") from None
