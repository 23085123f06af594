"""The one configuration model: settings grouped by stage, with named presets.

Each section is the settings model its stage's tasks take directly (``config.audio`` is a
:class:`tasks.audio.AudioSettings`, and so on), under the names the user writes::

    preset = "default"       # seed | default | fast
    seed = 3                 # shorthand: [training] seed and [clustering] seed
    [audio]      n_mels = 64 ...        (tasks.audio.AudioSettings)
    [model]      objective = ...        (tasks.model.ModelSettings)
    [training]   epochs = 50 ...        (tasks.train.TrainingSettings)
    [features]   source = "network" ... (tasks.cluster.FeatureSettings)
    [clustering] k = 10 ...             (tasks.cluster.ClusteringSettings)
    [runtime]    n_workers = 4 ...      (RuntimeSettings, below)

Precedence, lowest first: preset < TOML file < environment < CLI flags. The environment is
``AUDIOCLUST_<SECTION>__<KEY>`` (``AUDIOCLUST_CLUSTERING__K=10``); ``AUDIOCLUST_PRESET``,
``AUDIOCLUST_SEED`` and ``AUDIOCLUST_SPLIT_SEED`` for the top-level keys. Keys of the flat
form of earlier versions (``k = 10``, ``AUDIOCLUST_N_WORKERS=4``) are read as their section's
key (:data:`FLAT`).

* ``seed``    - the report exactly: 288x432 Mel spectrogram saved as a colour picture (pixels
                0..255), six 144x144x3 blocks, 18-layer autoencoder to a 9x9x1 code, batch 4,
                EarlyStopping(0.009, 15), 200 epochs, K-Means into 20 clusters. Hours on a CPU.
* ``default`` - our best (measured in ``bench/quality.py``): silence trimmed, the clip stretched
                to a 64-band log-Mel image of up to 128 frames, one block per clip, each clip's
                band means half removed; a small CNN trained contrastively (SimCLR) on the corpus, twice
                (views as they are, and moved in pitch), keeping the network whose codes cluster
                more consistently; standardized, PCA-whitened codes -> a consensus of 100 K-Means runs.
* ``fast``    - a small geometry and few epochs, for tests.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from tasks.audio import AudioSettings
from tasks.cluster import ClusteringSettings, FeatureSettings
from tasks.model import ModelSettings
from tasks.train import TrainingSettings


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line for the user."""


