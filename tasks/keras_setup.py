"""Keras set-up shared by the trainers, the encoder and IDEC: threads, seeds and device, and the
project's custom layers (registered before any model that uses them is loaded)."""

from __future__ import annotations

import os
from functools import lru_cache


def backend() -> str:
    """The Keras backend this process uses (``KERAS_BACKEND``: tensorflow, jax or torch)."""
    import keras

    return keras.backend.backend()


def configure_keras(threads: int, seed: int | None = None) -> str:
    """Thread counts, seeds and (on CPU) deterministic kernels, before the first op, on whichever
    backend Keras uses; returns where the network runs, e.g. ``torch on GPU (NVIDIA H200)``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        device = _configure_tensorflow(threads, seed)
    elif name == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        gpu = torch.cuda.is_available()
        if seed is not None and not gpu:
            torch.use_deterministic_algorithms(True)
        device = f"GPU ({torch.cuda.get_device_name(0)})" if gpu else f"CPU ({torch.get_num_threads()} threads)"
    else:  # jax: threads are XLA flags, read when jax starts (set XLA_FLAGS beforehand to change them)
        import jax

        first = jax.devices()[0]
        device = f"GPU ({first.device_kind})" if first.platform == "gpu" else f"{first.platform.upper()} ({os.cpu_count()} cores)"
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return f"{name} on {device}"


def _configure_tensorflow(threads: int, seed: int | None) -> str:
    """The TensorFlow-only corner: its thread pools and op determinism."""
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            pass  # already initialised in this process
    gpus = tf.config.list_physical_devices("GPU")
    if seed is not None and not gpus:  # some GPU kernels (e.g. UpSampling gradients) have no deterministic version
        tf.config.experimental.enable_op_determinism()
    return f"GPU ({gpus[0].name})" if gpus else f"CPU ({threads or os.cpu_count()} threads)"


@lru_cache(maxsize=1)
def clip_mean_removal_class():
    """The layer class, registered with Keras once per process (call before loading a model that uses it)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="audioclust")
    class ClipMeanRemoval(keras.layers.Layer):
        """Subtract each image's mean over time, per band and channel (cepstral mean normalization)."""

        def call(self, x):
            return x - ops.mean(x, axis=2, keepdims=True)

    return ClipMeanRemoval


@lru_cache(maxsize=1)
def clustering_layer_class():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="audioclust")
    class ClusteringLayer(keras.layers.Layer):
        """k centroids; ``call(z)`` is the Student's-t soft assignment of each row of ``z`` (rows sum to 1)."""

        def __init__(self, k: int, alpha: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.k, self.alpha = int(k), float(alpha)

        def build(self, input_shape):
            self.centroids = self.add_weight(shape=(self.k, int(input_shape[-1])), initializer="glorot_uniform", name="centroids")

        def call(self, z):
            d2 = ops.sum(ops.square(ops.expand_dims(z, 1) - self.centroids), axis=2)
            q = ops.power(1.0 + d2 / self.alpha, -(self.alpha + 1.0) / 2.0)
            return q / ops.sum(q, axis=1, keepdims=True)

        def get_config(self):
            return {**super().get_config(), "k": self.k, "alpha": self.alpha}

    return ClusteringLayer


def load_model(path, compile: bool = True):
    """A saved ``.keras`` model, in Keras' safe mode, with the project's custom layers registered."""
    import keras

    clip_mean_removal_class()
    clustering_layer_class()
    return keras.models.load_model(path, compile=compile, safe_mode=True)
