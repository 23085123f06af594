"""A clustering head trained inside the network: SCAN (Van Gansbeke et al. 2020), ``--cluster head``.

On top of the trained encoder's clip features (the same standardized, whitened principal
components the K-Means paths use; their first ``2 k``), a few softmax heads learn to cluster:

1. **Neighbours.** Each clip's ``head_neighbours`` (at most half the mean cluster size) nearest clips by the consensus's
   co-association (the share of its K-Means runs that put two clips together; cosine breaks
   ties): on the default network's esc10 codes these share the clip's class more often than the
   nearest by cosine (0.72 against 0.60 at 10 neighbours).
2. **SCAN.** Each head (unit-length input -> Dense(``head_hidden``, ReLU) -> Dense(k), softmax)
   learns that a clip and one of its neighbours fall in one cluster (``-log <p_clip, p_neighbour>``)
   while the mean assignment stays spread over the k clusters (its entropy, weighted by
   ``head_entropy_weight``: without it every clip lands in one cluster). Both sides see their
   features with Gaussian noise (``head_noise``). The head with the lowest loss on the clean
   features is kept: a choice made from the corpus, without labels.
3. **Self-labeling.** Clips the kept head gives more than ``head_threshold`` become their own
   targets: a noisy view must land in the clean view's cluster (cross-entropy, each cluster
   weighted by the inverse of its confident clips, so large clusters do not swallow small ones).

The head's argmax is the cluster and its probability the clip's confidence. Its weights are
small; they live in ``clusterer.npz`` and :func:`probabilities` applies them in numpy, so
``assign`` puts new clips through the same head. Training goes through :func:`tasks.fit.fit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from tasks.caching import code_version, digest
from tasks.fit import Checkpoint, fit

BATCH = 128  # clips per step: the entropy term needs a batch that can hold every cluster


def head_dims(k: int, components: int) -> int:
    """Input width of the head: the first ``2 k`` components (all of them, if fewer)."""
    return int(min(components, 2 * k))


def neighbours(together: np.ndarray, z: np.ndarray, n: int) -> np.ndarray:
    """Per row, the ``n`` other rows most often clustered with it (``together``: co-association), cosine of ``z`` breaking ties."""
    u = z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)
    score = together + 1e-3 * (u @ u.T)
    np.fill_diagonal(score, -np.inf)
    n = int(min(n, len(z) - 1))
    return np.argsort(-score, axis=1, kind="stable")[:, :n]


def scan_loss(k: int, heads: int, entropy_weight: float):
    """SCAN on ``y_pred`` = the heads' probabilities for the clips, then for their neighbours, side by side:
    per clip, the sum over heads of ``-log <p, p_neighbour>``, minus ``entropy_weight`` times the entropy
    of the head's mean over the batch."""
    from keras import ops

    def loss(y_true, y_pred):
        clip, neighbour = ops.split(y_pred, 2, axis=1)
        total = 0.0
        for h in range(heads):
            p, q = clip[:, h * k : (h + 1) * k], neighbour[:, h * k : (h + 1) * k]
            mean = ops.mean(p, axis=0)
            total = total - ops.log(ops.sum(p * q, axis=1) + 1e-7) + entropy_weight * ops.sum(mean * ops.log(mean + 1e-7))
        return total

    return loss


def self_label_loss(k: int, threshold: float):
    """Self-labeling on ``y_pred`` = the head's probabilities for clean views, then for noisy views: the
    noisy view's cross-entropy against the clean view's cluster, counted only where the clean view's
    probability exceeds ``threshold``, each cluster weighted by batch size / (k x its confident clips)."""
    from keras import ops

    def loss(y_true, y_pred):
        clean, noisy = ops.split(y_pred, 2, axis=1)
        clean = ops.stop_gradient(clean)
        target = ops.argmax(clean, axis=1)
        confident = ops.cast(ops.max(clean, axis=1) > threshold, "float32")
        counts = ops.sum(ops.one_hot(target, k) * confident[:, None], axis=0)
        weight = ops.take(ops.sum(confident) / (k * ops.maximum(counts, 1.0)), target)
        picked = ops.take_along_axis(noisy, ops.expand_dims(target, 1), axis=1)[:, 0]
        return -ops.log(picked + 1e-7) * confident * weight

    return loss


def head_model(dims: int, k: int, heads: int, hidden: int):
    """``heads`` softmax heads on one input, their probabilities side by side (``heads x k`` columns)."""
    import keras
    from keras import layers

    inp = keras.Input((dims,), name="features")
    unit = layers.UnitNormalization(name="unit")(inp)
    outs = [layers.Dense(k, activation="softmax", name=f"head{h}")(layers.Dense(hidden, activation="relu", name=f"hidden{h}")(unit))
            for h in range(heads)]
    return keras.Model(inp, outs[0] if heads == 1 else layers.Concatenate(name="heads")(outs), name="heads")


def paired(model, dims: int):
    """The training model: ``model`` on two inputs (clip and partner), outputs side by side."""
    import keras
    from keras import layers

    a, b = keras.Input((dims,), name="clip"), keras.Input((dims,), name="partner")
    return keras.Model([a, b], layers.Concatenate(name="pair")([model(a), model(b)]))