class RuntimeSettings(BaseModel):
    """``[runtime]``: the store's chunking and where the work runs (Dask)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clips_per_chunk: int = 32  # clips in one store chunk: the unit a task writes whole
    clips_per_task: int = 1024  # a preprocessing task range: consecutive chunks up to this many clips
    max_in_flight: int = 16  # tasks submitted at once: bounds the flow's memory on huge corpora
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dask_address: str | None = None  # a running scheduler (tcp://HOST:PORT) instead of a LocalCluster
    dashboard_address: str = "127.0.0.1:8787"

    @field_validator("clips_per_chunk", "clips_per_task", "n_workers", "max_in_flight")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be at least 1, got {v}")
        return v


SECTIONS: dict[str, type[BaseModel]] = {
    "audio": AudioSettings,
    "model": ModelSettings,
    "training": TrainingSettings,
    "features": FeatureSettings,
    "clustering": ClusteringSettings,
    "runtime": RuntimeSettings,
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["seed", "default", "fast"] = "default"
    split_seed: int = 0  # the public/private halves the scores are reported on
    audio: AudioSettings = AudioSettings()
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()
    features: FeatureSettings = FeatureSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    runtime: RuntimeSettings = RuntimeSettings()

    @model_validator(mode="after")
    def _check(self) -> "Config":
        if self.audio.resolved:
            geometry = self.audio.geometry()
            if self.model.objective == "autoencoder":
                self.model.code_side(geometry.block)
        if self.model.objective == "autoencoder" and self.training.epochs == "auto":
            raise ValueError("training.epochs 'auto' is for the contrastive objective; give a number")
        c = self.clustering
        if c.consensus_sample < (c.k_max if c.k == "auto" else c.k):
            raise ValueError("clustering.consensus_sample must be >= k (k_max when k is 'auto')")
        if self.clustering.method in ("consensus", "head") and self.features.pca == 0:
            raise ValueError(f"clustering '{self.clustering.method}' draws sub-spaces of principal components (a consensus): set features.pca > 0 or 'auto'")
        if self.clustering.method == "head" and self.features.source != "network":
            raise ValueError("clustering 'head' is trained on the network's features: it needs features.source 'network'")
        if self.features.pca != "auto" and self.features.pca < 0:
            raise ValueError("features.pca must be >= 0")
        if self.audio.image == "picture" and (self.audio.channels != 3 or self.features.source == "mfcc-stats"):
            raise ValueError("audio.image 'picture' is a 3-channel colour image (audio.channels = 3), and the mfcc-stats baseline needs 'features'")
        if self.training.freq_shift != 0 and self.model.objective != "contrastive":
            raise ValueError("training.freq_shift moves the contrastive objective's views: it needs model.objective 'contrastive'")
        if self.training.mix != "add" and self.model.objective != "contrastive":
            raise ValueError("training.mix is how the contrastive objective's views mix in another clip: it needs model.objective 'contrastive'")
        if self.training.freq_warp != 0 and self.model.objective != "contrastive":
            raise ValueError("training.freq_warp scales the contrastive objective's views in frequency: it needs model.objective 'contrastive'")
        if self.training.freq_warp and self.audio.block not in ("image", self.audio.n_mels):
            raise ValueError("training.freq_warp scales a view's whole band axis: it needs audio.block 'image' (blocks as tall as the image)")
        if not 0 <= self.training.freq_warp <= 1:
            raise ValueError("training.freq_warp must be in [0, 1] octaves")
        if self.training.freq_shift not in ("auto", "both") and self.training.freq_shift < 0:
            raise ValueError("training.freq_shift must be >= 0, 'auto' or 'both'")
        if not 0 < self.training.crop <= 1:
            raise ValueError("training.crop must be in (0, 1]")
        norms = self.model.input_norm
        if norms != ("band",) and self.model.objective != "contrastive":
            raise ValueError("model.input_norm is the contrastive network's input: it needs model.objective 'contrastive'")
        if "pcen" in norms and (self.audio.image != "features" or self.audio.spectrogram == "linear" or self.audio.channels != 1):
            raise ValueError("model.input_norm 'pcen' reads a dB spectrogram: it needs audio.image 'features', spectrogram 'mel' or 'log', channels 1")
        if self.model.envelope and (self.model.objective != "contrastive" or norms == ("band",)):
            raise ValueError("model.envelope is the share of each clip's band means a contrastive 'clip' or 'pcen' input keeps: it needs one of those")
        if len(norms) > 1 and self.audio.block != "image":
            raise ValueError("several model.input_norm put codes side by side per clip: they need audio.block 'image' (one block per clip)")
        return self

    def resolve(self, durations: list[float]) -> "Config":
        """A copy with ``"auto"`` audio settings fixed from a sample of the corpus's clip durations (s)."""
        return self.model_copy(update={"audio": self.audio.resolve(durations)})

    def with_resolved(self, values: dict) -> "Config":
        """A copy with the ``"auto"`` audio settings set to ``values`` (as a store recorded them)."""
        return self.model_copy(update={"audio": self.audio.with_resolved(values)})


