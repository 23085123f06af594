"""The one configuration model, with named presets.

Precedence, lowest first: preset < TOML file < environment (``AUDIOCLUST_<FIELD>``) < CLI flags.

* ``seed``    - the report exactly: 288x432 Mel image, six 144x144x3 blocks, 18-layer
                autoencoder to a 9x9x1 code, batch 4, EarlyStopping(0.009, 15), 200 epochs,
                K-Means into 20 clusters. Hours on a CPU; minutes on a GPU.
* ``default`` - our best; equal to ``seed`` until the quality work replaces it.
* ``fast``    - a small geometry and few epochs, for tests and the demo.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage import Geometry
from tasks.audio import AudioSpec
from tasks.model import ModelSpec
from tasks.train import TrainSpec


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line for the user."""


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIOCLUST_", extra="forbid", validate_assignment=True)

    preset: Literal["seed", "default", "fast"] = "default"
    # audio -> image
    sample_rate: int = 22050
    duration: float = 5.0
    min_duration: float = 0.5
    min_sample_rate: int = 4000
    silence_db: float = -60.0
    spectrogram: Literal["mel", "log", "linear"] = "mel"
    n_mels: int = 288
    n_frames: int = 432
    n_fft: int = 2048
    block: int = 144
    channels: Literal[1, 3] = 3
    # store and Dask
    clips_per_chunk: int = 32
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dask_address: str | None = None
    max_in_flight: int = 16  # batches submitted at once: bounds the flow's memory on huge corpora
    dashboard_address: str = "127.0.0.1:8787"
    # model
    filters: list[int] = [32, 32, 16]
    code_channels: int = 1
    kernel: int = 3
    activation: str = "relu"
    encoder: Literal["strided", "dense", "pool"] = "pool"  # report cases 1, 2, 3
    decoder: Literal["strided", "dense", "upsample"] = "upsample"  # report cases 1, 2, 3
    # training
    epochs: int = 200
    batch_size: int = 4
    learning_rate: float = 1e-3
    patience: int = 15
    min_delta: float = 0.009
    validation_fraction: float = 0.0
    seed: int = 0
    train_threads: int = 0
    shuffle_chunks: int = 4
    mixed_precision: bool = False
    # clustering and scoring
    k: int = 20
    n_init: int = 10
    split_seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "Config":
        self.geometry()
        self.model_spec().code_side
        if self.clips_per_chunk < 1 or self.n_workers < 1 or self.k < 2:
            raise ValueError("clips_per_chunk and n_workers must be >= 1, k >= 2")
        return self

    def geometry(self) -> Geometry:
        return Geometry(freq=self.n_mels, frames=self.n_frames, block=self.block, channels=self.channels)

    def audio_spec(self) -> AudioSpec:
        return AudioSpec(
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
            block=self.block,
            channels=self.channels,
            filters=tuple(self.filters),
            code_channels=self.code_channels,
            kernel=self.kernel,
            activation=self.activation,
            encoder=self.encoder,
            decoder=self.decoder,
        )

    def train_spec(self) -> TrainSpec:
        return TrainSpec(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience=self.patience,
            min_delta=self.min_delta,
            validation_fraction=self.validation_fraction,
            seed=self.seed,
            threads=self.train_threads,
            shuffle_chunks=self.shuffle_chunks,
            mixed_precision=self.mixed_precision,
        )


SEED: dict[str, Any] = {}  # the field defaults above are the report's system
PRESETS: dict[str, dict[str, Any]] = {
    "seed": SEED,
    "default": dict(SEED),
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
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "config"
    return f"{where}: {err['msg']}"


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file's contents; a missing or malformed file is one :class:`ConfigError` line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def load_config(preset: str | None = None, file: str | Path | None = None, **overrides: Any) -> Config:
    """Build the configuration: preset < TOML file < environment < ``overrides`` (None = unset)."""
    env = _env_values()
    from_file: dict[str, Any] = {}
    if file is not None:
        from_file = read_toml(file, "config file")
        from_file = from_file.get("audioclust", from_file)
    cli = {k: v for k, v in overrides.items() if v is not None}
    name = cli.get("preset") or env.get("preset") or from_file.get("preset") or preset or "default"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    data = {**PRESETS[name], **from_file, **env, **cli, "preset": name}
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_first_error(exc)}") from None
