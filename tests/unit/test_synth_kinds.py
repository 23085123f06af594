"""The synthesized corpora of three kinds of audio: files, labels, sane audio, determinism."""

import csv

import numpy as np
import pytest
import soundfile as sf

from tasks.synth_kinds import INSTRUMENTS, KINDS, kind_clip, make_kind_corpus


@pytest.mark.parametrize("kind", KINDS)
def test_kind_corpus_files_labels_and_audio(tmp_path, kind):
    out = make_kind_corpus(tmp_path / kind, kind, per_class=2, seed=3)
    assert out == tmp_path / kind
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert len(rows) == 16 and len({r["label"] for r in rows}) == 8
    for r in rows:
        assert r["file"] == f"{r['label']}_{r['file'].rsplit('_', 1)[1]}"  # relative to audio/, as make_corpus
        y, sr = sf.read(out / "audio" / r["file"], dtype="float32")
        assert sr == 16000 and len(y) == 64000
        assert np.isfinite(y).all()
        assert 0.5 < np.abs(y).max() < 0.99  # peak-normalized to about 0.9: neither silent nor clipped
        assert np.sqrt(np.mean(y**2)) > 1e-3


def test_kind_corpus_is_deterministic(tmp_path):
    a = make_kind_corpus(tmp_path / "a", "events", per_class=1, seed=7, seconds=1.5)
    b = make_kind_corpus(tmp_path / "b", "events", per_class=1, seed=7, seconds=1.5)
    c = make_kind_corpus(tmp_path / "c", "events", per_class=1, seed=8, seconds=1.5)
    name = "bark_000.wav"
    assert (a / "audio" / name).read_bytes() == (b / "audio" / name).read_bytes()
    assert (a / "audio" / name).read_bytes() != (c / "audio" / name).read_bytes()


def test_unknown_kind_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown kind"):
        make_kind_corpus(tmp_path, "speech", per_class=1)
    assert not (tmp_path / "audio").exists()


def test_timbre_pitch_spans_more_than_an_octave_within_a_class():
    for c, label in enumerate(INSTRUMENTS):
        midis = []
        for i in range(10):
            midis += kind_clip("timbre", label, np.random.default_rng([0, c, i]), seconds=1.0)[1]["midi"]
        assert max(midis) - min(midis) > 12, (label, midis)
