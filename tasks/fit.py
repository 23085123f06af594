"""The one training shape: a Keras model, data from a ``keras.utils.PyDataset``, ``Model.fit()``,
and one checkpoint with which a killed run resumes where it stopped.

Every network the tool trains (the autoencoder, the contrastive encoder, IDEC/DEC) goes through
:func:`fit`, on whichever Keras backend is configured (TensorFlow, JAX or PyTorch).

Data: a :class:`StepData` yields the batch of *global step* ``i`` (epoch ``i // steps``), a pure
function of the seed, the epoch and the step, never of what was read before. A resumed run
therefore reads exactly what an uninterrupted one would (augmentation included), whatever a
backend prefetches, and no random generator state has to be saved.

Checkpoint (``folder``), after every epoch: the weights, the optimizer's variables, the early
stopping counters and best weights, and the loss history; ``state.json``, replaced atomically,
names the epoch whose files are complete. It is resumed only when its fingerprint (data,
settings, code) matches; a truncated or foreign one is passed over with a log line.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tasks import progress


@lru_cache(maxsize=1)
def step_data_class():
    """:class:`StepData`, defined once Keras is imported."""
    import keras

    class StepData(keras.utils.PyDataset):
        """Batches by global step; subclasses define ``steps`` (per epoch) and ``batch(epoch, step)``.

        ``first_epoch``: the epoch of global step 0 (a resumed ``fit`` counts its steps from 0 again)."""

        steps: int = 1
        first_epoch: int = 0

        @property
        def num_batches(self):
            return None  # endless: fit() takes steps_per_epoch and keeps one iterator over the epochs

        def __getitem__(self, i):
            epoch, step = divmod(int(i), self.steps)
            return self.batch(self.first_epoch + epoch, step)

        def batch(self, epoch: int, step: int):
            raise NotImplementedError

    return StepData


def fit_input(data):
    """What ``Model.fit`` is given for the :class:`StepData` ``data``: itself, or on TensorFlow a tf.data
    pipeline over it without tf.data's autotuner. Why: Keras's own pipeline for a PyDataset autotunes, and
    when ``fit`` ends, deleting it joins the tuner's thread, which sleeps up to 60 s between its rounds
    (TensorFlow 2.21): a long training then stood still for up to a minute after every ``fit``."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return data
    import tensorflow as tf

    def spec(a):
        a = np.asarray(a)
        return tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))  # the last batch may be smaller

    steps = range(data.num_batches) if data.num_batches is not None else itertools.count()
    ds = tf.data.Dataset.from_generator(lambda: (data[i] for i in steps), output_signature=tf.nest.map_structure(spec, data[0]))
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)  # two batches made ahead, while the network trains on one


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
                self.wait, self.best, self.best_epoch = self._resume["wait"], self._resume["best"], self._resume["best_epoch"]
                self.best_weights = self._resume_weights

        def state(self) -> dict:
            return {"wait": self.wait, "best": None if self.best is None else float(self.best), "best_epoch": self.best_epoch}

    return ResumableEarlyStopping