SEED: dict[str, Any] = {  # the defaults above are the report's system; its input was a saved picture of the spectrogram
    "audio": {"image": "picture"},  # pixels 0..255: its EarlyStopping(0.009, 15) then runs as the report's did (docs/research/seed_input.py)
    "model": {"code_activation": "linear"},  # a 1-channel ReLU code dies (all zeros, NMI 0) within a few epochs
}
DEFAULT: dict[str, Any] = {  # our best: see docs/research/README.md and bench/quality.py
    "audio": {
        "duration": "auto",
        "min_duration": 0.1,  # spoken words are often shorter than the report's 0.5 s
        "trim_db": 40.0,
        "n_mels": 64,
        "n_frames": "auto",
        "n_fft": 1024,
        "time_normalize": True,  # the trimmed clip fills the image: words of any speed line up
        "block": "image",
        "channels": 1,
    },
    # clip: speaker, microphone and room drop out; a second network on PCEN (onsets over the background), the consensus over
    # both codes: esc10 +0.07, timbre +0.035, events +0.023, fsdd +0.012 NMI (2-3 seeds; docs/research/pcen_and_batch.md)
    # envelope 0.5: half of each clip's band means left in, so sources differ by their colour as well as their rhythm:
    # with features.networks joint, esc10 0.713 -> 0.743, fsdd 0.681 -> 0.725, timbre 0.576 -> 0.693 NMI, events -0.03 (3 seeds;
    # docs/research/envelope.md)
    "model": {"objective": "contrastive", "input_norm": ["clip", "pcen"], "envelope": 0.5, "filters": [16, 32, 64]},
    # freq_shift both: a network with pitch-shifted views too, both kept (the agreement picks the PCEN network's views):
    # esc10 0.743 -> 0.760, temporal 0.918 -> 0.943, fsdd level, timbre -0.018, events 0.499 -> 0.456 NMI (3 seeds;
    # docs/research/envelope.md);
    # temperature 0.2: fsdd +0.06 NMI over 0.1 (3 seeds), the other kinds of audio within their seed spread;
    # freq_warp 0.07: fsdd 0.584 -> 0.635 (3 seeds; the pick now keeps its unshifted network), the others within their spread (docs/research/head_and_shift.md)
    # batch 32: fewer clips of a view's own class among its negatives; fsdd +0.03 NMI (3 seeds), esc10 level, one events seed -0.1
    "training": {"crop": 0.8, "epochs": "auto", "batch_size": 32, "learning_rate": 1e-3, "freq_shift": "both", "temperature": 0.2,
                 "freq_warp": 0.07},
    # networks joint: with half the envelope in both, their codes reduced as one beat each reduced apart on esc10 (+0.02) and
    # timbre (+0.07), and lose 0.03 on fsdd and events (2-3 seeds)
    "features": {"block_pool": "concat", "standardize": True, "pca": "auto", "whiten": True, "networks": "joint"},
    "clustering": {"method": "consensus", "dec_batch_size": 256},  # consensus: esc10 0.614 -> 0.664, fsdd 0.386 -> 0.545 NMI over one K-Means
    "runtime": {"clips_per_chunk": 256},  # 1-4 MB chunks; fewer, larger tasks (docs/performance.md)
}
PRESETS: dict[str, dict[str, Any]] = {
    "seed": SEED,
    "default": DEFAULT,
    "fast": {
        "audio": {"n_mels": 64, "n_frames": 96, "block": 32, "channels": 1},
        "model": {"filters": [8, 8]},
        "training": {"epochs": 12, "batch_size": 16, "patience": 4, "min_delta": 1e-4},
        "runtime": {"clips_per_chunk": 16},
    },
}

TOP_LEVEL = ("preset", "split_seed")
# the flat keys of earlier versions (and the CLI's names): section.key, where the name changed
RENAMED = {"train_threads": "training.threads", "max_train_clips": "training.max_clips", "features": "features.source",
           "cluster": "clustering.method", "seed": ("training.seed", "clustering.seed")}
FLAT: dict[str, str | tuple[str, ...]] = {
    **{name: f"{section}.{name}" for section, model in SECTIONS.items() for name in model.model_fields if name != "auto"},
    **RENAMED,
}
NOT_SETTINGS = {"worker_threads", "project_dir", "log_level"}  # AUDIOCLUST_* variables that are not configuration


