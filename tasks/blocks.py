"""The stored blocks of a set of clips, streamed chunk by chunk in a shuffled order (for training)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from storage import Store


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

    Epoch ``e`` visits the chunks in an order drawn from ``(seed, e)`` and shuffles blocks within
    a buffer of ``shuffle_chunks`` chunks; at most that many chunks (two buffers, where a batch
    straddles them) are in memory. Any batch of any epoch can be asked for (:meth:`batch`): its
    blocks depend only on the seed, the epoch and its position.
    """

    def __init__(self, store: Store, clips: np.ndarray, shuffle: bool = True, shuffle_chunks: int = 4, seed: int = 0):
        self.store, self.clips, self.shuffle = store, clips, shuffle
        self.shuffle_chunks, self.seed = max(1, shuffle_chunks), seed
        self.bpc = store.geometry.blocks_per_clip
        self.chunks = [(s, e) for s, e in store.clip_chunks() if clips[s:e].any()]
        self.sizes = np.array([int(clips[s:e].sum()) * self.bpc for s, e in self.chunks])
        self.n_blocks = int(clips.sum()) * self.bpc
        self.passes = 0
        self.max_buffered = 0  # blocks held at once, for tests and benchmarks
        self._plans: dict[int, list] = {}
        self._buffers: dict[tuple[int, int], np.ndarray] = {}

    def _read(self, s: int, e: int) -> np.ndarray:
        b0, b1 = self.store.block_range(s, e)
        return self.store.blocks(b0, b1)[np.repeat(self.clips[s:e], self.bpc)]

    def read_all(self) -> np.ndarray:
        """Every block of the selected clips at once, in store order (for trainers that hold the corpus)."""
        return np.concatenate([self._read(*c) for c in self.chunks])

    def plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Epoch ``epoch``'s buffers: ``(chunk indices, order of their blocks)`` each, in reading order."""
        if epoch not in self._plans:
            rng = np.random.default_rng((self.seed, epoch))
            order = rng.permutation(len(self.chunks)) if self.shuffle else np.arange(len(self.chunks))
            step = self.shuffle_chunks if self.shuffle else 1
            plan = []
            for i in range(0, len(order), step):
                n = int(self.sizes[order[i : i + step]].sum())
                plan.append((order[i : i + step], rng.permutation(n) if self.shuffle else np.arange(n)))
            self._plans = {epoch: plan}  # one epoch at a time
        return self._plans[epoch]

    def _buffer(self, epoch: int, b: int, keep: tuple = ()) -> np.ndarray:
        """Buffer ``b`` of epoch ``epoch``; the others are let go, but those in ``keep``."""
        if (epoch, b) not in self._buffers:
            self._buffers = {k: v for k, v in self._buffers.items() if k in keep}
            chunks, order = self.plan(epoch)[b]
            self._buffers[(epoch, b)] = np.concatenate([self._read(*self.chunks[j]) for j in chunks])[order]
            self.max_buffered = max(self.max_buffered, sum(len(v) for v in self._buffers.values()))
        return self._buffers[(epoch, b)]

    def batch(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Blocks ``[start, stop)`` of epoch ``epoch``'s reading order."""
        ends = np.cumsum([len(order) for _, order in self.plan(epoch)])
        parts, pos = [], start
        while pos < min(stop, self.n_blocks):
            b = int(np.searchsorted(ends, pos, side="right"))
            first = ends[b - 1] if b else 0
            take = min(stop, ends[b]) - pos
            parts.append(self._buffer(epoch, b, keep=((epoch, b - 1),) if parts else ())[pos - first : pos - first + take])
            pos += take
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The blocks of the next pass, one by one."""
        epoch, self.passes = self.passes, self.passes + 1
        for b in range(len(self.plan(epoch))):
            yield from self._buffer(epoch, b)


def autoencoder_batches(stream: BlockStream, batch_size: int, finite: bool = False):
    """``(blocks, blocks)`` minibatches of ``stream`` for ``fit``: :class:`tasks.fit.StepData`;
    ``finite``: one pass, for validation data."""
    from tasks.fit import step_data_class

    class AutoencoderBatches(step_data_class()):
        steps = -(-stream.n_blocks // batch_size)

        @property
        def num_batches(self):
            return self.steps if finite else None

        def batch(self, epoch: int, step: int):
            x = stream.batch(epoch, step * batch_size, (step + 1) * batch_size).astype(np.float32)
            return x, x

    return AutoencoderBatches()
