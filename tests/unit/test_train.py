"""Training and encoding with real TensorFlow on a tiny store built by the plain preprocess function."""

import json

import numpy as np
import pytest

from flows.corpus import scan
from storage import Geometry, Store
from tasks.audio import AudioSettings
from tasks.encode import encode_blocks, load_encoder
from tasks.model import ModelSettings

ENCODERS, DECODERS = ("strided", "dense", "pool"), ("strided", "dense", "upsample")
from tasks.preprocess import preprocess_range
from tasks.synth import make_corpus
from tasks.train import BlockStream, TrainingSettings, split_clips, train_autoencoder

GEO = Geometry(freq=64, frames=96, block=32, channels=1)
SPEC = AudioSettings(n_mels=64, n_frames=96, block=32, channels=1)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    audio, _ = make_corpus(root, per_family=4, families=("tone", "clicks", "noise_bursts"), seed=2)
    url = str(root / "store.zarr")
    store = Store.create(url, GEO, clips_per_chunk=4)
    store.sync_manifest(scan(audio))
    for s, e in store.clip_chunks():
        preprocess_range(url, str(audio), s, e, SPEC)
    return url


def small_model(**kw):
    return ModelSettings(filters=(4, 4), **kw)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_encoder_decoder_combination_trains_and_encodes(tiny_store, tmp_path, encoder, decoder):
    spec = small_model(encoder=encoder, decoder=decoder)
    summary = train_autoencoder(tiny_store, str(tmp_path), spec, TrainingSettings(epochs=1, batch_size=8), log=lambda m: None)
    assert summary["epochs"] == 1 and np.isfinite(summary["final_loss"])
    blocks = Store.open(tiny_store).blocks(0, 12)
    codes = encode_blocks(load_encoder(summary["encoder"]), blocks)
    assert codes.shape == (12, spec.code_size(32)) and np.all(np.isfinite(codes))


def test_stream_visits_each_block_once_per_pass_with_a_bounded_buffer(tiny_store):
    store = Store.open(tiny_store)
    clips = store.ok()
    assert clips.all()
    clips[5] = False  # a clip left out (as a validation clip would be)
    stream = BlockStream(store, clips, shuffle=True, shuffle_chunks=1, seed=0)
    expected = store.blocks(0, store.n_blocks)[np.repeat(clips, 6)]
    first = np.stack(list(stream))
    second = np.stack(list(stream))
    assert len(first) == stream.n_blocks == 11 * 6
    key = lambda a: sorted(map(bytes, a.astype(np.float16)))  # noqa: E731
    assert key(first) == key(expected) == key(second)
    assert not np.array_equal(first, second)  # reshuffled each pass
    assert stream.max_buffered <= 4 * 6  # one chunk of 4 clips at a time


def test_validation_split_is_by_clip_and_seeded():
    ok = np.array([True] * 9 + [False])
    train, val = split_clips(ok, 0.2, seed=0)
    assert val.sum() == 2 and not (train & val).any() and not val[9] and (train | val).sum() == 9
    assert np.array_equal(val, split_clips(ok, 0.2, seed=0)[1])


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_from_its_last_epoch(tiny_store, tmp_path):
    import keras

    spec, train = small_model(), TrainingSettings(epochs=4, batch_size=8, patience=10, min_delta=0.0, seed=3)

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupt()

    with pytest.raises(Interrupt):
        train_autoencoder(tiny_store, str(tmp_path / "run"), spec, train, log=lambda m: None, callbacks=[StopAfterSecondEpoch()])
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and len(state["history"]["loss"]) == 2

    logs = []
    resumed = train_autoencoder(tiny_store, str(tmp_path / "run"), spec, train, log=logs.append)
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs"] == 4
    assert any("resuming" in m for m in logs)
    assert not (tmp_path / "run" / "checkpoint").exists()  # cleared once finished

    straight = train_autoencoder(tiny_store, str(tmp_path / "straight"), spec, train, log=lambda m: None)
    assert straight["resumed_from_epoch"] is None
    h_resumed = json.loads((tmp_path / "run" / "history.json").read_text())["loss"]
    h_straight = json.loads((tmp_path / "straight" / "history.json").read_text())["loss"]
    np.testing.assert_allclose(h_resumed, h_straight, rtol=1e-4)  # same result as never stopping