def nest(values: dict[str, Any], origin: str = "configuration") -> dict[str, Any]:
    """``values`` in the nested form: sections as tables, ``section.key`` and flat keys put in their section.

    An unknown key is one :class:`ConfigError` line naming ``origin``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            for name, v in value.items():
                _put(out, f"{key}.{name}", v, origin)
        elif key in TOP_LEVEL:
            out[key] = value
        elif "." in key:
            _put(out, key, value, origin)
        elif key in FLAT:
            paths = FLAT[key]
            for path in paths if isinstance(paths, tuple) else (paths,):
                _put(out, path, value, origin)
        else:
            raise ConfigError(f"unknown setting '{key}' in {origin} (sections: {', '.join(SECTIONS)}; see docs/architecture.md)")
    return out


def _put(out: dict, path: str, value: Any, origin: str) -> None:
    section, _, name = path.partition(".")
    if section not in SECTIONS or name not in SECTIONS[section].model_fields or name == "auto":
        raise ConfigError(f"unknown setting '{path}' in {origin}")
    out.setdefault(section, {})[name] = value


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def env_values(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from ``AUDIOCLUST_*`` environment variables, nested. Values are read as JSON where
    they parse (numbers, true/false, lists), else as text (``auto``, ``4GiB``)."""
    values: dict[str, Any] = {}
    for name, raw in (os.environ if environ is None else environ).items():
        if not name.startswith("AUDIOCLUST_"):
            continue
        key = name.removeprefix("AUDIOCLUST_").lower()
        if key in NOT_SETTINGS:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        values[key.replace("__", ".")] = value
    nested = nest(values, "the environment (AUDIOCLUST_* variables)")
    for section, fields in nested.items():  # each variable checked on its own, so the message can name it
        if section in SECTIONS:
            try:
                SECTIONS[section](**fields)
            except ValidationError as exc:
                raise ConfigError(f"bad AUDIOCLUST_* environment variable: {section}.{_first_error(exc)}") from None
    return nested


def _first_error(exc: ValidationError) -> str:
    """The first problem, as ``section.field: what is wrong`` (or just what is wrong, for a check across fields)."""
    errors = exc.errors()
    err = errors[0]
    loc = tuple(str(p) for p in err.get("loc", ()))
    msg = err["msg"].removeprefix("Value error, ")
    same = [e for e in errors if tuple(map(str, e.get("loc", ())))[: len(loc) - 1] == loc[:-1] and len(e.get("loc", ())) == len(loc)]
    if len(same) > 1 and all(not str(e["loc"][-1]).isidentifier() or e["loc"][-1] in ("int", "float", "literal['auto']") for e in same):
        # a field of several types (a number or "auto"): each alternative's complaint
        loc = loc[:-1]
        msg = f"{err.get('input')!r} is not accepted: " + "; ".join(e["msg"] for e in same)
    return f"{'.'.join(loc)}: {msg}" if loc else msg


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
    """The settings of a TOML file (at its top, or under ``[audioclust]``), nested."""
    data = read_toml(path, "config file")
    return nest(dict(data.get("audioclust", data)), f"config file {path}")


def load_config(preset: str | None = None, file: str | Path | None = None, fallback: str = "default", **overrides: Any) -> Config:
    """Build the configuration: preset < TOML file < environment < ``overrides`` (None = unset).

    ``overrides`` take flat names (``k``, ``n_workers``: the CLI's), ``section.key`` or section
    tables. The preset is the one named by the caller (a ``--preset`` flag, a deployment's or
    grid's parameter), else by ``AUDIOCLUST_PRESET``, else by the file, else ``fallback``.
    """
    env = env_values()
    from_file = config_file_fields(file) if file is not None else {}
    cli = nest({k: v for k, v in overrides.items() if v is not None}, "the options")
    name = cli.get("preset") or preset or env.get("preset") or from_file.get("preset") or fallback
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    data = _merge(PRESETS[name], from_file, env, cli, {"preset": name})
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_first_error(exc)}") from None


def serve_parameters(preset: str | None, file: str | Path | None, k: int | None) -> tuple[str, dict[str, Any]]:
    """The preset and overrides that ``audioclust serve`` hands its runs, ranked as :func:`load_config`
    ranks them: a setting given by an ``AUDIOCLUST_*`` variable keeps the variable's value (environment over file)."""
    from_file = config_file_fields(file) if file is not None else {}
    env = env_values()
    name = preset or env.get("preset") or from_file.get("preset") or "default"
    overrides = {section: {key: v for key, v in values.items() if key not in env.get(section, {})}
                 for section, values in from_file.items() if section in SECTIONS}
    overrides = {section: values for section, values in overrides.items() if values}
    if k is not None:
        overrides = _merge(overrides, {"clustering": {"k": k}})
    load_config(name, **overrides)  # fail now, not in the first scheduled run
    return name, overrides
