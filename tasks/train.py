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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from prefect import get_run_logger, task

from storage import Store
from tasks.caching import checkpoint_fingerprint, train_key
from tasks.model import ModelSpec, build_autoencoder, encoder_of


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 200
    batch_size: int = 4
    learning_rate: float = 1e-3
    patience: int = 15
    min_delta: float = 0.009  # absolute, on MSE of [0, 1]-scaled inputs
    validation_fraction: float = 0.0  # of clips; 0: monitor the training loss, as the report did
    seed: int = 0
    threads: int = 0  # 0: all cores
    shuffle_chunks: int = 4  # chunks held in the shuffle buffer
    mixed_precision: bool = False  # float16 compute, only when a GPU is used
    temperature: float = 0.1  # contrastive objective: NT-Xent temperature
    crop: float = 0.6  # contrastive objective: fraction of frames per augmented view
    max_clips: int = 20000  # contrastive objective: train on a seeded sample of at most this many clips


def configure_tensorflow(threads: int, seed: int | None = None) -> str:
    """Set thread counts, seeds (and, on CPU, op determinism) before the first op; return the device."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            pass  # already initialised in this process
    gpus = tf.config.list_physical_devices("GPU")
    if seed is not None:
        keras.utils.set_random_seed(seed)
        if not gpus:  # some GPU kernels (e.g. UpSampling gradients) have no deterministic version
            tf.config.experimental.enable_op_determinism()
    return f"GPU ({gpus[0].name})" if gpus else f"CPU ({threads or os.cpu_count()} threads)"


# -- streaming blocks --------------------------------------------------------------------


def split_clips(ok: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation) over clips; only ok clips, split by clip, seeded."""
    val = np.zeros(len(ok), bool)
    if fraction > 0:
        idx = np.flatnonzero(ok)
        n_val = max(1, int(round(fraction * len(idx))))
        val[np.random.default_rng(seed).choice(idx, n_val, replace=False)] = True
    return ok & ~val, val


class BlockStream:
    """The blocks of the clips in ``clips``, read from the store chunk by chunk.

    Each pass visits the chunks in a new seeded order and shuffles blocks within a
    buffer of ``shuffle_chunks`` chunks; at most that many chunks are in memory.
    """

    def __init__(self, store: Store, clips: np.ndarray, shuffle: bool = True, shuffle_chunks: int = 4, seed: int = 0):
        self.store, self.clips, self.shuffle = store, clips, shuffle
        self.shuffle_chunks, self.seed = max(1, shuffle_chunks), seed
        self.bpc = store.geometry.blocks_per_clip
        self.chunks = [(s, e) for s, e in store.clip_batches() if clips[s:e].any()]
        self.n_blocks = int(clips.sum()) * self.bpc
        self.passes = 0
        self.max_buffered = 0  # blocks held at once, for tests and benchmarks

    def _read(self, s: int, e: int) -> np.ndarray:
        b0, b1 = self.store.block_range(s, e)
        return self.store.blocks(b0, b1)[np.repeat(self.clips[s:e], self.bpc)]

    def read_all(self) -> np.ndarray:
        """Every block of the selected clips at once, in store order (for trainers that hold the corpus)."""
        return np.concatenate([self._read(*c) for c in self.chunks])

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.passes))
        self.passes += 1
        order = rng.permutation(len(self.chunks)) if self.shuffle else np.arange(len(self.chunks))
        step = self.shuffle_chunks if self.shuffle else 1
        for i in range(0, len(order), step):
            buf = np.concatenate([self._read(*self.chunks[j]) for j in order[i : i + step]])
            self.max_buffered = max(self.max_buffered, len(buf))
            for k in rng.permutation(len(buf)) if self.shuffle else range(len(buf)):
                yield buf[k]

    def dataset(self, batch_size: int):
        import tensorflow as tf

        shape = self.store.geometry.block_shape
        ds = tf.data.Dataset.from_generator(lambda: iter(self), output_signature=tf.TensorSpec(shape, tf.float32))
        ds = ds.map(lambda x: (x, x)).batch(batch_size)
        n_batches = -(-self.n_blocks // batch_size)
        return ds.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


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
    import keras

    model = keras.models.load_model(ckpt / "last.keras", safe_mode=True)
    best = None
    if (ckpt / "best.npz").is_file():
        with np.load(ckpt / "best.npz", allow_pickle=False) as z:
            best = [z[f"arr_{i}"] for i in range(len(z.files))]
    return state, model, best


# -- training ------------------------------------------------------------------------------


def train_autoencoder(
    store_url: str,
    run_dir: str,
    model: ModelSpec,
    train: TrainSpec,
    log: Callable[[str], None] = print,
    callbacks: Sequence = (),
) -> dict:
    """Fit the autoencoder; write ``autoencoder.keras``, ``encoder.keras``, ``history.json``, ``train.json``.

    ``callbacks`` are extra Keras callbacks (run after the checkpoint is written).
    """
    device = configure_tensorflow(train.threads, train.seed)
    import keras

    if train.mixed_precision and device.startswith("GPU"):
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
        autoencoder, _ = build_autoencoder(model)
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
        callbacks=[es, _checkpoint_callback(ckpt, fingerprint, es, history), epoch_log, *callbacks],
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
        "model": asdict(model),
        "train": asdict(train),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: a new run starts fresh
    return summary


def model_files_exist(run_dir: str) -> bool:
    return all((Path(run_dir) / f).is_file() for f in ("encoder.keras", "train.json", "history.json"))


def train_model(store_url: str, run_dir: str, model: ModelSpec, train: TrainSpec, log: Callable[[str], None] = print) -> dict:
    """Train ``model.objective``: the report's autoencoder, or the contrastive encoder (tasks.contrastive)."""
    if model.objective == "contrastive":
        from tasks.contrastive import train_contrastive

        return train_contrastive(store_url, run_dir, model.filters, train, log=log, input_norm=model.input_norm)
    return train_autoencoder(store_url, run_dir, model, train, log=log)


@task(name="train-model", task_run_name="train-model", cache_key_fn=train_key, persist_result=True, retries=1, retry_delay_seconds=5)
def train_task(store_url: str, run_dir: str, model: ModelSpec, train: TrainSpec) -> dict:
    """Train in the flow process; a retry (or the next run after a killed one) resumes from the last epoch's checkpoint.

    Cached on the stored blocks' content, the model and training settings and the code.
    """
    return train_model(store_url, run_dir, model, train, log=get_run_logger().info)
