"""Long recordings cut into windows (`--segment`): every second stored, clustered and placed in time."""

import csv

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from flows.config import load_config
from flows.pipeline import pipeline, preprocess_flow
from flows.runtime import run_on_dask
from storage import PENDING, Store
from tasks.synth import make_recording

pytestmark = pytest.mark.integration
FAMILIES = ("rumble", "chirps_high", "noise_bursts")
# the windows' handcrafted features: what is tested here is windowing, not the network (no training: quick)
SETTINGS = dict(k=3, n_workers=2, clips_per_chunk=8, features="mfcc-stats", standardize=True, segment=5.0,
                dashboard_address="127.0.0.1:0")


def family_at(parts, start, end):
    """The family that fills most of [start, end)."""
    overlap = [(min(end, e) - max(start, s), f) for s, e, f in parts]
    return max(overlap)[1]


def test_windows_of_long_recordings_are_clustered_and_placed_in_time(prefect_api, tmp_path):
    audio = tmp_path / "recordings"
    audio.mkdir()
    parts = {"a.wav": make_recording(audio / "a.wav", FAMILIES, 10.0, 4, seed=1),  # 120 s: 24 windows
             "b.wav": make_recording(audio / "b.wav", FAMILIES[::-1], 10.0, 3, seed=2)}  # 90 s: 18 windows
    out = tmp_path / "run"
    metrics = run_on_dask(pipeline, load_config("fast", **SETTINGS), input_dir=str(audio), out=str(out))
    assert metrics["preprocess"]["files"] == 2 and metrics["found"] == metrics["stored"] == 24 + 18
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    for name, n in (("a.wav", 24), ("b.wav", 18)):
        mine = [r for r in rows if r["file"] == name]
        assert [float(r["start"]) for r in mine] == [5.0 * i for i in range(n)]  # exact, side by side, every second
        assert all(float(r["end"]) == pytest.approx(float(r["start"]) + 5.0, abs=1e-3) for r in mine)
    truth = [family_at(parts[r["file"]], float(r["start"]), float(r["end"])) for r in rows]
    assert normalized_mutual_info_score(truth, [int(r["cluster"]) for r in rows]) >= 0.9

    html = (out / "report.html").read_text()
    assert (out / "timeline.png").is_file() and "a strip of its windows" in html  # the report places them in time
    # assign takes long files and writes windows too: the run's own recordings land where the run put them
    from tasks.assign import assign

    assigned = assign([(name, str(audio / name)) for name in ("a.wav", "b.wav")], out)
    assert [(r["file"], r["start"], r["end"], r["cluster"]) for r in assigned] == [
        (r["file"], float(r["start"]), float(r["end"]), int(r["cluster"])) for r in rows]

    # b grows by 10 s: only its windows are redone (new rows), a's chunks are not touched
    store = Store.open(str(out / "store.zarr"))
    before = store.read("blocks", 0, 24 * store.geometry.blocks_per_clip)
    parts["b.wav"] = make_recording(audio / "b.wav", FAMILIES[::-1], 10.0, 3, seed=2) + [(90.0, 100.0, "rumble")]
    import soundfile as sf

    y, sr = sf.read(audio / "b.wav")
    sf.write(audio / "b.wav", np.concatenate([y, y[: 10 * sr]]), sr, subtype="PCM_16")
    config = load_config("fast", **SETTINGS)
    again = run_on_dask(preprocess_flow, config, input_dir=str(audio), store=str(out / "store.zarr"))
    assert (again["changed"], again["new"], again["found"], again["stored"]) == (1, 0, 24 + 20, 24 + 20)
    assert again["processed_chunks"] == 3  # b's 20 new windows: chunks of 8 from the next boundary
    store = Store.open(str(out / "store.zarr"), mode="r+")
    np.testing.assert_array_equal(store.read("blocks", 0, 24 * store.geometry.blocks_per_clip), before)

    # an interrupted run (a chunk left PENDING, as a killed task leaves it) is finished by the next
    status = store.read("status")
    status[:8] = PENDING  # a's first chunk: its first 8 windows
    store.group["status"][:] = status
    last = run_on_dask(preprocess_flow, config, input_dir=str(audio), store=str(out / "store.zarr"))
    assert last["processed_chunks"] == 1 and last["stored"] == 44 and Store.open(str(out / "store.zarr")).counts()["pending"] == 0


def test_a_long_file_read_as_one_clip_is_reported_not_cut_in_silence(prefect_api, tmp_path):
    audio = tmp_path / "mixed"
    audio.mkdir()
    make_recording(audio / "long.wav", FAMILIES[:2], 10.0, 2, seed=3)  # 40 s
    make_recording(audio / "short.wav", FAMILIES[:1], 4.0, 1, seed=4)
    make_recording(audio / "other.wav", FAMILIES[1:2], 4.0, 1, seed=5)
    out = tmp_path / "run"
    settings = {**SETTINGS, "k": 2}
    del settings["segment"]
    metrics = run_on_dask(pipeline, load_config("fast", **settings), input_dir=str(audio), out=str(out))
    assert (metrics["preprocess"]["ignored_files"], metrics["preprocess"]["ignored_s"]) == (1, 35.0)
    rejects = list(csv.DictReader(open(out / "rejects.csv")))
    assert [(r["file"], r["reason"]) for r in rejects] == [
        ("long.wav", "partly read: the first 5.0 s of 40.0 s (--segment clusters every window)")]
    assert metrics["stored"] == 3 and metrics["rejected"] == 0
