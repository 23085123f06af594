"""Train the autoencoder on the stored blocks, in the flow process (not on Dask)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from storage import Store
from tasks.model import ModelSpec, build_autoencoder


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 200
    batch_size: int = 4
    learning_rate: float = 1e-3
    patience: int = 15
    min_delta: float = 0.009  # absolute, on MSE of [0, 1]-scaled inputs
    validation_fraction: float = 0.0  # 0: monitor the training loss, as the report did
    seed: int = 0
    threads: int = 0  # 0: all cores


def configure_tensorflow(threads: int, seed: int | None = None) -> str:
    """Set thread counts and seeds before the first op; return the device used."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            pass  # already initialised in this process
    if seed is not None:
        keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else f"CPU ({threads or os.cpu_count()} threads)"


def ok_blocks(store: Store) -> np.ndarray:
    """All blocks of stored (ok) clips, float32 in [0, 1], read chunk by chunk."""
    ok = store.read("ok")
    bpc = store.geometry.blocks_per_clip
    parts = []
    for (s, e), (b0, b1) in zip(store.clip_batches(), store.iter_block_chunks()):
        mask = np.repeat(ok[s:e], bpc)
        if mask.any():
            parts.append(store.blocks(b0, b1)[mask])
    if not parts:
        raise ValueError("no stored clips to train on: every input was rejected")
    return np.concatenate(parts)


def train_autoencoder(
    store_url: str, run_dir: str, model: ModelSpec, train: TrainSpec, log: Callable[[str], None] = print
) -> dict:
    """Fit the autoencoder; write ``autoencoder.keras``, ``encoder.keras``, ``history.json``.

    Returns a summary with the paths, epochs run, final and best loss, and the device.
    """
    device = configure_tensorflow(train.threads, train.seed)
    import keras

    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = ok_blocks(Store.open(store_url))
    log(f"training on {len(x)} blocks of {x.shape[1:]} on {device}")
    autoencoder, encoder = build_autoencoder(model)
    autoencoder.compile(optimizer=keras.optimizers.Adam(train.learning_rate), loss="mse")
    monitor = "val_loss" if train.validation_fraction > 0 else "loss"
    epoch_log = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: log(
            f"epoch {epoch + 1}/{train.epochs}: " + ", ".join(f"{k} {v:.5f}" for k, v in logs.items())
        )
    )
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor=monitor, min_delta=train.min_delta, patience=train.patience, restore_best_weights=True
        ),
        epoch_log,
    ]
    t0 = time.perf_counter()
    hist = autoencoder.fit(
        x,
        x,
        batch_size=train.batch_size,
        epochs=train.epochs,
        shuffle=True,
        validation_split=train.validation_fraction,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    autoencoder.save(out / "autoencoder.keras")
    encoder.save(out / "encoder.keras")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {
        "encoder": str(out / "encoder.keras"),
        "autoencoder": str(out / "autoencoder.keras"),
        "history": str(out / "history.json"),
        "epochs": len(history["loss"]),
        "final_loss": history["loss"][-1],
        "best_" + monitor: min(history[monitor]),
        "train_seconds": round(seconds, 1),
        "device": device,
        "blocks": int(len(x)),
        "model": asdict(model),
        "train": asdict(train),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


@task(name="train-autoencoder", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def train_autoencoder_task(store_url: str, run_dir: str, model: ModelSpec, train: TrainSpec) -> dict:
    logger = get_run_logger()
    return train_autoencoder(store_url, run_dir, model, train, log=logger.info)
