import pytest

from tasks.model import ModelSettings, build_autoencoder


def test_seed_autoencoder_is_the_reports():
    spec = ModelSettings()
    autoencoder, encoder = build_autoencoder(spec, (144, 144, 3))
    assert len(autoencoder.layers) == 18  # input + 4 x (conv, pool) + 4 x (deconv, upsample) + output conv
    assert encoder.output_shape == (None, 9, 9, 1)
    assert autoencoder.output_shape == (None, 144, 144, 3)
    assert spec.code_size(144) / (144 * 144 * 3) == pytest.approx(0.0013, abs=5e-5)  # the report's ratio
    pools = [l for l in encoder.layers if l.__class__.__name__ == "MaxPooling2D"]
    ups = [l for l in autoencoder.layers if l.__class__.__name__ == "UpSampling2D"]
    assert len(pools) == 4 and len(ups) == 4
    assert autoencoder.loss is None  # compiled by the training task, with MSE


def test_block_must_halve_cleanly():
    with pytest.raises(ValueError, match="not divisible"):
        ModelSettings().code_side(100)
