"""Choosing k from the data (``clustering.k = "auto"``): two views of one set of consensus runs.

For every k in ``[k_min, k_max]``, ``runs`` K-Means partitions of a seeded sample of the clips
(each on a random leading sub-space of the whitened components, rows scaled to unit length, as
:func:`tasks.cluster.consensus_labels` draws them) give a consensus matrix ``M_k``: the share of
partitions that put two clips together. Two criteria are read from them:

* **relative stability** (``rcsi``): the proportion of ambiguous clustering, PAC (Senbabaoglu et
  al. 2014: the share of pairs with ``0.1 < M_k < 0.9``; Monti et al. 2003), compared with the
  PAC of structureless data of the same shape (standard normal: what whitened components are
  when there is no structure), as ``log(PAC_null / PAC)`` (M3C's RCSI, John et al. 2020). PAC alone
  falls as k grows; against the null it peaks where the data's partition is far steadier than
  chance, but at the coarsest strong split (esc10: stationary noises against events, k = 2);
* **fit to the accumulated evidence** (``silhouette``): the consensus matrices of every k are
  averaged (evidence accumulation across k, Fred and Jain 2005), cut into k clusters by average
  linkage, and the cut's silhouette on ``1 - mean M`` measured. Pairs that stay together at
  every k are near; this favours the finest level whose clusters hold together.

The pick maximizes their mean, each scaled to [0, 1] over the range: neither the coarse split
nor a too-fine cut wins alone (measured in docs/performance.md#choosing-k).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from tasks.cluster import Clusterer, consensus_matrix, leading, partitions

CRITERION = "mean of relative PAC stability (vs. null) and evidence-accumulation silhouette, each scaled to [0, 1]"


def pac(m: np.ndarray, low: float = 0.1, high: float = 0.9) -> float:
    """Proportion of ambiguous clustering: the share of pairs whose consensus lies in ``(low, high)``."""
    v = m[np.triu_indices(len(m), 1)]
    return float(np.mean((v > low) & (v < high)))


def _scaled(v: np.ndarray) -> np.ndarray:
    span = np.ptp(v)
    return (v - v.min()) / span if span > 1e-12 else np.zeros_like(v)


def choose_k(z: np.ndarray, k_min: int, k_max: int, dims_for: Callable[[int], int] | None = None, runs: int = 20,
             sample: int = 1000, seed: int = 0, unit: bool = True, parts=None) -> dict:
    """Pick k in ``[k_min, k_max]`` for the rows of ``z`` (whitened components, strongest first).

    ``dims_for(k)``: how many leading columns (of each of the ``parts``) the clustering into k sees (all when None). Returns
    ``{"criterion", "k", "pac", "pac_null", "rcsi", "silhouette", "score", "chosen", "sample", "runs", "seconds"}``,
    the lists aligned with ``"k"``."""
    from scipy.cluster.hierarchy import cut_tree, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import silhouette_score

    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    z = np.asarray(z, np.float32)
    if len(z) > sample:
        z = z[np.sort(rng.permutation(len(z))[:sample])]
    k_max = min(k_max, len(z) - 1)
    if k_max < k_min:
        raise ValueError(f"cannot choose k in [{k_min}, {k_max}] from {len(z)} clips")
    ks = list(range(k_min, k_max + 1))
    pooled = np.zeros((len(z), len(z)), np.float32)
    pacs, nulls = [], []
    for k in ks:
        zk, pk = leading(z, parts, dims_for(k)) if dims_for else (z, parts)
        m = consensus_matrix(partitions(zk, k, runs, rng, unit, parts=pk), k)
        pooled += m
        pacs.append(pac(m))
        noise = rng.standard_normal(zk.shape).astype(np.float32)  # whitened components of structureless data
        nulls.append(pac(consensus_matrix(partitions(noise, k, runs, rng, unit, parts=pk), k)))
    distance = 1.0 - pooled / len(ks)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), "average")
    cuts = cut_tree(tree, n_clusters=ks)
    sil = [float(silhouette_score(distance, cuts[:, i], metric="precomputed")) for i in range(len(ks))]
    rcsi = np.log(np.maximum(nulls, 1e-4)) - np.log(np.maximum(pacs, 1e-4))
    score = (_scaled(rcsi) + _scaled(np.array(sil))) / 2
    return {
        "criterion": CRITERION,
        "k": ks,
        "pac": [round(p, 4) for p in pacs],
        "pac_null": [round(p, 4) for p in nulls],
        "rcsi": [round(float(r), 4) for r in rcsi],
        "silhouette": [round(s, 4) for s in sil],
        "score": [round(float(s), 4) for s in score],
        "chosen": ks[int(np.argmax(score))],  # the first maximum: ties go to the smaller k
        "sample": len(z),
        "runs": runs,
        "seconds": round(time.perf_counter() - t, 2),
    }


def resolve_k(x: np.ndarray, features, clustering, parts: int = 1) -> tuple:
    """``(clustering settings with k a number, the choice's record or None)`` for the clip features ``x``.

    A numeric k is kept as it is. ``"auto"``: the features are transformed as the clustering will
    see them at the range's largest k (the leading components of the same whitened PCA serve every
    smaller k) and :func:`choose_k` picks k. Features that cannot be clustered (:func:`tasks.metrics.degenerate`)
    get k_min, and the record says why."""
    from tasks.metrics import degenerate

    if clustering.k != "auto":
        return clustering, None
    k_min, k_max = clustering.k_range(len(x))
    if len(x) < k_min:
        raise ValueError(f"cannot make {k_min} clusters (k_min) from {len(x)} clips")
    if why := degenerate(x):
        record = {"criterion": f"none: {why}", "k": [], "chosen": k_min}
    else:
        clusterer = Clusterer(features, clustering.model_copy(update={"k": k_max}), parts)
        z = clusterer.fit_transform(x)
        dims_for = None
        if features.pca:
            dims_for = lambda k: min(z.shape[1], features.pca_components(clustering.model_copy(update={"k": k})))  # noqa: E731
        record = choose_k(z, k_min, k_max, dims_for, seed=clustering.seed, unit=clustering.method in ("consensus", "head"),
                          parts=clusterer.part_dims_)
    record.update(k_min=k_min, k_max=k_max)
    return clustering.model_copy(update={"k": record["chosen"]}), record