class Checkpoint:
    """The training state after an epoch, in ``folder`` (see the module's docstring)."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint

    def save(self, epoch: int, model, history: dict, stopped: bool = False, early_stopping=None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tag = f"{epoch:05d}"
        np.savez(self.folder / f"weights-{tag}.npz", *model.get_weights())
        np.savez(self.folder / f"optimizer-{tag}.npz", *[np.asarray(v) for v in model.optimizer.variables])
        if early_stopping is not None and early_stopping.best_weights is not None:
            np.savez(self.folder / f"best-{tag}.npz", *early_stopping.best_weights)
        state = {"fingerprint": self.fingerprint, "epoch": epoch, "stopped": stopped, "history": history,
                 "early_stopping": early_stopping.state() if early_stopping is not None else None}
        (self.folder / "state.tmp.json").write_text(json.dumps(state))
        os.replace(self.folder / "state.tmp.json", self.folder / "state.json")
        for old in self.folder.glob("*.npz"):
            if not old.stem.endswith(tag):
                old.unlink(missing_ok=True)

    def restore(self, model, log: Callable[[str], None]) -> dict | None:
        """The saved state (``epoch``, ``stopped``, ``history``, ``early_stopping``, ``best_weights``) after
        loading a matching checkpoint into ``model`` (compiled); None, with nothing changed, when there is
        none or it does not fit (training then starts afresh)."""
        try:
            state = json.loads((self.folder / "state.json").read_text())
        except (OSError, ValueError):
            return None
        if state.get("fingerprint") != self.fingerprint:
            return None
        tag = f"{state.get('epoch', -1):05d}"
        model.optimizer.build(model.trainable_variables)  # creates the slots only, as the first step would
        try:
            weights, slots = (_load_arrays(self.folder / f"{kind}-{tag}.npz") for kind in ("weights", "optimizer"))
            if not (_same_shapes(weights, model.get_weights()) and _same_shapes(slots, [np.asarray(v) for v in model.optimizer.variables])):
                raise ValueError("arrays of other shapes")
            best = _load_arrays(self.folder / f"best-{tag}.npz") if (self.folder / f"best-{tag}.npz").is_file() else None
        except (OSError, ValueError, KeyError) as exc:  # unreadable or not this network's: start afresh
            log(f"checkpoint in {self.folder} not used ({type(exc).__name__}: {exc}); training from the start")
            return None
        model.set_weights(weights)
        for v, a in zip(model.optimizer.variables, slots):
            v.assign(a)
        return {**state, "best_weights": best}

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _load_arrays(path: Path) -> list[np.ndarray]:
    """The arrays of an ``np.savez`` file; a truncated or corrupt one raises ValueError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path.name}: {exc}") from exc


def _same_shapes(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))


def fit(model, data, epochs: int, checkpoint: Checkpoint, log: Callable[[str], None] = print, *,
        early_stopping: dict | None = None, validation=None, callbacks: Sequence = (), first_epoch: int | None = None,
        history: dict | None = None) -> dict:
    """``model.fit(data)`` (compiled model, :class:`StepData`) for up to ``epochs`` epochs, resuming
    from ``checkpoint`` when it matches; a checkpoint after every epoch.

    ``early_stopping``: EarlyStopping's arguments (monitor, min_delta, patience), or None.
    ``first_epoch``, ``history``: continue a run that another ``fit`` call left at this epoch (DEC
    refreshes its target between one-epoch calls); the checkpoint then only saves. ``callbacks`` run after the
    checkpoint is written. Returns ``{"history", "resumed_from_epoch", "stopped_early", "best_epoch"}``.
    """
    import keras

    state = checkpoint.restore(model, log) if first_epoch is None else None
    history = state["history"] if state else ({} if history is None else history)
    start = first_epoch or 0
    if state:
        start = epochs if state["stopped"] else state["epoch"] + 1
        log(f"resuming from the checkpoint after epoch {state['epoch'] + 1}")
    es = None
    if early_stopping:
        es = _early_stopping_class()(resume=state and state["early_stopping"], best_weights=state and state["best_weights"],
                                     restore_best_weights=True, **early_stopping)

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for k, v in (logs or {}).items():
                history.setdefault(k, []).append(float(v))
            checkpoint.save(epoch, self.model, history, bool(self.model.stop_training), es)

    data.first_epoch = start
    if start < epochs:
        model.fit(fit_input(data), steps_per_epoch=data.steps, epochs=epochs, initial_epoch=start,
                  validation_data=None if validation is None else fit_input(validation),
                  callbacks=[c for c in (es, EpochCheckpoint(), progress.keras_callback("train"), *callbacks) if c is not None],
                  shuffle=False,  # the data orders itself, by seed and epoch
                  verbose=0)
    elif es is not None:  # it had stopped before the kill: end as fit() would have ended
        es.on_train_begin()
        if es.best_weights is not None:
            model.set_weights(es.best_weights)
    stopped = bool(state and state["stopped"] and start >= epochs) or bool(es is not None and es.stopped_epoch > 0)
    return {"history": history, "resumed_from_epoch": start if state else None, "stopped_early": stopped,
            "best_epoch": None if es is None else es.best_epoch + 1}
