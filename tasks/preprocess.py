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

from storage import HASH, OK, PENDING, REJECTED, Store, file_hash, hasher
from tasks.audio import AudioSettings, Rejected, check_regular, clip_blocks, warm_up
from tasks.caching import BATCH_RETRIES


def source_path(root: str, rel: str) -> str:
    """``root/rel``, refusing a manifest path that is absolute or climbs out of the root with ``..``.

    The check is on the path as listed, not on where it resolves: a corpus of symbolic links
    (a subset linked from a dataset folder, DVC or git-annex checkouts) is read where the
    links point.
    """
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        raise Rejected(f"path outside the input root: {rel}")
    if "://" in root:
        return f"{root.rstrip('/')}/{rel}"
    return check_regular(os.path.join(root, rel))


READ_ONCE_BYTES = 32 << 20  # a file up to this size is read once: hashed, then decoded from memory


def read_and_hash(path: str, algorithm: str = HASH) -> tuple[str, bytes | None]:
    """The content hash of ``path`` (a local path or an fsspec URL) and, when the file holds at
    most :data:`READ_ONCE_BYTES`, its bytes, for :func:`tasks.audio.load_clip` to decode.

    A clip is then read once, not twice (from object storage: fetched once). A longer file
    is hashed in blocks and decoded from its path, up to the read window only.
    """
    if "://" in path:
        import fsspec

        opener = fsspec.open
    else:
        opener = open
    with opener(path, "rb") as fh:
        if _size(fh) > READ_ONCE_BYTES:
            return file_hash(fh, algorithm), None
        data = fh.read()
    h = hasher(algorithm)
    h.update(data)
    return h.hexdigest(), data


def _size(fh) -> float:
    """Bytes in an open file (fsspec files know theirs); infinity when it cannot tell."""
    size = getattr(fh, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(fh.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return float("inf")


def preprocess_range(store_url: str, root: str, start: int, stop: int, spec: AudioSettings) -> dict:
    """Decode the PENDING clips of the whole chunks in ``[start, stop)`` and write each chunk whole.

    A file whose content is bad is recorded with its reason; the batch itself fails (and is
    retried) on I/O errors, reading a file or the store, naming the file. Chunks finished
    before a failure keep their results, so the retry redoes only the rest.

    A PENDING file whose content hash is the one already stored (touched, or copied again
    with new modification times) is not decoded: it keeps its stored blocks and outcome,
    and counts as ``unchanged``.
    """
    store = Store.open(store_url, mode="r+")
    done = {"start": start, "stop": stop, "stored": 0, "rejected": 0, "unchanged": 0}
    for s, e in store.clip_chunks():
        if start <= s and e <= stop:
            for key, n in _preprocess_chunk(store, root, s, e, spec).items():
                done[key] += n
    return done


def _preprocess_chunk(store: Store, root: str, start: int, stop: int, spec: AudioSettings) -> dict[str, int]:
    """One chunk: its PENDING clips decoded, then the chunk written whole. Returns counts of
    the PENDING clips: stored, rejected, unchanged (same content hash: not decoded again).

    Reusing a clip by its hash is safe because :meth:`Store.write_clips` writes the blocks
    before the hashes: a stored hash always describes the blocks beside it."""
    status = store.read("status", start, stop)
    todo = np.flatnonzero(status == PENDING)
    if not len(todo):
        return {"stored": 0, "rejected": 0, "unchanged": 0}
    bpc = store.geometry.blocks_per_clip
    b0, b1 = store.block_range(start, stop)
    paths = store.read("path", start, stop)
    reasons = list(store.read("reason", start, stop))
    hashes = list(store.read("hash", start, stop))
    if len(todo) == len(status) and not any(hashes):  # a new chunk: nothing to keep; every clip is set below
        blocks = np.empty((b1 - b0, *store.geometry.block_shape), np.float16)  # the stored dtype: no second copy
    else:  # rewrite the chunk whole, keeping its other clips (and any whose content turns out unchanged)
        blocks = store.read("blocks", b0, b1)
    durations, ignored = store.read("duration", start, stop), store.read("ignored", start, stop)
    offsets = store.read("start", start, stop)
    unchanged = np.zeros(len(status), bool)
    for i in todo:
        try:
            try:
                path = source_path(root, str(paths[i]))
            except Rejected:  # not read: no content hash to keep (a link restored later is decoded afresh)
                hashes[i] = ""
                raise
            if spec.segment is None:  # a clip: read once, hashed (windows of a long file: only the window is read)
                try:
                    digest, data = read_and_hash(path, store.hash_algorithm)
                except OSError as exc:  # I/O, not content: fail the batch so Prefect retries it
                    raise OSError(f"cannot read {paths[i]} under {root}: {exc.strerror or exc}") from exc
                if digest == hashes[i]:  # processed before, same bytes: keep its blocks and outcome
                    status[i], unchanged[i] = (REJECTED if reasons[i] else OK), True
                    continue
                hashes[i] = digest
            else:
                data = None
            blocks[i * bpc : (i + 1) * bpc], durations[i], total = clip_blocks(path, spec, data, float(offsets[i]))
            extra = total - spec.duration if spec.segment is None and np.isfinite(total) else 0.0
            # less than one image column of audio past the clip (a file a few ms over 5 s) could not add a column: not left out
            ignored[i] = extra if extra >= spec.hop_length / spec.sample_rate else 0.0
            status[i], reasons[i] = OK, ""
        except Rejected as exc:
            blocks[i * bpc : (i + 1) * bpc] = 0.0
            status[i], reasons[i] = REJECTED, str(exc)
    store.write_clips(start, status=status, reasons=reasons, hashes=hashes, durations=durations, blocks=blocks, ignored=ignored)
    fresh = status[todo][~unchanged[todo]]
    return {"stored": int((fresh == OK).sum()), "rejected": int((fresh == REJECTED).sum()), "unchanged": int(unchanged.sum())}


@task(
    name="preprocess-range",
    task_run_name="preprocess-clips-{start}-{stop}",
    **BATCH_RETRIES,
    cache_policy=NO_CACHE,  # writes the store: never skipped; the manifest decides what is redone
)
def preprocess_range_task(store_url: str, root: str, start: int, stop: int, spec: AudioSettings) -> dict:
    result = preprocess_range(store_url, root, start, stop, spec)
    get_run_logger().info("clips %d-%d: %d stored, %d rejected, %d unchanged (same content hash)",
                          start, stop, result["stored"], result["rejected"], result["unchanged"])
    return result


class AudioWarmUp(WorkerPlugin):
    """Dask worker plugin: each worker (and each that joins later) warms the audio stack
    (:func:`tasks.audio.warm_up`) once when it starts, so its first chunk is not 2 s slower."""

    name = "audioclust-audio-warm-up"
    idempotent = True  # registered by every run: a worker that has it keeps it

    def __init__(self, spec: AudioSettings):
        self.spec = spec

    def setup(self, worker) -> None:
        try:
            warm_up(self.spec)
        except Exception as exc:  # only a head start: the chunks still run (and report) whatever failed here
            import logging

            logging.getLogger(__name__).warning("audio warm-up failed on %s: %s", worker.address, exc)
