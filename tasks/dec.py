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


def run_idec(
    store_url: str,
    model_dir: str,
    clusterer: Clusterer,
    spec: ClusteringSettings,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, dict]:
    """Refine ``clusterer`` (fitted by K-Means on the network's features) inside the network.

    Reads the model in ``model_dir`` (``autoencoder.keras`` -> IDEC, else ``encoder.keras`` -> DEC),
    trains it with the clustering layer on the stored clips, writes ``dec_encoder.keras`` there,
    and updates ``clusterer.centroids_``. Returns the final hard assignments of the stored clips
    (store order) and a summary.
    """
    configure_keras(0, spec.seed)
    import keras
    import tensorflow as tf

    model_dir = Path(model_dir)
    store = Store.open(store_url)
    bpc = store.geometry.blocks_per_clip
    ok = np.flatnonzero(store.ok())
    x = store.read("blocks").reshape(-1, bpc, *store.geometry.block_shape)[ok]  # float16, clip-major
    ae_path = model_dir / "autoencoder.keras"
    if ae_path.is_file():
        ae = load_model(ae_path)
        net = keras.Model(ae.inputs, [ae.get_layer("code").output, ae.output])
        mode = "IDEC"
    else:
        net = load_model(model_dir / "encoder.keras", compile=False)
        mode = "DEC"
    w, b = (tf.constant(a) for a in _affine(clusterer))
    layer = clustering_layer_class()(spec.k, name="clustering")
    layer.build((None, w.shape[1]))
    layer.centroids.assign(clusterer.centroids_.astype(np.float32))
    variables = net.trainable_variables + layer.trainable_variables
    opt = keras.optimizers.Adam(spec.dec_learning_rate)
    pool = clusterer.features.block_pool

    def soft(xb, training):
        flat = tf.reshape(xb, (-1, *store.geometry.block_shape))
        out = net(flat, training=training)
        code, recon = (out[0], out[1]) if mode == "IDEC" else (out, None)
        codes = tf.reshape(code, (tf.shape(xb)[0], bpc, -1))
        if pool == "concat":
            feat = tf.reshape(codes, (tf.shape(xb)[0], -1))
        elif pool == "mean":
            feat = tf.reduce_mean(codes, 1)
        else:
            feat = tf.concat([tf.reduce_mean(codes, 1), tf.reduce_max(codes, 1)], 1)
        return layer(tf.matmul(feat, w) + b), flat, recon

    @tf.function
    def step(xb, pb):
        with tf.GradientTape() as tape:
            q, flat, recon = soft(xb, True)
            kl = tf.reduce_mean(tf.reduce_sum(pb * tf.math.log((pb + 1e-10) / (q + 1e-10)), 1))
            loss = spec.dec_gamma * kl + tf.reduce_mean(tf.square(tf.cast(flat, recon.dtype) - recon)) if recon is not None else kl
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    predict = tf.function(lambda xb: soft(xb, False)[0])

    def assignments() -> np.ndarray:
        bs = max(1, 1024 // bpc)
        return np.concatenate([predict(tf.constant(x[i : i + bs].astype(np.float32))).numpy() for i in range(0, len(x), bs)])

    rng = np.random.default_rng(spec.seed)
    q = assignments()
    labels = q.argmax(1)
    changed, passes = 1.0, 0
    for passes in range(1, spec.dec_epochs + 1):
        p = target_distribution(q).astype(np.float32)
        order = rng.permutation(len(x))
        losses = [float(step(tf.constant(x[idx].astype(np.float32)), tf.constant(p[idx])))
                  for idx in np.array_split(order, max(1, len(x) // spec.dec_batch_size))]
        q = assignments()
        new = q.argmax(1)
        changed = float((new != labels).mean())
        labels = new
        log(f"{mode} pass {passes}: loss {np.mean(losses):.4f}, {changed:.2%} of clips changed cluster")
        if changed < spec.dec_tol:
            break
    encoder = keras.Model(net.inputs, net.outputs[0]) if mode == "IDEC" else net
    encoder.save(model_dir / "dec_encoder.keras")
    clusterer.centroids_ = layer.centroids.numpy().astype(np.float64)
    summary = {"mode": mode, "passes": passes, "last_changed": changed, "encoder": str(model_dir / "dec_encoder.keras")}
    return labels, summary

