"""Train the network: the report's autoencoder on the stored blocks (streamed from Zarr), or the
contrastive encoder (tasks.contrastive), through the one training shape (:func:`tasks.fit.fit`).

Runs in the flow process (not on Dask). Blocks are read chunk by chunk in a shuffled order,
with a shuffle buffer of a few chunks, so the corpus never has to fit in memory. Every epoch
writes a checkpoint; a retried or re-run task with the same inputs resumes from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Literal, Sequence

from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict

from storage import Store
from tasks.audio import value_scale
from tasks.blocks import BlockStream, autoencoder_batches, split_clips
from tasks.caching import checkpoint_fingerprint, given_key
from tasks.fit import Checkpoint, fit
from tasks.keras_setup import configure_keras
from tasks.model import ModelSettings, build_autoencoder, encoder_of


class TrainingSettings(BaseModel):
    """``[training]``: how the network is fitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int | Literal["auto"] = 200  # auto (contrastive): about 40 000 clip-views, 30..100 epochs
    batch_size: int = 4
    learning_rate: float = 1e-3
    patience: int = 15
    min_delta: float = 0.009  # absolute, on MSE of [0, 1]-scaled inputs
    validation_fraction: float = 0.0  # of clips; 0: monitor the training loss, as the report did
    seed: int = 0
    threads: int = 0  # 0: all cores; 1: bit-for-bit repeatable CPU training (about 1.45x slower on 2 cores)
    shuffle_chunks: int = 4  # chunks held in the shuffle buffer
    mixed_precision: bool = False  # float16 compute, only when a GPU is used
    temperature: float = 0.1  # contrastive objective: NT-Xent temperature
    crop: float = 0.6  # contrastive objective: fraction of frames per augmented view
    # contrastive objective: views moved by up to this many Mel bands (pitch invariance); "auto": one network
    # without, one with, keeping the one whose codes cluster more consistently; "both": keeping both, their codes
    # side by side (tasks/contrastive.py)
    freq_shift: int | Literal["auto", "both"] = 0
    # contrastive objective: how a view mixes in another clip: its log-Mel image added ("add"), or its power
    # added to the view's ("power", BYOL-A: esc10 +0.04 NMI, fsdd and events worse; docs/research/head_and_shift.md)
    mix: Literal["add", "power"] = "add"
    # contrastive objective: each view's frequencies scaled by up to +-this many octaves (vocal tract length
    # perturbation: a word from another throat; 0.07 = +-5 %: fsdd gains, the others within their spread; docs/research/head_and_shift.md)
    freq_warp: float = 0.0
    max_clips: int = 20000  # contrastive objective: train on a seeded sample of at most this many clips


# -- checkpoints ---------------------------------------------------------------------------


def train_autoencoder(
    store_url: str,
    run_dir: str,
    model: ModelSettings,
    train: TrainingSettings,
    log: Callable[[str], None] = print,
    callbacks: Sequence = (),
) -> dict:
    """Fit the autoencoder; write ``autoencoder.keras``, ``encoder.keras``, ``history.json``, ``train.json``.

    ``callbacks`` are extra Keras callbacks (run after the checkpoint is written).
    """
    device = configure_keras(train.threads, train.seed)
    import keras

    if train.mixed_precision and " on GPU" in device:
        keras.mixed_precision.set_global_policy("mixed_float16")
    out = Path(run_dir)
    store = Store.open(store_url)
    train_clips, val_clips = split_clips(store.ok(), train.validation_fraction, train.seed)
    if not train_clips.any():
        raise ValueError("no stored clips to train on: every input was rejected")
    stream = BlockStream(store, train_clips, shuffle=True, shuffle_chunks=train.shuffle_chunks, seed=train.seed)
    val_stream = BlockStream(store, val_clips, shuffle=False) if val_clips.any() else None

    autoencoder, _ = build_autoencoder(model, store.geometry.block_shape, value_scale(store.attrs.get("audio")))
    autoencoder.compile(optimizer=keras.optimizers.Adam(train.learning_rate), loss="mse")
    checkpoint = Checkpoint(out / "checkpoint", checkpoint_fingerprint(store_url, stream.n_blocks, model, train))
    log(f"training on {stream.n_blocks} blocks of {store.geometry.block_shape} on {device}")
    monitor = "val_loss" if val_stream else "loss"
    epoch_log = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: log(f"epoch {epoch + 1}/{train.epochs}: " + ", ".join(f"{k} {v:.5f}" for k, v in logs.items()))
    )
    t0 = time.perf_counter()
    result = fit(
        autoencoder, autoencoder_batches(stream, train.batch_size), train.epochs, checkpoint, log,
        early_stopping={"monitor": monitor, "min_delta": train.min_delta, "patience": train.patience},
        validation=autoencoder_batches(val_stream, train.batch_size, finite=True) if val_stream else None,
        callbacks=[epoch_log, *callbacks],
    )
    seconds = time.perf_counter() - t0
    history = result["history"]
    autoencoder.save(out / "autoencoder.keras")
    encoder_of(autoencoder).save(out / "encoder.keras")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {
        "encoder": str(out / "encoder.keras"),
        "autoencoder": str(out / "autoencoder.keras"),
        "history": str(out / "history.json"),
        "epochs": len(history.get("loss", [])),
        "resumed_from_epoch": result["resumed_from_epoch"],
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "best_" + monitor: min(history[monitor]) if history.get(monitor) else None,
        "best_epoch": result["best_epoch"],
        "stopped_early": result["stopped_early"],
        "train_seconds": round(seconds, 1),
        "device": device,
        "objective": "autoencoder",
        "blocks": stream.n_blocks,
        "validation_blocks": val_stream.n_blocks if val_stream else 0,
        "model": model.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    checkpoint.clear()  # finished: a new run starts fresh
    return summary


def train_model(store_url: str, run_dir: str, model: ModelSettings, train: TrainingSettings, log: Callable[[str], None] = print) -> dict:
    """Train ``model.objective``: the report's autoencoder, or the contrastive encoder (tasks.contrastive)."""
    if model.objective == "contrastive":
        from tasks.contrastive import train_contrastive

        return train_contrastive(store_url, run_dir, model.filters, train, log=log, input_norm=model.input_norm, envelope=model.envelope)
    return train_autoencoder(store_url, run_dir, model, train, log=log)


@task(name="train-model", task_run_name="train-model", cache_key_fn=given_key, persist_result=True, retries=1, retry_delay_seconds=5)
def train_task(store_url: str, run_dir: str, model: ModelSettings, train: TrainingSettings, cache_key: str) -> dict:
    """Train in the flow process; a retry (or the next run after a killed one) resumes from the last epoch's checkpoint.

    Cached on ``cache_key`` (:func:`tasks.caching.train_key`), which ``train.json`` records.
    """
    summary = {**train_model(store_url, run_dir, model, train, log=get_run_logger().info), "cache_key": cache_key}
    (Path(run_dir) / "train.json").write_text(json.dumps(summary, indent=1))
    return summary
