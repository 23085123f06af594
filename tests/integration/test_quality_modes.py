"""Issue 8's modes through the real flow (Prefect API, LocalCluster, Zarr, TensorFlow):
IDEC inside the network, the handcrafted baseline, the contrastive default preset, and `assign`."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.config import load_config
from flows.pipeline import pipeline
from flows.runtime import run_on_dask
from storage import Store

pytestmark = pytest.mark.integration
FAST = dict(k=4, n_workers=2, clips_per_chunk=8, dashboard_address="127.0.0.1:0")


def run(audio, labels, out, preset="fast", store=None, **over):
    cfg = load_config(preset, **{**FAST, **over})
    return run_on_dask(pipeline, cfg, input_dir=str(audio), labels=str(labels), out=str(out), store=store)


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    """40 clips of 4 families whose spectra do not overlap (the fast autoencoder separates them fully)."""
    from tasks.synth import make_corpus

    return make_corpus(tmp_path_factory.mktemp("separated"), per_family=10,
                       families=("rumble", "chirps_high", "noise_bursts", "harmonic"), seed=1)


@pytest.fixture(scope="module")
def kmeans_run(prefect_api, separated, tmp_path_factory):
    audio, labels = separated
    out = tmp_path_factory.mktemp("modes")
    return out, run(audio, labels, out, epochs=10)


def test_idec_trains_a_clustering_layer_inside_the_network(kmeans_run, separated):
    out, base = kmeans_run
    audio, labels = separated
    m = run(audio, labels, out, epochs=10, cluster="idec")  # same run folder: the autoencoder comes from cache
    assert m["dec"]["mode"] == "IDEC" and m["dec"]["passes"] >= 1
    assert (out / "model" / "dec_encoder.keras").is_file()
    assert m["clustering"]["method"] == "idec" and m["features"] == base["features"]
    assert m["scores"]["all"]["nmi"] >= 0.9  # 4 well-separated families
    with open(out / "predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 40


def test_the_clustering_head_trains_inside_the_network(kmeans_run, separated):
    out, base = kmeans_run
    audio, labels = separated
    # same run folder: the autoencoder comes from cache; the head (SCAN on consensus neighbours, then self-labeling) is trained
    m = run(audio, labels, out, epochs=10, cluster="head", pca="auto", standardize=True, whiten=True)
    assert m["timings"]["train_cached"] and m["clustering"]["method"] == "head"
    assert m["head"]["heads"] == 5 and m["head"]["dims"] == 8  # 2 k of the 4 k components
    assert m["scores"]["all"]["nmi"] >= 0.9  # 4 well-separated families
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    confidence = np.array([float(r["confidence"]) for r in rows])
    assert len(rows) == 40 and ((confidence > 1 / 4) & (confidence <= 1)).all()
    page = (out / "report.html").read_text()
    assert "Least confident clips" in page and min(rows, key=lambda r: float(r["confidence"]))["file"] in page


def test_mfcc_stats_baseline_needs_no_network(kmeans_run, separated, tmp_path):
    out, _ = kmeans_run
    audio, labels = separated
    m = run(audio, labels, tmp_path / "base", store=str(out / "store.zarr"), features="mfcc-stats", standardize=True)
    assert m["features"]["source"] == "mfcc-stats" and m["feature_dim"] == 2 * 20 + 2 * 64
    assert m["model"] is None and not (tmp_path / "base" / "model").exists()
    assert m["scores"]["all"]["nmi"] >= 0.8


def test_default_preset_contrastive_with_auto_window(prefect_api, separated, tmp_path):
    audio, labels = separated
    m = run(audio, labels, tmp_path / "d", preset="default", epochs=20)
    store = Store.open(m["store"])
    # 5 s synthetic clips, trimmed: the window is the corpus's 95th-percentile duration, recorded in the store
    assert store.attrs["resolved"]["duration"] == m["config"]["audio"]["duration"] == pytest.approx(5.0, abs=0.1)
    assert store.geometry.blocks_per_clip == 1 and store.geometry.block_shape == (64, m["config"]["audio"]["n_frames"], 1)
    train = json.loads((tmp_path / "d" / "model" / "train.json").read_text())
    assert train["objective"] == "contrastive" and train["epochs"] == 20
    assert m["clustering"]["method"] == "consensus"
    # freq_shift "both": the clip networks of both view recipes, then the PCEN network, codes side by side
    assert train["input_norm"] == ["clip", "pcen"] and train["code_parts"] == 3
    assert [(n["input_norm"], n["freq_shift"]) for n in train["networks"]][:2] == [("clip", 0), ("clip", 4)]
    # three networks' GAP ++ GMP of 64 filters, reduced as one code (features.networks "joint"): pca "auto" = 4 k for the consensus
    assert m["cluster_dim"] == 16 and m["feature_dim"] == 384
    assert m["scores"]["all"]["nmi"] >= 0.7  # 20 epochs on 40 clips; chance is about 0.1
    again = run(audio, labels, tmp_path / "d", preset="default", epochs=20)  # auto values reused
    assert again["preprocess"]["processed_chunks"] == 0 and again["scores"] == m["scores"]
    apart = run(audio, labels, tmp_path / "d", preset="default", epochs=20, networks="apart")  # the same networks, from the cache
    assert apart["timings"]["train_cached"] and apart["cluster_dim"] == 48  # each code part reduced to 4 k on its own



def test_assign_puts_new_clips_into_the_run_clusters(kmeans_run, separated, tmp_path):
    out, _ = kmeans_run
    audio, labels = separated
    # the IDEC test above re-clustered this folder; K-Means again (the network comes from the cache)
    assert run(audio, labels, out, epochs=10)["clustering"]["method"] == "kmeans"
    new = tmp_path / "new"
    new.mkdir()
    names = sorted(os.listdir(audio))[::3]
    for n in names:
        shutil.copy(audio / n, new / n)
    (new / "broken.wav").write_bytes(b"RIFF....not really")
    target = tmp_path / "assigned.csv"
    exe = Path(sys.executable).with_name("audioclust")
    done = subprocess.run([str(exe), "assign", str(new), "--model", str(out), "--out", str(target)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r["file"]: r for r in csv.DictReader(open(target))}
    assert rows["broken.wav"]["cluster"] == "-1" and rows["broken.wav"]["reason"].startswith("undecodable")
    assert rows["broken.wav"]["farther_than"] == ""
    # how far out each clip lies, ranked among the run's own clips (these are run clips: spread over [0, 1])
    far = np.array([float(rows[n]["farther_than"]) for n in names])
    assert ((0 <= far) & (far <= 1)).all() and 0.1 < np.median(far) < 0.9, far
    with open(out / "predictions.csv") as fh:
        clustered = {r["file"]: r["cluster"] for r in csv.DictReader(fh)}
    same = np.mean([rows[n]["cluster"] == clustered[n] for n in names])
    assert same == 1.0  # a clip of the corpus lands where the run put it
    # the same, as a Prefect flow fanning batches out over 2 Dask workers
    fanned = tmp_path / "fanned.csv"
    done = subprocess.run([str(exe), "assign", str(new), "--model", str(out), "--out", str(fanned), "--n-workers", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "audioclust-assign" in done.stdout + done.stderr  # it ran as a flow
    assert fanned.read_text() == target.read_text()
    bad = subprocess.run([str(exe), "assign", str(new), "--model", str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "250"})
    assert bad.returncode == 2 and "not a finished audioclust run" in bad.stderr and "Traceback" not in bad.stderr