def test_a_checkpoint_of_another_configuration_is_not_resumed(tiny_store, tmp_path):
    import keras

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Interrupt()

    with pytest.raises(Interrupt):
        train_autoencoder(tiny_store, str(tmp_path), small_model(), TrainingSettings(epochs=2, batch_size=8), log=lambda m: None, callbacks=[Stop()])
    other = train_autoencoder(tiny_store, str(tmp_path), small_model(), TrainingSettings(epochs=2, batch_size=4), log=lambda m: None)
    assert other["resumed_from_epoch"] is None and other["epochs"] == 2


def test_encoder_is_loaded_once_per_process(tiny_store, tmp_path):
    summary = train_autoencoder(tiny_store, str(tmp_path), small_model(), TrainingSettings(epochs=1, batch_size=8), log=lambda m: None)
    assert load_encoder(summary["encoder"]) is load_encoder(summary["encoder"])


def test_single_threaded_contrastive_training_is_repeatable(tiny_store, tmp_path):
    """train_threads = 1: the same seed gives the same network, bit for bit (multi-threaded CPU
    reductions differ in their last bits between runs, and training grows the difference).
    In a fresh process: TensorFlow's thread counts are fixed once it has started."""
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from tasks.contrastive import train_contrastive\n"
        "from tasks.train import TrainingSettings\n"
        "for d in sys.argv[2:]:\n"
        "    train_contrastive(sys.argv[1], d, (4, 8), TrainingSettings(epochs=3, batch_size=16, seed=3, threads=1), lambda m: None, 'clip')\n"
    )
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    done = subprocess.run([sys.executable, "-c", script, tiny_store, *runs], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = (json.loads((tmp_path / r / "history.json").read_text())["loss"] for r in "ab")
    assert first == second and len(first) == 3
    blocks = Store.open(tiny_store).blocks(0, 24)
    codes = [encode_blocks(load_encoder(str(tmp_path / r / "encoder.keras")), blocks) for r in "ab"]
    np.testing.assert_array_equal(codes[0], codes[1])


def test_interrupted_contrastive_training_resumes_exactly_where_it_stopped(tiny_store, tmp_path):
    """Killed after its 2nd of 4 epochs, a re-run resumes from the checkpoint and ends with the
    network an uninterrupted run trains, bit for bit (one thread; in a fresh process, as above)."""
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "import numpy as np\n"
        "from storage import Store\n"
        "from tasks.contrastive import train_contrastive\n"
        "from tasks.encode import load_encoder\n"
        "from tasks.train import TrainingSettings\n"
        "store, run, straight = sys.argv[1:]\n"
        "spec = TrainingSettings(epochs=4, batch_size=8, seed=5, threads=1)\n"
        "class Killed(Exception): pass\n"
        "def kill_after_second(epoch, loss):\n"
        "    if epoch == 1: raise Killed()\n"
        "try:\n"
        "    train_contrastive(store, run, (4, 8), spec, lambda m: None, 'clip', on_epoch_end=kill_after_second)\n"
        "except Killed:\n"
        "    print('state', json.load(open(run + '/checkpoint/state.json'))['epoch'])\n"
        "logs = []\n"
        "a = train_contrastive(store, run, (4, 8), spec, logs.append, 'clip')\n"
        "b = train_contrastive(store, straight, (4, 8), spec, lambda m: None, 'clip')\n"
        "blocks = Store.open(store).blocks(0, 24)\n"
        "same = np.array_equal(load_encoder(a['encoder']).predict(blocks, verbose=0), load_encoder(b['encoder']).predict(blocks, verbose=0))\n"
        "print(json.dumps({'a': a['resumed_from_epoch'], 'b': b['resumed_from_epoch'], 'logs': logs, 'same': bool(same)}))\n"
    )
    run, straight = tmp_path / "run", tmp_path / "straight"
    done = subprocess.run([sys.executable, "-c", script, tiny_store, str(run), str(straight)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert "state 1" in lines
    out = json.loads(lines[-1])
    assert out["a"] == 2 and out["b"] is None
    assert any("resuming from the checkpoint after epoch 2" in m for m in out["logs"])
    history = json.loads((run / "history.json").read_text())["loss"]
    assert history == json.loads((straight / "history.json").read_text())["loss"] and len(history) == 4
    assert out["same"]  # the same network as never stopping
    assert not (run / "checkpoint").exists()  # cleared once finished


def test_a_corrupt_or_foreign_contrastive_checkpoint_is_not_used(tiny_store, tmp_path):
    """A truncated checkpoint file, or one from other data or settings, is passed over with a log
    line and training starts from the first epoch (not a crash, not someone else's weights)."""
    from tasks.contrastive import train_contrastive

    spec = TrainingSettings(epochs=2, batch_size=8, seed=5)

    class Killed(Exception):
        pass

    def kill(epoch, loss):
        raise Killed()

    run = tmp_path / "run"
    with pytest.raises(Killed):
        train_contrastive(tiny_store, str(run), (4, 8), spec, lambda m: None, "clip", on_epoch_end=kill)
    weights = next((run / "checkpoint").glob("weights-*.npz"))
    weights.write_bytes(weights.read_bytes()[:100])  # a save cut short
    logs = []
    summary = train_contrastive(tiny_store, str(run), (4, 8), spec, logs.append, "clip")
    assert summary["resumed_from_epoch"] is None and summary["epochs"] == 2
    assert any("not used" in m for m in logs)

    with pytest.raises(Killed):  # a checkpoint made with other settings: not even looked at
        train_contrastive(tiny_store, str(run), (4, 8), spec, lambda m: None, "clip", on_epoch_end=kill)
    other = train_contrastive(tiny_store, str(run), (4, 8), TrainingSettings(epochs=2, batch_size=4, seed=5), logs.append, "clip")
    assert other["resumed_from_epoch"] is None


def test_a_collapsed_code_is_reported_with_its_cause_not_scored(tiny_store, tmp_path):
    """An all-zero code (the report's settings run to their end) is named as the failure, with no scores."""
    import json
    import shutil

    from tasks.cluster import ClusteringSettings, FeatureSettings
    from tasks.report import cluster_and_report

    url = str(tmp_path / "store.zarr")
    shutil.copytree(tiny_store, url)
    store = Store.open(url, mode="r+")
    store.create_codes(81)
    for s, e in store.iter_block_chunks():
        store.write_codes(s, np.zeros((e - s, 81), np.float32))
    metrics = cluster_and_report(url, str(tmp_path / "run"), FeatureSettings(), ClusteringSettings(k=3), log=lambda m: None)
    assert metrics["degenerate"].startswith("collapsed code: the clip features are all zeros")
    assert metrics["scores"] == {} and json.loads((tmp_path / "run" / "metrics.json").read_text())["degenerate"]


def test_a_pitch_shifted_view_moves_the_bands_and_blanks_the_edge():
    from tasks.contrastive import augment

    x = np.zeros((1, 16, 8, 1), np.float32)
    x[0, 5] = 10.0  # one loud band
    pool = np.zeros_like(x)
    moved = set()
    for seed in range(40):
        v = augment(x, pool, 8, np.random.default_rng(seed), shift=3)[0, :, :, 0]
        band = int(np.argmax(v.mean(1)))  # the loud band survives the masks, noise and tilt in most views
        if v[band].mean() > 5:
            moved.add(band - 5)
    assert moved <= set(range(-3, 4)) and len(moved) >= 4  # up and down by up to 3 bands
    plain = [augment(x, pool, 8, np.random.default_rng(s))[0, :, :, 0] for s in range(5)]
    assert all(int(np.argmax(v.mean(1))) == 5 for v in plain if v[5].mean() > 5)  # shift 0: never moved


def test_a_frequency_warp_moves_a_band_to_its_frequency_times_the_ratio_and_blanks_what_it_cannot_read():
    from tasks.audio import band_frequencies
    from tasks.contrastive import warp_bands

    bands = band_frequencies({"sample_rate": 22050, "n_mels": 64})
    assert bands[0] < bands[1] < bands[-1] < 11025
    x = np.zeros((64, 4, 1), np.float32)
    x[30] = 10.0  # one loud band
    np.testing.assert_allclose(warp_bands(x, bands, 1.0), x, atol=1e-5)
    for ratio in (2 ** 0.5, 2 ** -0.5):
        v = warp_bands(x, bands, ratio)
        expected = int(np.argmin(np.abs(bands - bands[30] * ratio)))
        assert abs(int(np.argmax(v[:, 0, 0])) - expected) <= 1 and expected != 30
    up, down = warp_bands(x + 1.0, bands, 2 ** 0.5), warp_bands(x + 1.0, bands, 2 ** -0.5)
    assert np.all(up[0] == 0) and np.all(up[-1] > 0)  # raised: the lowest row would read below the lowest band
    assert np.all(down[-1] == 0) and np.all(down[0] > 0)  # lowered: the top rows would read above the highest
    picture = band_frequencies({"sample_rate": 22050, "n_mels": 64, "image": "picture"})  # top row first
    np.testing.assert_allclose(warp_bands(x[::-1], picture, 2 ** 0.5), warp_bands(x, bands, 2 ** 0.5)[::-1], atol=1e-5)


def test_freq_warp_views_move_up_and_down_and_the_training_records_it(tmp_path):
    from tasks.audio import band_frequencies
    from tasks.contrastive import AUTO_SHIFT, augment, train_contrastive, view_recipes

    bands = band_frequencies({"sample_rate": 22050, "n_mels": 64})
    x = np.zeros((1, 64, 8, 1), np.float32)
    x[0, 30] = 10.0
    peaks = {int(np.argmax(augment(x, np.zeros_like(x), 8, np.random.default_rng(s), warp=0.5, bands=bands)[0, :, :, 0].mean(1)))
             for s in range(40)}
    assert min(peaks) < 28 and max(peaks) > 32  # up to half an octave down and up
    with pytest.raises(ValueError, match="blocks as tall as the image"):  # 32-band blocks of a 64-band image
        spec = AudioSettings(n_mels=64, n_frames=96, block=32, channels=1)
        store = _store_of(tmp_path / "tiled", spec)
        train_contrastive(store, str(tmp_path / "run-tiled"), (4, 8), TrainingSettings(epochs=1, batch_size=8, freq_warp=0.07),
                          lambda m: None, "clip")
    store = _store_of(tmp_path / "whole", AudioSettings(n_mels=64, n_frames=32, block="image", channels=1))
    summary = train_contrastive(store, str(tmp_path / "run"), (4, 8), TrainingSettings(epochs=2, batch_size=8, freq_warp=0.07),
                                lambda m: None, "clip")
    plain = train_contrastive(store, str(tmp_path / "plain"), (4, 8), TrainingSettings(epochs=2, batch_size=8), lambda m: None, "clip")
    assert summary["freq_warp"] == 0.07 and plain["freq_warp"] == 0.0
    assert summary["final_loss"] != pytest.approx(plain["final_loss"], rel=1e-3)  # the warped views differ
    # with freq_shift "auto" the shifted candidate moves by the shift alone, the base by the warp
    assert [(r["freq_shift"], r["freq_warp"]) for r in view_recipes(TrainingSettings(freq_shift="auto", freq_warp=0.07))] == [
        (0, 0.07), (AUTO_SHIFT, 0.0)]
    assert [r["freq_warp"] for r in view_recipes(TrainingSettings(freq_shift=4, freq_warp=0.07))] == [0.07]  # as set


def _store_of(root, spec: AudioSettings) -> str:
    """A small store the way the preprocess flow makes one: its audio settings recorded in its attributes."""
    audio, _ = make_corpus(root, per_family=4, families=("tone", "clicks"), seed=3)
    url = str(root / "store.zarr")
    store = Store.create(url, spec.geometry(), clips_per_chunk=4, attrs={"audio": spec.model_dump(mode="json")})
    store.sync_manifest(scan(audio))
    for s, e in store.clip_chunks():
        preprocess_range(url, str(audio), s, e, spec)
    return url


def test_consensus_agreement_is_high_for_separated_clusters_and_low_for_noise():
    from tasks.cluster import consensus_agreement

    rng = np.random.default_rng(0)
    blobs = np.repeat(rng.normal(0, 8, (4, 10)), 30, axis=0) + rng.normal(0, 1, (120, 10))
    noise = rng.normal(0, 1, (120, 10))
    assert consensus_agreement(blobs, 4) > 0.95
    assert consensus_agreement(noise, 4) < consensus_agreement(blobs, 4) - 0.2


def test_freq_shift_auto_trains_a_network_per_recipe_and_keeps_the_most_consistent(tiny_store, tmp_path):
    from tasks.contrastive import AUTO_SHIFT, train_contrastive

    logs = []
    summary = train_contrastive(tiny_store, str(tmp_path / "run"), (4, 8),
                                TrainingSettings(epochs=2, batch_size=8, seed=1, freq_shift="auto", mix="power"), logs.append, "clip")
    cands = summary["candidates"]
    # the plain recipe, then one per "auto" setting that differs from it in that setting only
    assert [(c["freq_shift"], c["mix"]) for c in cands] == [(0, "power"), (AUTO_SHIFT, "power")]
    assert all(0 <= c["agreement"] <= 1 for c in cands)
    best = max(cands, key=lambda c: c["agreement"])
    assert (summary["freq_shift"], summary["mix"]) == (best["freq_shift"], best["mix"])
    assert any("consensus agreement" in m for m in logs)
    assert not any((tmp_path / "run").glob("checkpoint*"))  # finished: every candidate's checkpoint is gone
    # the plain candidate is the network the plain settings train: same seed, same start
    plain = train_contrastive(tiny_store, str(tmp_path / "plain"), (4, 8), TrainingSettings(epochs=2, batch_size=8, seed=1, mix="power"),
                              lambda m: None, "clip")
    assert plain["candidates"] is None and (plain["freq_shift"], plain["mix"]) == (0, "power")
    assert cands[0]["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-3)
    assert cands[1]["final_loss"] != pytest.approx(plain["final_loss"], rel=1e-3)  # the shifted views differ


def test_freq_shift_both_keeps_every_candidates_network_and_puts_their_codes_side_by_side(tmp_path):
    from tasks.contrastive import AUTO_SHIFT, train_contrastive

    store = _store_of(tmp_path / "c", AudioSettings(n_mels=32, n_frames=32, block="image", channels=1))
    logs = []
    both = train_contrastive(store, str(tmp_path / "both"), (4, 8), TrainingSettings(epochs=2, batch_size=8, freq_shift="both"),
                             logs.append, ("clip", "pcen"))
    # both clip networks, then the PCEN one, trained with the views whose codes clustered more consistently
    assert [(n["input_norm"], n["freq_shift"]) for n in both["networks"]] == [("clip", 0), ("clip", AUTO_SHIFT), ("pcen", both["freq_shift"])]
    assert both["code_parts"] == 3 and any("kept every view recipe's network" in m for m in logs)
    blocks = BlockStream(Store.open(store), Store.open(store).ok(), shuffle=False).read_all()
    codes = encode_blocks(load_encoder(both["encoder"]), blocks)
    assert codes.shape == (len(blocks), 48)
    for shift, part in ((0, codes[:, :16]), (AUTO_SHIFT, codes[:, 16:32])):  # each part is that candidate's network alone
        alone = train_contrastive(store, str(tmp_path / f"shift{shift}"), (4, 8), TrainingSettings(epochs=2, batch_size=8, freq_shift=shift),
                                  lambda m: None, "clip")
        np.testing.assert_allclose(part, encode_blocks(load_encoder(alone["encoder"]), blocks), rtol=1e-4, atol=1e-5)


def test_power_mixing_adds_the_powers_of_the_two_clips():
    from tasks.contrastive import augment

    x = np.full((1, 16, 8, 1), 2.0, np.float32)
    for seed in range(20):  # the same random draws in both modes: masks, tilt and noise land alike
        same = augment(x, x.copy(), 8, np.random.default_rng(seed), mix="power")
        none = augment(x, np.zeros_like(x), 8, np.random.default_rng(seed), mix="add")  # adding zeros: no mix
        np.testing.assert_allclose(same, none, atol=1e-5)  # a sound mixed with itself keeps its level
    loud = x + 10.0  # a clip 10 log units louder: in power it drowns the view, as an image it only adds 0.1-0.3 of itself
    power = np.mean([augment(x, loud, 8, np.random.default_rng(s), mix="power").mean() for s in range(100)])
    added = np.mean([augment(x, loud, 8, np.random.default_rng(s), mix="add").mean() for s in range(100)])
    assert power > added + 1.0  # (about 3.8 against 2.1: half the views mix, masks blank some values)


def test_pcen_is_librosas_and_lifts_an_onset_over_a_steady_band():
    import librosa

    from tasks.contrastive import pcen_images

    rng = np.random.default_rng(0)
    x = (rng.random((2, 16, 96, 1)) * 0.3 + 0.4).astype(np.float32)
    mine = pcen_images(x, 80.0)[..., 0]
    ref = librosa.pcen(10 ** ((x[..., 0] * 80 - 80) / 20) * 2**31, sr=1, hop_length=1, time_constant=10, axis=-1)
    assert np.abs(mine - ref).max() < 0.01  # the FIR truncation of librosa's IIR smoother
    steady = np.full((1, 2, 96, 1), 0.8, np.float32)
    steady[0, 1, 60:] = 0.95  # band 1 gets 12 dB louder at frame 60
    p = pcen_images(steady, 80.0)[0, :, :, 0]
    assert p[1, 62] > 1.8 * p[0, 62]  # the onset stands out against the steady band
    assert p[1, 95] < 0.6 * p[1, 62] and abs(p[0, 95] - p[0, 50]) < 0.01  # then sinks back; the steady band stays level


def test_the_envelope_setting_leaves_that_share_of_each_clips_band_means_in_training_and_in_the_saved_encoder(tmp_path):
    from tasks.contrastive import build_encoder, build_trunk, normalize_inputs, pooled_codes

    rng = np.random.default_rng(0)
    x = (rng.random((6, 16, 24, 1)) * 0.2 + np.linspace(0.2, 0.8, 16)[None, :, None, None]).astype(np.float32)  # a tilted envelope
    means = x.mean(2, keepdims=True)
    none, stats0 = normalize_inputs(x, "clip")
    half, stats = normalize_inputs(x, "clip", envelope=0.5)
    assert stats["scale"] == stats0["scale"] and np.abs(none.mean(2)).max() < 1e-5  # 0: cepstral mean normalization
    np.testing.assert_allclose(half.mean(2, keepdims=True) * stats["scale"], 0.5 * means, atol=1e-5)  # half the envelope left
    np.testing.assert_allclose(half - none, np.broadcast_to(0.5 * means / stats["scale"], x.shape), rtol=1e-5, atol=1e-4)  # what varies in time is untouched
    trunk = build_trunk(16, 1, (4, 8))
    build_encoder((16, 24, 1), [(trunk, stats)]).save(tmp_path / "encoder.keras")
    saved = encode_blocks(load_encoder(str(tmp_path / "encoder.keras")), x)
    np.testing.assert_allclose(saved, pooled_codes(trunk, half), rtol=1e-4, atol=1e-5)  # the encoder reads clips as training did
    assert not np.allclose(saved, pooled_codes(trunk, none), atol=1e-3)


def test_two_input_normalizations_train_two_networks_whose_codes_lie_side_by_side(tmp_path):
    from tasks.contrastive import train_contrastive

    store = _store_of(tmp_path / "c", AudioSettings(n_mels=32, n_frames=32, block="image", channels=1))
    train = TrainingSettings(epochs=2, batch_size=8, freq_shift="auto")
    logs = []
    summary = train_contrastive(store, str(tmp_path / "run"), (4, 8), train, logs.append, ("clip", "pcen"))
    one = train_contrastive(store, str(tmp_path / "one"), (4, 8), train, lambda m: None, "clip")
    assert summary["code_parts"] == 2 and summary["input_norm"] == ["clip", "pcen"] and one["code_parts"] == 1
    assert [n["input_norm"] for n in summary["networks"]] == ["clip", "pcen"] and len(summary["candidates"]) == 2
    assert any("one per further input normalization (pcen)" in m for m in logs)
    blocks = BlockStream(Store.open(store), Store.open(store).ok(), shuffle=False).read_all()
    both, alone = encode_blocks(load_encoder(summary["encoder"]), blocks), encode_blocks(load_encoder(one["encoder"]), blocks)
    assert both.shape == (len(blocks), 32) and alone.shape == (len(blocks), 16)
    np.testing.assert_allclose(both[:, :16], alone, rtol=1e-4, atol=1e-5)  # the first part is the single network's code
    assert not np.allclose(both[:, 16:], alone, atol=1e-3)  # the second, PCEN's, is another look at the clips
    assert not list((tmp_path / "run").glob("checkpoint*"))  # finished: no checkpoint left to resume


def test_fit_is_given_the_batches_in_step_order_without_tf_datas_autotuner():
    """Keras's own pipeline for a PyDataset autotunes, and joining the tuner's thread stalled the end of a long fit
    by up to 60 s; on TensorFlow fit gets a pipeline with the autotuner off, the same batches in the same order."""
    import keras

    from tasks.fit import fit_input, step_data_class

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the tf.data pipeline is TensorFlow's; other backends are given the PyDataset itself")

    class Steps(step_data_class()):
        steps = 3

        def batch(self, epoch, step):
            x = np.full((2 if step < 2 else 1, 4), 10 * epoch + step, np.float32)  # a smaller last batch
            return x, x

    class OnePass(Steps):
        @property
        def num_batches(self):
            return self.steps

    data = Steps()
    data.first_epoch = 1  # a resumed fit
    ds = fit_input(data)
    assert ds.options().autotune.enabled is False
    assert [float(x[0, 0]) for x, _ in ds.take(7)] == [10, 11, 12, 20, 21, 22, 30]
    assert [len(x) for x, _ in fit_input(OnePass())] == [2, 2, 1]
