import numpy as np
import pytest

from storage import from_blocks, to_blocks
from tasks.audio import AudioSettings, Rejected, image, load_clip, spectrogram
from tasks.synth import synth_clip
from tests.conftest import write_wav

SEED = AudioSettings(channels=3)  # the report's geometry: 288 x 432 image, 3 channels


def put(path, data: bytes):
    path.write_bytes(data)
    return path


def clip(seconds=5.0, sr=22050, family="harmonic"):
    return synth_clip(family, sr, seconds, np.random.default_rng(0))


def test_seed_image_and_blocks_geometry():
    img = image(clip(), SEED)
    assert img.shape == (288, 432, 3)
    assert 0.0 <= img.min() and img.max() <= 1.0
    blocks = to_blocks(img, 144)
    assert blocks.shape == (6, 144, 144, 3)
    # row-major: block 1 is the top row's second square, block 3 the bottom row's first
    np.testing.assert_array_equal(blocks[1], img[:144, 144:288])
    np.testing.assert_array_equal(blocks[3], img[144:, :144])
    np.testing.assert_array_equal(from_blocks(blocks, 2, 3), img)


@pytest.mark.parametrize("kind", ["mel", "log", "linear"])
def test_spectrogram_kinds_shape_and_range(kind):
    s = spectrogram(clip(), AudioSettings(spectrogram=kind))
    assert s.shape == (288, 432)
    assert s.min() >= 0 and s.max() == pytest.approx(1.0)


def test_mel_energy_follows_a_tone():
    sr = 22050
    t = np.arange(5 * sr) / sr
    low = spectrogram(np.sin(2 * np.pi * 200 * t).astype(np.float32), AudioSettings())
    high = spectrogram(np.sin(2 * np.pi * 4000 * t).astype(np.float32), AudioSettings())
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()


def test_load_pads_resamples_and_mixes(tmp_path):
    y = clip(seconds=2.0, sr=44100)
    stereo = np.stack([y, y], axis=1)
    p = write_wav(tmp_path / "s.wav", stereo, sr=44100)
    out, seconds = load_clip(str(p), AudioSettings())
    assert out.shape == (5 * 22050,)
    assert seconds == pytest.approx(2.0, abs=0.01)
    assert np.all(out[int(2.1 * 22050) :] == 0)


