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


def test_a_picture_autoencoder_learns_in_pixel_units_on_unit_inputs():
    """Pixels 0..255: rescaled to [0, 1] inside (no weights), reconstructed back to 0..255, so the
    loss (and EarlyStopping's min_delta) is in the data's own units, as the report's was."""
    import numpy as np

    auto, encoder = build_autoencoder(ModelSettings(code_activation="linear"), (144, 144, 3), scale=255.0)
    assert [l.name for l in auto.layers][1] == "to_unit" and auto.layers[-1].name == "to_scale"
    out = auto.predict(np.full((1, 144, 144, 3), 255.0, np.float32), verbose=0)
    assert 0 <= out.min() and out.max() <= 255 and out.max() > 1  # the sigmoid's range, scaled to pixels
    assert encoder.output_shape == (None, 9, 9, 1) and encoder.get_layer("enc_conv3").activation.__name__ == "linear"
