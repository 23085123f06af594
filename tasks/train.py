"""Train the autoencoder on the stored blocks, streamed from Zarr, resumable per epoch.

Runs in the flow process (not on Dask). Blocks are read chunk by chunk in a shuffled
order, with a shuffle buffer of a few chunks, so the corpus never has to fit in memory.
Every epoch writes a checkpoint (model with optimizer state, EarlyStopping state, best
weights, history); a retried or re-run task with the same inputs resumes from it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict

from storage import Store
from tasks import progress
from tasks.blocks import BlockStream, split_clips
from tasks.caching import checkpoint_fingerprint, given_key
from tasks.keras_setup import configure_keras, load_model
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
    max_clips: int = 20000  # contrastive objective: train on a seeded sample of at most this many clips


# -- checkpoints ---------------------------------------------------------------------------


def _early_stopping_class():
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose counters and best weights survive a restart."""

        def __init__(self, resume: dict | None = None, best_weights: list | None = None, **kwargs):
            super().__init__(**kwargs)
            self._resume, self._resume_weights = resume, best_weights

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self._resume:
                self.wait = self._resume["wait"]
                self.best = self._resume["best"]
                self.best_epoch = self._resume["best_epoch"]
                self.best_weights = self._resume_weights

        def state(self) -> dict:
            return {"wait": self.wait, "best": None if self.best is None else float(self.best), "best_epoch": self.best_epoch}

    return ResumableEarlyStopping


def _checkpoint_callback(ckpt: Path, fingerprint: str, es, history: dict):
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """After each epoch: model + optimizer, best weights, counters, history (atomic renames)."""

        def on_epoch_end(self, epoch, logs=None):
            for k, v in (logs or {}).items():
                history.setdefault(k, []).append(float(v))
            tmp = ckpt / "last.tmp.keras"
            self.model.save(tmp)
            os.replace(tmp, ckpt / "last.keras")
            if es.best_epoch == epoch and es.best_weights is not None:
                np.savez(ckpt / "best.tmp.npz", *es.best_weights)
                os.replace(ckpt / "best.tmp.npz", ckpt / "best.npz")
            state = {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "stopped": bool(self.model.stop_training),
                "early_stopping": es.state(),
                "history": history,
            }
            (ckpt / "state.tmp.json").write_text(json.dumps(state))
            os.replace(ckpt / "state.tmp.json", ckpt / "state.json")

    return EpochCheckpoint()


def _load_checkpoint(ckpt: Path, fingerprint: str):
    """``(state, autoencoder, best_weights)`` of a matching checkpoint, or None."""
    state_file = ckpt / "state.json"
    if not state_file.is_file():
        return None
    state = json.loads(state_file.read_text())
    if state.get("fingerprint") != fingerprint or not (ckpt / "last.keras").is_file():
        return None
    model = load_model(ckpt / "last.keras")
    best = None
    if (ckpt / "best.npz").is_file():
        with np.load(ckpt / "best.npz", allow_pickle=False) as z:
            best = [z[f"arr_{i}"] for i in range(len(z.files))]
    return state, model, best


# -- training ------------------------------------------------------------------------------


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
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    store = Store.open(store_url)
    train_clips, val_clips = split_clips(store.ok(), train.validation_fraction, train.seed)
    if not train_clips.any():
        raise ValueError("no stored clips to train on: every input was rejected")
    stream = BlockStream(store, train_clips, shuffle=True, shuffle_chunks=train.shuffle_chunks, seed=train.seed)
    val_stream = BlockStream(store, val_clips, shuffle=False) if val_clips.any() else None

    fingerprint = checkpoint_fingerprint(store_url, stream.n_blocks, model, train)
    resumed = _load_checkpoint(ckpt, fingerprint)
    if resumed:
        state, autoencoder, best_weights = resumed
        initial_epoch = train.epochs if state["stopped"] else state["epoch"] + 1
        history = state["history"]
        es_resume = state["early_stopping"]
        log(f"resuming from the checkpoint after epoch {state['epoch'] + 1}")
    else:
        autoencoder, _ = build_autoencoder(model, store.geometry.block_shape)
        autoencoder.compile(optimizer=keras.optimizers.Adam(train.learning_rate), loss="mse")
        initial_epoch, history, es_resume, best_weights = 0, {}, None, None
    stream.passes = initial_epoch  # a resumed run continues the same sequence of shuffles
    log(f"training on {stream.n_blocks} blocks of {store.geometry.block_shape} on {device}")

    monitor = "val_loss" if val_stream else "loss"
    es = _early_stopping_class()(
        resume=es_resume,
        best_weights=best_weights,
        monitor=monitor,
        min_delta=train.min_delta,
        patience=train.patience,
        restore_best_weights=True,
    )
    epoch_log = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: log(
            f"epoch {epoch + 1}/{train.epochs}: " + ", ".join(f"{k} {v:.5f}" for k, v in logs.items())
        )
    )
    t0 = time.perf_counter()
    autoencoder.fit(
        stream.dataset(train.batch_size),
        validation_data=val_stream.dataset(train.batch_size) if val_stream else None,
        epochs=train.epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the stream shuffles across chunks itself
        callbacks=[es, _checkpoint_callback(ckpt, fingerprint, es, history), epoch_log, progress.keras_callback("train"), *callbacks],
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    autoencoder.save(out / "autoencoder.keras")
    encoder_of(autoencoder).save(out / "encoder.keras")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {
        "encoder": str(out / "encoder.keras"),
        "autoencoder": str(out / "autoencoder.keras"),
        "history": str(out / "history.json"),
        "epochs": len(history.get("loss", [])),
        "resumed_from_epoch": initial_epoch if resumed else None,
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "best_" + monitor: min(history[monitor]) if history.get(monitor) else None,
        "best_epoch": es.best_epoch + 1,
        "train_seconds": round(seconds, 1),
        "device": device,
        "objective": "autoencoder",
        "blocks": stream.n_blocks,
        "validation_blocks": val_stream.n_blocks if val_stream else 0,
        "model": model.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: a new run starts fresh
    return summary


def train_model(store_url: str, run_dir: str, model: ModelSettings, train: TrainingSettings, log: Callable[[str], None] = print) -> dict:
    """Train ``model.objective``: the report's autoencoder, or the contrastive encoder (tasks.contrastive)."""
    if model.objective == "contrastive":
        from tasks.contrastive import train_contrastive

        return train_contrastive(store_url, run_dir, model.filters, train, log=log, input_norm=model.input_norm)
    return train_autoencoder(store_url, run_dir, model, train, log=log)


@task(name="train-model", task_run_name="train-model", cache_key_fn=given_key, persist_result=True, retries=1, retry_delay_seconds=5)
def train_task(store_url: str, run_dir: str, model: ModelSettings, train: TrainingSettings, cache_key: str) -> dict:
    """Train in the flow process; a retry (or the next run after a killed one) resumes from the last epoch's checkpoint.

    Cached on ``cache_key`` (:func:`tasks.caching.train_key`), which ``train.json`` records.
    """
    summary = {**train_model(store_url, run_dir, model, train, log=get_run_logger().info), "cache_key": cache_key}
    (Path(run_dir) / "train.json").write_text(json.dumps(summary, indent=1))
    return summary