def test_long_file_is_read_only_up_to_the_window(tmp_path):
    p = write_wav(tmp_path / "long.wav", clip(seconds=30.0))
    out, seconds = load_clip(str(p), AudioSettings())
    assert out.shape == (5 * 22050,) and seconds == pytest.approx(5.0)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: put(d / "empty.wav", b""), "empty file"),
        (lambda d: put(d / "text.wav", b"not audio at all\n" * 20), "undecodable"),
        (lambda d: put(d / "noise.ogg", np.random.default_rng(0).bytes(4000)), "undecodable"),
        (lambda d: write_wav(d / "short.wav", clip(seconds=0.2)), "too short"),
        (lambda d: write_wav(d / "silent.wav", np.zeros(5 * 22050)), "silent"),
        (lambda d: write_wav(d / "lowrate.wav", clip(sr=2000), sr=2000), "sample rate 2000 Hz"),
        (lambda d: put(d / "notes.txt", b"hello"), "unsupported format '.txt'"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(Rejected, match=reason):
        load_clip(str(path), AudioSettings())


def test_an_undecodable_file_read_into_memory_gets_libsndfile_s_words_not_an_object_address(tmp_path):
    data = b"not audio at all\n" * 20
    with pytest.raises(Rejected) as caught:
        load_clip(str(put(tmp_path / "text.wav", data)), AudioSettings(), data)  # decoded from the bytes the hash read
    assert str(caught.value) == "undecodable: LibsndfileError: Format not recognised."


def test_broken_links_and_pipes_are_rejected_unread_and_a_missing_file_is_left_to_the_read(tmp_path):
    import os

    from tasks.audio import check_regular

    (tmp_path / "moved.wav").symlink_to(tmp_path / "gone.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(Rejected, match="broken symbolic link"):
        check_regular(str(tmp_path / "moved.wav"))
    with pytest.raises(Rejected, match="not a regular file"):
        check_regular(str(tmp_path / "pipe.wav"))
    assert check_regular(str(tmp_path / "absent.wav")) == str(tmp_path / "absent.wav")  # an I/O error later: retried


def test_non_finite_samples_are_rejected(tmp_path):
    y = clip()
    y[1000] = np.nan
    p = write_wav(tmp_path / "nan.wav", y, subtype="FLOAT")
    with pytest.raises(Rejected, match="non-finite"):
        load_clip(str(p), AudioSettings())


@pytest.mark.parametrize("name, sr, channels", [("stereo.wav", 44100, 2), ("mono.flac", 16000, 1), ("mono.ogg", 22050, 1)])
def test_decoding_and_the_image_equal_the_plain_librosa_calls(tmp_path, name, sr, channels):
    """One open per file (header and samples) and the cached window and filterbank are exact
    rewrites of librosa.load + to_mono + resample and of melspectrogram + power_to_db."""
    import librosa
    import soundfile as sf

    spec = AudioSettings(n_mels=64, n_frames=128, n_fft=1024)
    y = np.stack([clip(7.0, sr, f) for f in ("harmonic", "noise_bursts")[:channels]], axis=1)
    p = tmp_path / name
    sf.write(p, y, sr)
    ref, _ = librosa.load(p, sr=None, mono=False, duration=spec.duration)
    ref = librosa.resample(librosa.to_mono(ref), orig_sr=sr, target_sr=spec.sample_rate)
    out, seconds = load_clip(str(p), spec)
    assert seconds == spec.duration
    np.testing.assert_array_equal(out, librosa.util.fix_length(ref, size=spec.n_samples))
    power = librosa.feature.melspectrogram(y=out, sr=spec.sample_rate, n_fft=1024, hop_length=spec.hop_length, n_mels=64)
    db = librosa.power_to_db(librosa.util.fix_length(power, size=128, axis=1), ref=np.max, top_db=80.0)
    np.testing.assert_allclose(spectrogram(out, spec), np.clip((db + 80.0) / 80.0, 0, 1), atol=1e-5)


def test_mel_image_equals_librosa_melspectrogram_and_stretch_equals_interp():
    """The cached filterbank and the vectorized time stretch are exact rewrites of the plain librosa/numpy calls."""
    import librosa

    from tasks.audio import mel_basis, stretch

    y = synth_clip("chirps_high", 22050, 2.0, np.random.default_rng(0))
    ref = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=256, n_mels=64, power=2.0)
    ours = mel_basis(22050, 1024, 64) @ (np.abs(librosa.stft(y, n_fft=1024, hop_length=256)) ** 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8 * ref.max())
    x = np.random.default_rng(1).random((8, 37))
    want = np.stack([np.interp(np.linspace(0, 1, 128), np.linspace(0, 1, 37), row) for row in x])
    np.testing.assert_allclose(stretch(x, 128), want, atol=1e-12)
    np.testing.assert_allclose(stretch(x, 10), np.stack([np.interp(np.linspace(0, 1, 10), np.linspace(0, 1, 37), r) for r in x]), atol=1e-12)


@pytest.mark.parametrize("preset", ["seed", "default", "fast"])
def test_warm_up_runs_every_preset_audio_path(preset):
    from flows.config import load_config
    from tasks.audio import warm_up

    cfg = load_config(preset).resolve([5.0])
    warm_up(cfg.audio)  # decodes an in-memory 44.1 kHz WAV (resampling) and draws its image
    warm_up(load_config(preset, min_duration=3.0).resolve([5.0]).audio)  # a synthetic clip long enough to pass


def test_a_file_is_read_once_hashed_and_decoded_from_its_bytes(tmp_path, monkeypatch):
    import hashlib

    import tasks.preprocess as pre

    p = write_wav(tmp_path / "a.wav", clip(seconds=3.0, sr=44100), sr=44100)
    digest, data = pre.read_and_hash(str(p))
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest() and data == p.read_bytes()
    from_bytes, from_path = load_clip(str(p), AudioSettings(), data), load_clip(str(p), AudioSettings())
    np.testing.assert_array_equal(from_bytes[0], from_path[0])
    assert from_bytes[1] == from_path[1]
    with pytest.raises(Rejected, match="empty"):
        load_clip(str(p), AudioSettings(), b"")
    monkeypatch.setattr(pre, "READ_ONCE_BYTES", 1000)  # larger files: hashed in blocks, not kept in memory
    assert pre.read_and_hash(str(p)) == (digest, None)


def test_a_picture_is_the_spectrogram_as_a_saved_colour_image():
    """The report's input: the spectrogram plotted with a colour map, saved and read back (RGB, 0..255)."""
    from tasks.audio import picture, value_scale

    spec = AudioSettings(n_mels=64, n_frames=96, block=32, image="picture")
    t = np.arange(22050 * 5) / 22050
    img = image((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), spec)
    assert img.shape == (64, 96, 3) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 255 and np.array_equal(img, np.round(img))  # 8-bit pixels
    s = np.linspace(0, 1, 64)[:, None] * np.ones((1, 5))
    p = picture(s)
    assert np.array_equal(p[0], picture(np.ones((1, 5)))[0]) and p[-1].sum() < p[0].sum()  # loud bands bright, low rows at the bottom
    assert value_scale({"image": "picture"}) == 255.0 and value_scale({"image": "features"}) == value_scale(None) == 1.0