def pair_batches(z: np.ndarray, partners: np.ndarray | None, noise: float, seed: int):
    """Batches for ``fit`` (:class:`tasks.fit.StepData`): clips in an order drawn from ``(seed, epoch)`` with
    Gaussian noise on both sides; the partner is a random neighbour (row of ``partners``) or, when
    ``partners`` is None, the clip itself, clean (self-labeling)."""
    from tasks.fit import step_data_class

    class PairBatches(step_data_class()):
        steps = max(25, -(-len(z) // BATCH))  # a small corpus still gets enough steps to learn

        def batch(self, epoch: int, step: int):
            rng = np.random.default_rng((seed, epoch, step))
            idx = rng.choice(len(z), min(BATCH, len(z)), replace=False)
            noisy = lambda rows: (z[rows] + rng.normal(0, noise, (len(rows), z.shape[1]))).astype(np.float32)  # noqa: E731
            if partners is None:
                return (z[idx], noisy(idx)), np.zeros(len(idx), np.float32)
            other = partners[idx, rng.integers(0, partners.shape[1], len(idx))]
            return (noisy(idx), noisy(other)), np.zeros(len(idx), np.float32)

    return PairBatches()


def scan_losses(p: np.ndarray, partners: np.ndarray, k: int, entropy_weight: float) -> list[float]:
    """Each head's SCAN loss on clean features (``p``: the heads' probabilities side by side), over every neighbour."""
    out = []
    for h in range(p.shape[1] // k):
        ph = p[:, h * k : (h + 1) * k]
        agree = np.einsum("nk,nmk->nm", ph, ph[partners])
        mean = ph.mean(0)
        out.append(float(-np.log(agree + 1e-7).mean() + entropy_weight * (mean * np.log(mean + 1e-7)).sum()))
    return out


def probabilities(z: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """One head's cluster probabilities in numpy: ``weights`` = [W1, b1, W2, b2] of :func:`head_model` with one head."""
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in weights)
    x = np.asarray(z, np.float64)[:, : w1.shape[0]]
    x = x / np.sqrt(np.maximum((x * x).sum(1, keepdims=True), 1e-12))  # as keras' UnitNormalization
    logits = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def train_head(z: np.ndarray, together: np.ndarray, spec, folder: str | Path, log: Callable[[str], None] = print) -> tuple[list[np.ndarray], dict]:
    """SCAN then self-labeling on ``z`` (clip features, rows of the consensus sample) with co-association
    ``together``; returns the kept head's weights ([W1, b1, W2, b2], for :func:`probabilities`) and a summary.

    ``spec``: :class:`tasks.cluster.ClusteringSettings` (k a number). Checkpointed in ``folder``
    (:class:`tasks.fit.Checkpoint`); removed when done."""
    from tasks.keras_setup import configure_keras

    configure_keras(0, spec.seed)
    import keras

    k, heads = int(spec.k), int(spec.head_count)
    dims = head_dims(k, z.shape[1])
    z = np.ascontiguousarray(z[:, :dims], np.float32)
    # at most half the mean cluster's size: on a small corpus more would reach into other clusters
    partners = neighbours(together, z, max(1, min(spec.head_neighbours, len(z) // (2 * k))))
    model = head_model(dims, k, heads, spec.head_hidden)
    pair = paired(model, dims)
    pair.compile(optimizer=keras.optimizers.Adam(1e-3), loss=scan_loss(k, heads, spec.head_entropy_weight))
    folder = Path(folder)
    mark = digest(code_version(), z, partners, spec)[:16]  # resumed only for the same features and settings
    fit(pair, pair_batches(z, partners, spec.head_noise, spec.seed), spec.head_epochs, Checkpoint(folder / "scan", mark), log)
    losses = scan_losses(model.predict(z, batch_size=1024, verbose=0), partners, k, spec.head_entropy_weight)
    kept = int(np.argmin(losses))
    one = head_model(dims, k, 1, spec.head_hidden)
    one.set_weights([w for layer in (f"hidden{kept}", f"head{kept}") for w in model.get_layer(layer).get_weights()])
    before = float((probabilities(z, one.get_weights()).max(1) > spec.head_threshold).mean())
    if spec.head_self_label_epochs:
        tuning = paired(one, dims)
        tuning.compile(optimizer=keras.optimizers.Adam(1e-4), loss=self_label_loss(k, spec.head_threshold))
        fit(tuning, pair_batches(z, None, spec.head_noise, spec.seed + 1), spec.head_self_label_epochs,
            Checkpoint(folder / "self_label", mark), log)
    weights = one.get_weights()
    p = probabilities(z, weights)
    summary = {"heads": heads, "kept": kept, "scan_losses": [round(v, 4) for v in losses], "dims": dims,
               "neighbour_agreement": float((p.argmax(1)[:, None] == p.argmax(1)[partners]).mean()),
               "confident_before_self_label": round(before, 4),
               "confident": round(float((p.max(1) > spec.head_threshold).mean()), 4)}
    log(f"clustering head: kept head {kept} of {heads} (SCAN loss {losses[kept]:.3f}); {summary['confident']:.0%} of clips "
        f"above {spec.head_threshold}{' after self-labeling' if spec.head_self_label_epochs else ' (no self-labeling)'}")
    for sub in ("scan", "self_label"):
        Checkpoint(folder / sub, mark).clear()
    return weights, summary
