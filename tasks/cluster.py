"""Clip features from block codes, and K-Means."""

from __future__ import annotations

import numpy as np


def clip_features(codes: np.ndarray, blocks_per_clip: int) -> np.ndarray:
    """A clip's feature is its blocks' codes concatenated in block order (as in the report)."""
    n_blocks, size = codes.shape
    if n_blocks % blocks_per_clip:
        raise ValueError(f"{n_blocks} codes are not a whole number of clips of {blocks_per_clip} blocks")
    return codes.reshape(n_blocks // blocks_per_clip, blocks_per_clip * size)


def kmeans(features: np.ndarray, k: int, n_init: int = 10, seed: int = 0) -> np.ndarray:
    """K-Means (k-means++ init, ``n_init`` restarts, best inertia kept): cluster per row."""
    from sklearn.cluster import KMeans

    if len(features) < k:
        raise ValueError(f"cannot make {k} clusters from {len(features)} clips")
    return KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed).fit_predict(features)
