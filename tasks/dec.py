"""Clustering inside the network: DEC / IDEC (Xie et al. 2016; Guo et al. 2017).

A :class:`ClusteringLayer` holds k centroids in the clip-feature space and gives each clip a
Student's-t soft assignment ``q``. Starting from K-Means on the trained network's features,
the encoder and the centroids are trained together to minimise ``KL(P || Q)``, where the
target ``P`` (:func:`target_distribution`) sharpens ``Q`` and down-weights large clusters.
With an autoencoder, the reconstruction loss is kept (IDEC: ``MSE + gamma * KL``) so the
codes cannot collapse onto the centroids; a contrastive encoder has no decoder and is tuned
by ``KL`` alone, with a small learning rate (DEC). ``P`` is refreshed once per pass, and
training stops when fewer than ``tol`` of the clips change cluster between passes.
The clip feature (block pooling, standardization, PCA) is the same fixed affine map the
K-Means path uses (:class:`tasks.cluster.Clusterer`), so the two are directly comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from storage import Store
from tasks.cluster import ClusteringSettings, Clusterer
from tasks.caching import checkpoint_fingerprint, file_digest
from tasks.fit import Checkpoint, fit
from tasks.keras_setup import clustering_layer_class, configure_keras, load_model


def target_distribution(q: np.ndarray) -> np.ndarray:
    """DEC's auxiliary target: ``q**2 / cluster frequency``, renormalised per row (sharper than ``q``)."""
    w = q**2 / q.sum(0, keepdims=True)
    return w / w.sum(1, keepdims=True)


