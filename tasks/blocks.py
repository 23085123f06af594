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

    Each pass visits the chunks in a new seeded order and shuffles blocks within a
    buffer of ``shuffle_chunks`` chunks; at most that many chunks are in memory.
    """

    def __init__(self, store: Store, clips: np.ndarray, shuffle: bool = True, shuffle_chunks: int = 4, seed: int = 0):
        self.store, self.clips, self.shuffle = store, clips, shuffle
        self.shuffle_chunks, self.seed = max(1, shuffle_chunks), seed
        self.bpc = store.geometry.blocks_per_clip
        self.chunks = [(s, e) for s, e in store.clip_chunks() if clips[s:e].any()]
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
