"""The report's convolutional autoencoder family (Keras 3).

Seed structure (encoder case ``pool``, decoder case ``upsample``; 18 layers counting the input)::

    input 144x144xC
    encoder: [Conv2D 32 -> MaxPool] [Conv2D 32 -> MaxPool] [Conv2D 16 -> MaxPool] [Conv2D 1 -> MaxPool = code]
             -> code 9x9x1 (81 values: 81 / (144*144*3) = 0.0013 of a 3-channel block, the report's ratio)
    decoder: [Conv2DTranspose 16 -> UpSampling] [Conv2DTranspose 32 -> UpSampling] x3 -> Conv2D C, sigmoid

The report's other cases, chosen by ``ModelSettings.encoder`` / ``ModelSettings.decoder``:

* encoder ``strided`` (case 1): Conv2D with stride 2 halves each stage instead of MaxPooling.
* encoder ``dense``   (case 2): the conv+pool stages, then Flatten -> Dense(code_size) as the code.
* encoder ``pool``    (case 3, seed).
* decoder ``strided`` (case 1): Conv2DTranspose with stride 2 doubles each stage.
* decoder ``dense``   (case 2): Dense -> Reshape to the smallest feature map, then the upsampling stages.
* decoder ``upsample`` (case 3, seed).

Every combination has the same code size, so their features are comparable. The layer that
outputs the code is always named ``code``; the encoder is the model from input to it.
Inputs are in [0, 1]; the sigmoid output and the MSE loss are on that scale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

class ModelSettings(BaseModel):
    """``[model]``: the network. The block shape it takes comes from the store (``[audio]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Literal["autoencoder", "contrastive"] = "autoencoder"  # how the network learns its codes (contrastive: tasks.contrastive)
    # contrastive: per-band corpus z-score, each clip's band means removed, or PCEN then the band means removed;
    # several: one network per input normalization, their codes side by side (clustered as one or apart: features.networks)
    input_norm: tuple[Literal["band", "clip", "pcen"], ...] = ("band",)
    # clip and pcen: the share of each clip's band means (its spectral envelope) left in; 0 removes them all
    envelope: float = 0.0
    filters: tuple[int, ...] = (32, 32, 16)  # encoder stages before the code stage
    code_channels: int = 1
    kernel: int = 3
    activation: str = "relu"
    code_activation: str = "relu"  # of the code layer; a 1-channel ReLU code can die (all zeros): "linear" cannot
    encoder: Literal["strided", "dense", "pool"] = "pool"  # report cases 1, 2, 3
    decoder: Literal["strided", "dense", "upsample"] = "upsample"  # report cases 1, 2, 3

    @field_validator("input_norm", mode="before")
    @classmethod
    def _norms(cls, v):
        v = (v,) if isinstance(v, str) else tuple(v)
        if not v or len(set(v)) != len(v):
            raise ValueError("input_norm is one of band, clip, pcen, or a list of different ones")
        return v

    @field_validator("envelope")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError(f"envelope is a share of each clip's band means, in [0, 1], got {v}")
        return v

    @field_validator("filters")
    @classmethod
    def _stages(cls, v):
        if not v:
            raise ValueError("filters needs at least one stage")
        return v

    @property
    def stages(self) -> int:
        return len(self.filters) + 1

    def code_side(self, block: int) -> int:
        """Side of the autoencoder's code for square blocks of side ``block``."""
        side, rem = divmod(block, 2**self.stages)
        if rem or side < 1:
            raise ValueError(f"block {block} is not divisible by 2**{self.stages} (one halving per stage)")
        return side

    def code_size(self, block: int) -> int:
        """Values in the autoencoder's code (a contrastive encoder's: :func:`tasks.encode.encoder_code_size`)."""
        if self.objective == "contrastive":
            raise ValueError("a contrastive code has one part per network trained: read its size from the saved encoder")
        return self.code_side(block) ** 2 * self.code_channels


def _encoder(x, spec: ModelSettings, block: int):
    from keras import layers

    conv = dict(kernel_size=spec.kernel, padding="same", activation=spec.activation)
    stage_filters = (*spec.filters, spec.code_channels)
    for i, f in enumerate(stage_filters):
        last = i == spec.stages - 1
        if last:
            conv = {**conv, "activation": spec.code_activation}
        if spec.encoder == "strided":
            x = layers.Conv2D(f, strides=2, name="code" if last else f"enc_conv{i}", **conv)(x)
        elif spec.encoder == "pool":
            x = layers.Conv2D(f, name=f"enc_conv{i}", **conv)(x)
            x = layers.MaxPooling2D(2, name="code" if last else f"enc_pool{i}")(x)
        elif not last:  # dense: conv+pool stages, then a dense code
            x = layers.Conv2D(f, name=f"enc_conv{i}", **conv)(x)
            x = layers.MaxPooling2D(2, name=f"enc_pool{i}")(x)
        else:
            x = layers.MaxPooling2D(2, name=f"enc_pool{i}")(x)
            x = layers.Flatten(name="enc_flatten")(x)
            x = layers.Dense(spec.code_size(block), activation=spec.code_activation, name="code")(x)
    return x


def _decoder(x, spec: ModelSettings, block: int, channels: int):
    from keras import layers

    side, code_ch = spec.code_side(block), spec.code_channels
    deconv = dict(kernel_size=spec.kernel, padding="same", activation=spec.activation)
    stage_filters = (*reversed(spec.filters), spec.filters[0])
    if spec.decoder == "dense":
        if len(x.shape) > 2:
            x = layers.Flatten(name="dec_flatten")(x)
        x = layers.Dense(side * side * spec.filters[-1], activation=spec.activation, name="dec_dense")(x)
        x = layers.Reshape((side, side, spec.filters[-1]), name="dec_reshape")(x)
    elif len(x.shape) == 2:  # a flat (dense) code feeding a convolutional decoder
        x = layers.Reshape((side, side, code_ch), name="dec_reshape")(x)
    for i, f in enumerate(stage_filters):
        if spec.decoder == "strided":
            x = layers.Conv2DTranspose(f, strides=2, name=f"dec_deconv{i}", **deconv)(x)
        else:
            x = layers.Conv2DTranspose(f, name=f"dec_deconv{i}", **deconv)(x)
            x = layers.UpSampling2D(2, name=f"dec_up{i}")(x)
    return layers.Conv2D(channels, spec.kernel, padding="same", activation="sigmoid", dtype="float32", name="reconstruction")(x)


def build_autoencoder(spec: ModelSettings, block_shape: tuple[int, int, int], scale: float = 1.0):
    """Return ``(autoencoder, encoder)`` for square blocks of ``block_shape`` whose values lie in
    [0, ``scale``]; the encoder shares the autoencoder's layers.

    With ``scale`` > 1 (pictures, 0..255) the network works on [0, 1] inside (a rescaling at each
    end, no weights) while its loss stays in the data's own units, as the report's did."""
    import keras
    from keras import layers

    block, width, channels = block_shape
    if block != width:
        raise ValueError(f"the autoencoder takes square blocks, not {block}x{width}")
    spec.code_side(block)  # validates the geometry before building
    inp = keras.Input(block_shape, name="block")
    x = layers.Rescaling(1.0 / scale, name="to_unit")(inp) if scale != 1.0 else inp
    code = _encoder(x, spec, block)
    out = _decoder(code, spec, block, channels)
    if scale != 1.0:
        out = layers.Rescaling(scale, name="to_scale")(out)
    return keras.Model(inp, out, name="autoencoder"), keras.Model(inp, code, name="encoder")


def encoder_of(autoencoder):
    """The encoder inside a (loaded) autoencoder: input up to the layer named ``code``."""
    import keras

    return keras.Model(autoencoder.inputs, autoencoder.get_layer("code").output, name="encoder")