def _affine(clusterer: Clusterer) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` with ``clusterer.transform(x) == x @ W + b``."""
    w = np.diag(1.0 / clusterer.scale_)
    b = -clusterer.mean_ / clusterer.scale_
    if clusterer.components_ is not None:
        proj = clusterer.components_.T / clusterer.pca_scale_[None, :]
        w, b = w @ proj, (b - clusterer.pca_mean_) @ proj
    return w.astype(np.float32), b.astype(np.float32)


def _dec_model(net, clusterer: Clusterer, k: int, bpc: int, block_shape: tuple, idec: bool):
    """The network with the clustering layer on top: a clip's blocks -> ``q`` (and, for IDEC, the blocks' reconstruction)."""
    import keras
    from keras import ops

    w, b = _affine(clusterer)
    pool = clusterer.features.block_pool

    class DecModel(keras.Model):
        def __init__(self):
            super().__init__(name="dec")
            self.net = net
            self.clustering = clustering_layer_class()(k, name="clustering")
            self.w = self.add_weight(shape=w.shape, initializer=keras.initializers.Constant(w), trainable=False, name="affine_w")
            self.b = self.add_weight(shape=b.shape, initializer=keras.initializers.Constant(b), trainable=False, name="affine_b")

        def call(self, x, training=False):
            n = ops.shape(x)[0]
            out = self.net(ops.reshape(x, (-1, *block_shape)), training=training)
            code, recon = (out[0], out[1]) if idec else (out, None)
            codes = ops.reshape(code, (n, bpc, -1))
            if pool == "concat":
                feat = ops.reshape(codes, (n, -1))
            elif pool == "mean":
                feat = ops.mean(codes, axis=1)
            else:
                feat = ops.concatenate([ops.mean(codes, axis=1), ops.max(codes, axis=1)], axis=1)
            q = self.clustering(ops.matmul(feat, self.w) + self.b)
            return (q, ops.reshape(recon, ops.shape(x))) if idec else q

    model = DecModel()
    model(np.zeros((1, bpc, *block_shape), np.float32))  # builds every weight
    model.clustering.centroids.assign(clusterer.centroids_.astype(np.float32))
    return model


def dec_batches(x: np.ndarray, batch_size: int, seed: int, idec: bool):
    """Minibatches of clips with the current target ``p`` (set before each pass) for ``fit``."""
    from tasks.fit import step_data_class

    class DecBatches(step_data_class()):
        steps = max(1, len(x) // batch_size)
        p = np.empty(0)

        def batch(self, epoch: int, step: int):
            idx = np.array_split(np.random.default_rng((seed, epoch)).permutation(len(x)), self.steps)[step]
            xb = x[idx].astype(np.float32)
            return xb, ((self.p[idx], xb) if idec else self.p[idx])

    return DecBatches()


def run_idec(
    store_url: str,
    model_dir: str,
    clusterer: Clusterer,
    spec: ClusteringSettings,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, dict]:
    """Refine ``clusterer`` (fitted by K-Means on the network's features) inside the network.

    Reads the model in ``model_dir`` (``autoencoder.keras`` -> IDEC, else ``encoder.keras`` -> DEC),
    trains it with the clustering layer on the stored clips (one ``fit`` epoch per pass, the target
    refreshed between passes; checkpointed, so a killed run resumes), writes ``dec_encoder.keras``
    there, and updates ``clusterer.centroids_``. Returns the stored clips' final soft assignments ``q``
    (store order; the cluster is their argmax) and a summary.
    """
    configure_keras(0, spec.seed)
    import keras

    model_dir = Path(model_dir)
    store = Store.open(store_url)
    bpc, block_shape = store.geometry.blocks_per_clip, store.geometry.block_shape
    ok = np.flatnonzero(store.ok())
    x = store.read("blocks").reshape(-1, bpc, *block_shape)[ok]  # float16, clip-major
    ae_path = model_dir / "autoencoder.keras"
    idec = ae_path.is_file()
    if idec:
        ae = load_model(ae_path)
        net = keras.Model(ae.inputs, [ae.get_layer("code").output, ae.output])
    else:
        net = load_model(model_dir / "encoder.keras", compile=False)
    mode = "IDEC" if idec else "DEC"
    model = _dec_model(net, clusterer, spec.k, bpc, block_shape, idec)
    kl = keras.losses.KLDivergence()
    model.compile(optimizer=keras.optimizers.Adam(spec.dec_learning_rate), loss=[kl, "mse"] if idec else kl,
                  loss_weights=[spec.dec_gamma, 1.0] if idec else None)
    data = dec_batches(x, spec.dec_batch_size, spec.seed, idec)
    source = ae_path if idec else model_dir / "encoder.keras"
    checkpoint = Checkpoint(model_dir / "dec_checkpoint", checkpoint_fingerprint(
        store_url, file_digest(str(source)), clusterer.centroids_, clusterer.features, spec))
    state = checkpoint.restore(model, log)
    first, history = (state["epoch"] + 1, state["history"]) if state else (0, {})

    def assignments() -> np.ndarray:
        bs = max(1, 1024 // bpc)  # a slice at a time in float32: the stored float16 blocks are never copied whole
        out = [model.predict(x[i : i + bs].astype(np.float32), batch_size=bs, verbose=0) for i in range(0, len(x), bs)]
        return np.concatenate([o[0] if idec else o for o in out])

    q = assignments()
    labels = q.argmax(1)
    changed, passes = 1.0, first
    for passes in range(first + 1, spec.dec_epochs + 1):
        data.p = target_distribution(q).astype(np.float32)
        fit(model, data, passes, checkpoint, log, first_epoch=passes - 1, history=history)
        q = assignments()
        new = q.argmax(1)
        changed = float((new != labels).mean())
        labels = new
        log(f"{mode} pass {passes}: loss {history['loss'][-1]:.4f}, {changed:.2%} of clips changed cluster")
        if changed < spec.dec_tol:
            break
    encoder = keras.Model(net.inputs, net.outputs[0]) if idec else net
    encoder.save(model_dir / "dec_encoder.keras")
    clusterer.centroids_ = np.asarray(model.clustering.centroids).astype(np.float64)
    checkpoint.clear()
    summary = {"mode": mode, "passes": passes, "last_changed": changed, "encoder": str(model_dir / "dec_encoder.keras"),
               "resumed_from_pass": first or None}
    return q, summary
