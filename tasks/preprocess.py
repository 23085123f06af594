"""Chunks of clips: files -> images and blocks -> one whole-chunk write to the store per chunk.

A task takes one or several consecutive chunks (see ``flows.pipeline.task_ranges``). Only
a chunk's PENDING clips are decoded; its other clips are rewritten unchanged, so the task
always writes whole chunks.
"""

from __future__ import annotations

import os

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from storage import Store
from storage.store import HASH, OK, PENDING, REJECTED, file_hash
from tasks.audio import AudioSpec, Rejected, image, load_clip, to_blocks, warm_up


def source_path(root: str, rel: str) -> str:
    """``root/rel``, refusing a manifest path that would leave the input root."""
    if "://" in root:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise Rejected(f"path outside the input root: {rel}")
        return f"{root.rstrip('/')}/{rel}"
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, rel))
    if os.path.commonpath([base, full]) != base:
        raise Rejected(f"path outside the input root: {rel}")
    return full


def content_hash(path: str, algorithm: str = HASH) -> str:
    if "://" in path:
        import fsspec

        with fsspec.open(path, "rb") as fh:
            return file_hash(fh, algorithm)
    with open(path, "rb") as fh:
        return file_hash(fh, algorithm)


def preprocess_batch(store_url: str, root: str, start: int, stop: int, spec: AudioSpec) -> dict:
    """Decode the PENDING clips of the whole chunks in ``[start, stop)`` and write each chunk whole.

    A file whose content is bad is recorded with its reason; the batch itself fails (and is
    retried) on I/O errors, reading a file or the store, naming the file. Chunks finished
    before a failure keep their results, so the retry redoes only the rest.
    """
    store = Store.open(store_url, mode="r+")
    done = {"start": start, "stop": stop, "stored": 0, "rejected": 0}
    for s, e in store.clip_batches():
        if start <= s and e <= stop:
            stored, rejected = _preprocess_chunk(store, root, s, e, spec)
            done["stored"] += stored
            done["rejected"] += rejected
    return done


def _preprocess_chunk(store: Store, root: str, start: int, stop: int, spec: AudioSpec) -> tuple[int, int]:
    """One chunk: its PENDING clips decoded, then the chunk written whole. Returns (stored, rejected)."""
    status = store.read("status", start, stop)
    todo = np.flatnonzero(status == PENDING)
    if not len(todo):
        return 0, 0
    bpc = store.geometry.blocks_per_clip
    b0, b1 = store.block_range(start, stop)
    paths = store.read("path", start, stop)
    if len(todo) == len(status):  # a new chunk: nothing to keep
        blocks = np.full((b1 - b0, *store.geometry.block_shape), np.nan, np.float16)  # the stored dtype: no second copy
    else:  # rewrite the chunk whole, keeping its other clips
        blocks = store.read("blocks", b0, b1)
    reasons = list(store.read("reason", start, stop))
    hashes = list(store.read("hash", start, stop))
    durations = store.read("duration", start, stop)
    for i in todo:
        try:
            path = source_path(root, str(paths[i]))
            try:
                hashes[i] = content_hash(path, store.hash_algorithm)
            except OSError as exc:  # I/O, not content: fail the batch so Prefect retries it
                raise OSError(f"cannot read {paths[i]} under {root}: {exc.strerror or exc}") from exc
            y, durations[i] = load_clip(path, spec)
            blocks[i * bpc : (i + 1) * bpc] = to_blocks(image(y, spec), store.geometry.block, store.geometry.width)
            status[i], reasons[i] = OK, ""
        except Rejected as exc:
            blocks[i * bpc : (i + 1) * bpc] = 0.0
            status[i], reasons[i] = REJECTED, str(exc)
    store.write_clips(start, status=status, reasons=reasons, hashes=hashes, durations=durations, blocks=blocks)
    done = status[todo]
    return int((done == OK).sum()), int((done == REJECTED).sum())


@task(
    name="preprocess-batch",
    task_run_name="preprocess-clips-{start}-{stop}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_jitter_factor=0.5,
    cache_policy=NO_CACHE,  # writes the store: never skipped; the manifest decides what is redone
)
def preprocess_batch_task(store_url: str, root: str, start: int, stop: int, spec: AudioSpec) -> dict:
    result = preprocess_batch(store_url, root, start, stop, spec)
    get_run_logger().info("clips %d-%d: %d stored, %d rejected", start, stop, result["stored"], result["rejected"])
    return result


class AudioWarmUp(WorkerPlugin):
    """Dask worker plugin: each worker (and each that joins later) warms the audio stack
    (:func:`tasks.audio.warm_up`) once when it starts, so its first chunk is not 2 s slower."""

    name = "audioclust-audio-warm-up"
    idempotent = True  # registered by every run: a worker that has it keeps it

    def __init__(self, spec: AudioSpec):
        self.spec = spec

    def setup(self, worker) -> None:
        try:
            warm_up(self.spec)
        except Exception as exc:  # only a head start: the chunks still run (and report) whatever failed here
            import logging

            logging.getLogger(__name__).warning("audio warm-up failed on %s: %s", worker.address, exc)
