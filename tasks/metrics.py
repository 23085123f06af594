"""Clustering scores against labels, on all clips and on a fixed 50 % split."""

from __future__ import annotations

import numpy as np


def clustering_accuracy(labels_true, labels_pred) -> float:
    """Best one-to-one mapping of clusters to labels (Hungarian), as a fraction of clips."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    c = contingency_matrix(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / c.sum())


def degenerate(features: np.ndarray, clusters: np.ndarray | None = None) -> str | None:
    """Why a clustering of ``features`` cannot be taken as a result, or None.

    A network whose code collapsed (every clip encoded alike, e.g. an all-zero code) or a
    clustering with one cluster holding every clip scores NMI 0 by construction: that is a
    failure to report with its cause, not a score."""
    if not np.all(np.isfinite(features)):
        return "the clip features hold NaN or infinite values (the network diverged: lower training.learning_rate)"
    if len(features) > 1 and float(np.ptp(features, axis=0).max()) <= 1e-6 * max(1.0, float(np.abs(features).max())):
        what = "all zeros" if not np.any(features) else "the same for every clip"
        return f"collapsed code: the clip features are {what}, so the network tells no clip apart (see loss.png; try more epochs, another seed or the default preset)"
    if clusters is not None and len(np.unique(clusters)) == 1:
        return "one cluster holds every clip: the clip features carry no structure the clustering could split"
    return None


def scores(labels_true, labels_pred) -> dict[str, float]:
    """NMI (arithmetic mean, scikit-learn's default), AMI, ARI and Hungarian accuracy."""
    from sklearn import metrics

    return {
        "nmi": float(metrics.normalized_mutual_info_score(labels_true, labels_pred)),
        "ami": float(metrics.adjusted_mutual_info_score(labels_true, labels_pred)),
        "ari": float(metrics.adjusted_rand_score(labels_true, labels_pred)),
        "acc": clustering_accuracy(labels_true, labels_pred),
        "n": int(len(labels_true)),
    }


def public_mask(paths, seed: int = 0) -> np.ndarray:
    """The fixed 50 % "public" half (a leaderboard's split), by a seeded permutation.

    Depends only on the sorted set of paths and the seed, so the same corpus always
    splits the same way, whatever order or rejects.
    """
    paths = np.asarray(paths, dtype=str)
    order = np.argsort(paths, kind="stable")
    perm = np.random.default_rng(seed).permutation(len(paths))
    mask = np.zeros(len(paths), bool)
    mask[order[perm[: len(paths) // 2]]] = True
    return mask


def evaluate(paths, labels_true, labels_pred, split_seed: int = 0) -> dict[str, dict]:
    """Scores on all labelled clips and on each half of the fixed split."""
    labels_true = np.asarray(labels_true, dtype=str)
    labels_pred = np.asarray(labels_pred)
    public = public_mask(paths, split_seed)
    out = {}
    for name, mask in (("all", np.ones(len(public), bool)), ("public", public), ("private", ~public)):
        if mask.sum() >= 2:
            out[name] = scores(labels_true[mask], labels_pred[mask])
    return out


def score_predictions(rows, label_of, split_seed: int = 0) -> dict:
    """Scores of a finished run's ``(file, cluster)`` rows (its ``predictions.csv``, see
    :func:`tasks.report.read_predictions`) against the labels ``label_of(file)`` gives ("" for an
    unlabelled file), with the run's own split and scores: on the run's label column this gives
    back the run's ``metrics.json`` scores.

    Returns the clips clustered, the labelled ones among them, and :func:`evaluate`'s scores.
    """
    labelled = [(f, label, c) for f, c in rows if (label := label_of(f))]
    scores = evaluate(*zip(*labelled), split_seed) if labelled else {}
    return {"clips": len(rows), "labelled": len(labelled), "scores": scores}
