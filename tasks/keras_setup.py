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
        """Subtract each image's mean over time, per band and channel (cepstral mean normalization), all but the
        share ``envelope`` of it (``model.envelope``)."""

        def __init__(self, envelope: float = 0.0, **kwargs):
            super().__init__(**kwargs)
            self.envelope = float(envelope)

        def call(self, x):
            return x - (1.0 - self.envelope) * ops.mean(x, axis=2, keepdims=True)

        def get_config(self):
            return {**super().get_config(), "envelope": self.envelope}

    return ClipMeanRemoval


@lru_cache(maxsize=1)
def pcen_class():
    """The PCEN layer class, registered with Keras once per process (call before loading a model that uses it)."""
    import keras
    import numpy as np
    from keras import ops

    @keras.saving.register_keras_serializable(package="audioclust")
    class PCEN(keras.layers.Layer):
        """Per-channel energy normalization (Wang et al. 2017; ``librosa.pcen``'s defaults, ``time_constant`` in frames)
        of an image of dB in [0, 1] (``top_db`` range, 1 = the clip's peak): each band's level divided by its own
        recent level, an automatic gain control per band, then root-compressed. A steady background sinks and what
        starts stands out. The smoothing is a causal FIR of ``taps`` frames (the IIR filter, truncated) with silence before
        the first frame, as ``librosa.pcen`` starts: a sound that opens the clip stands out as an onset."""

        def __init__(self, top_db: float = 80.0, time_constant: float = 10.0, gain: float = 0.98, bias: float = 2.0,
                     power: float = 0.5, taps: int = 64, **kwargs):
            super().__init__(**kwargs)
            self.top_db, self.time_constant, self.gain, self.bias, self.power, self.taps = (
                float(top_db), float(time_constant), float(gain), float(bias), float(power), int(taps))
            t = self.time_constant  # librosa's smoothing coefficient for a time constant of t frames
            s = (np.sqrt(1 + 4 * t**2) - 1) / (2 * t**2)
            w = s * (1 - s) ** np.arange(self.taps)
            self._kernel = (w / w.sum())[::-1].reshape(1, -1, 1, 1).astype("float32")  # oldest frame first

        def call(self, x):
            level = ops.power(10.0, (x * self.top_db - self.top_db) / 20.0) * 2.0**31  # magnitude, as librosa.pcen expects
            c = ops.shape(level)[-1]
            flat = ops.reshape(ops.transpose(level, (0, 3, 1, 2)), (-1, ops.shape(level)[1], ops.shape(level)[2], 1))
            padded = ops.pad(flat, ((0, 0), (0, 0), (self.taps - 1, 0), (0, 0)))
            smooth = ops.conv(padded, ops.convert_to_tensor(self._kernel), padding="valid")
            out = ops.power(flat / ops.power(1e-6 + smooth, self.gain) + self.bias, self.power) - self.bias**self.power
            return ops.transpose(ops.reshape(out, (-1, c, ops.shape(level)[1], ops.shape(level)[2])), (0, 2, 3, 1))

        def get_config(self):
            return {**super().get_config(), "top_db": self.top_db, "time_constant": self.time_constant, "gain": self.gain,
                    "bias": self.bias, "power": self.power, "taps": self.taps}

    return PCEN


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
    pcen_class()
    clustering_layer_class()
    return keras.models.load_model(path, compile=compile, safe_mode=True)
