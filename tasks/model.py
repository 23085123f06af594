"""The report's convolutional autoencoder (Keras 3).

Seed structure (18 layers, counting the input)::

    input 144x144xC
    encoder: [Conv2D 32 -> MaxPool] [Conv2D 32 -> MaxPool] [Conv2D 16 -> MaxPool] [Conv2D 1 -> MaxPool]
             -> code 9x9x1 (81 values, compression 81 / (144*144*1) = 0.0039 for C=1, 0.0013 for C=3)
    decoder: [Conv2DTranspose 16 -> UpSampling] [Conv2DTranspose 32 -> UpSampling] x3 -> Conv2D C, sigmoid

Inputs are in [0, 1]; the sigmoid output and MSE loss are on that scale.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    block: int = 144
    channels: int = 1
    filters: tuple[int, ...] = (32, 32, 16)  # encoder stages before the code stage
    code_channels: int = 1
    kernel: int = 3
    activation: str = "relu"

    @property
    def stages(self) -> int:
        return len(self.filters) + 1

    @property
    def code_side(self) -> int:
        side, rem = divmod(self.block, 2**self.stages)
        if rem or side < 1:
            raise ValueError(f"block {self.block} is not divisible by 2**{self.stages} (one halving per stage)")
        return side

    @property
    def code_shape(self) -> tuple[int, int, int]:
        return self.code_side, self.code_side, self.code_channels

    @property
    def code_size(self) -> int:
        return self.code_side**2 * self.code_channels


def build_autoencoder(spec: ModelSpec):
    """Return ``(autoencoder, encoder)``; the encoder shares the autoencoder's layers."""
    import keras
    from keras import layers

    inp = keras.Input((spec.block, spec.block, spec.channels), name="block")
    x = inp
    for i, f in enumerate((*spec.filters, spec.code_channels)):
        x = layers.Conv2D(f, spec.kernel, padding="same", activation=spec.activation, name=f"enc_conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"enc_pool{i}" if i < spec.stages - 1 else "code")(x)
    code = x
    for i, f in enumerate((*reversed(spec.filters), spec.filters[0])):
        x = layers.Conv2DTranspose(f, spec.kernel, padding="same", activation=spec.activation, name=f"dec_deconv{i}")(x)
        x = layers.UpSampling2D(2, name=f"dec_up{i}")(x)
    out = layers.Conv2D(spec.channels, spec.kernel, padding="same", activation="sigmoid", name="reconstruction")(x)
    autoencoder = keras.Model(inp, out, name="autoencoder")
    encoder = keras.Model(inp, code, name="encoder")
    return autoencoder, encoder
