"""Faults made to happen for real: bad input, a worker killed mid-stage, two runs on one store."""

import csv
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest

from flows.config import load_config
from flows.pipeline import encode_flow, preprocess_flow
from flows.runtime import run_on_dask
from storage import Store
from storage.lock import StoreLocked, store_lock
from tasks.synth import synth_clip
from tests.conftest import write_wav

pytestmark = pytest.mark.integration


def cfg(preset="fast", **kw):
    return load_config(preset, n_workers=2, dashboard_address="127.0.0.1:0", **kw)


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """Good clips mixed with every kind of bad file the issue lists; labels with a missing file, a duplicate row, an extra column."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("bad")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(5)
    good = {}
    for i, fam in enumerate(["tone", "clicks", "harmonic", "noise_bursts"]):
        good[f"good_{i}.wav"] = fam
        write_wav(audio / f"good_{i}.wav", synth_clip(fam, 22050, 5.0, rng))
    stereo = np.stack([synth_clip("tone", 96000, 5.0, rng)] * 2, axis=1)
    sf.write(audio / "hires_stereo.wav", stereo, 96000, subtype="PCM_24")
    good["hires_stereo.wav"] = "tone"
    write_wav(audio / "naïve clip é.wav", synth_clip("chirp_up", 22050, 5.0, rng))
    good["naïve clip é.wav"] = "chirp_up"
    with sf.SoundFile(audio / "hour_long.wav", "w", samplerate=8000, channels=1, subtype="PCM_16") as fh:
        for _ in range(60):
            fh.write((0.1 * rng.standard_normal(8000 * 60)).astype(np.float32))
    good["hour_long.wav"] = "noise"

    bad = {}
    (audio / "empty.wav").write_bytes(b"")
    bad["empty.wav"] = "empty file"
    full = (audio / "good_0.wav").read_bytes()
    (audio / "truncated.wav").write_bytes(full[:40])
    bad["truncated.wav"] = "undecodable"
    (audio / "text.wav").write_text("this is not audio\n" * 50)
    bad["text.wav"] = "undecodable"
    (audio / "random.ogg").write_bytes(rng.bytes(5000))
    bad["random.ogg"] = "undecodable"
    write_wav(audio / "silence.wav", np.zeros(5 * 22050))
    bad["silence.wav"] = "silent"
    write_wav(audio / "blip.wav", synth_clip("tone", 22050, 0.2, rng))
    bad["blip.wav"] = "too short"
    nan = synth_clip("tone", 22050, 5.0, rng)
    nan[100:200] = np.nan
    write_wav(audio / "nan.wav", nan, subtype="FLOAT")
    bad["nan.wav"] = "non-finite"
    (audio / "notes.txt").write_text("field notes")
    bad["notes.txt"] = "unsupported format"
    (audio / "moved.wav").symlink_to(root / "no-longer-here.wav")
    bad["moved.wav"] = "broken symbolic link"
    os.mkfifo(audio / "pipe.wav")  # opening it to read would block: rejected unread
    bad["pipe.wav"] = "not a regular file"

    labels = root / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "recorded_by"])
        for name, fam in good.items():
            w.writerow([name, fam, "x"])
        w.writerow(["good_0.wav", "DUPLICATE", "x"])  # duplicate row: the first label wins
        w.writerow(["missing.wav", "ghost", "x"])  # a file that does not exist
    return audio, labels, good, bad


def test_bad_input_is_contained_and_nothing_is_lost(prefect_api, bad_corpus, tmp_path):
    audio, labels, good, bad = bad_corpus
    url = str(tmp_path / "store.zarr")
    result = run_on_dask(preprocess_flow, cfg(clips_per_chunk=4), input_dir=str(audio), store=url, labels=str(labels))
    assert (result["found"], result["stored"], result["rejected"]) == (len(good) + len(bad), len(good), len(bad))
    store = Store.open(url)
    paths = store.read("path")
    stored = set(paths[store.ok()])
    assert stored == set(good)
    rejects = dict(store.rejects())
    assert set(rejects) == set(bad)
    for name, reason in bad.items():
        assert rejects[name].startswith(reason) or reason in rejects[name], (name, rejects[name])
    labels_of = dict(zip(paths, store.read("label")))
    assert labels_of["good_0.wav"] == "tone" and labels_of["naïve clip é.wav"] == "chirp_up"
    durations = dict(zip(paths, store.read("duration")))
    assert durations["hour_long.wav"] == pytest.approx(5.0)


def _workers():
    """The LocalCluster's worker processes (children of this process started by multiprocessing spawn)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            out.append(p)
    return out


def _kill_a_worker_when(ready, killed: list, timeout=120):
    def run():
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                if ready():
                    workers = _workers()
                    if workers:
                        os.kill(workers[0].pid, signal.SIGKILL)
                        killed.append(workers[0].pid)
                        return
            except Exception:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_a_killed_worker_does_not_change_the_result(prefect_api, small_corpus, tmp_path):
    audio, labels = small_corpus
    config = cfg("seed", clips_per_chunk=4)  # the report's geometry: each chunk takes a while

    clean = str(tmp_path / "clean.zarr")
    run_on_dask(preprocess_flow, config, input_dir=str(audio), store=clean)

    url = str(tmp_path / "killed.zarr")

    def some_chunk_done():
        return (Store.open(url).read("status") > 1).any()

    killed: list = []
    th = _kill_a_worker_when(some_chunk_done, killed)
    result = run_on_dask(preprocess_flow, config, input_dir=str(audio), store=url)
    th.join(5)
    assert killed, "no worker was killed: the test did not test anything"
    assert result["stored"] == 40 and result["pending"] == 0
    a, b = Store.open(clean), Store.open(url)
    for name in ("status", "blocks", "hash"):
        np.testing.assert_array_equal(a.read(name), b.read(name), err_msg=name)

    # encoding, with a worker killed once the first codes are written
    from tasks.model import build_autoencoder

    _, encoder = build_autoencoder(config.model, config.audio.geometry().block_shape)
    enc_path = str(tmp_path / "encoder.keras")
    encoder.save(enc_path)
    codes_dir = tmp_path / "killed.zarr" / "codes" / "c"
    killed.clear()
    th = _kill_a_worker_when(lambda: codes_dir.is_dir() and any(codes_dir.iterdir()), killed)
    run_on_dask(encode_flow, config, store=url, encoder=enc_path)
    th.join(5)
    assert killed, "no worker was killed during encoding"
    blocks = b.blocks(0, b.n_blocks)
    expected = encoder.predict(blocks, batch_size=64, verbose=0).reshape(len(blocks), -1)
    np.testing.assert_allclose(Store.open(url).read("codes"), expected, rtol=1e-5, atol=1e-6)


def test_a_second_run_on_a_held_store_is_refused(prefect_api, small_corpus, tmp_path):
    audio, _ = small_corpus
    url = str(tmp_path / "store.zarr")
    with store_lock(url, "another run"):
        with pytest.raises(StoreLocked, match="in use by another run"):
            run_on_dask(preprocess_flow, cfg(), input_dir=str(audio), store=url)
    result = run_on_dask(preprocess_flow, cfg(), input_dir=str(audio), store=url)
    assert result["stored"] == 40


def _cli(*args, env_extra=None, home=None):
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), COLUMNS="250", **(env_extra or {}))
    exe = Path(sys.executable).with_name("audioclust")
    return subprocess.Popen([str(exe), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_group_when(proc, ready, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        try:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


def test_a_killed_run_is_finished_by_the_next(prefect_api, small_corpus, tmp_path):
    audio, labels = small_corpus
    home = tmp_path / "prefect-home"

    # 1. killed mid-preprocess: the re-run processes only what is left, and the store equals a clean one
    url = str(tmp_path / "store.zarr")
    env = {"AUDIOCLUST_CLIPS_PER_CHUNK": "2"}
    proc = _cli("preprocess", str(audio), "--store", url, "--preset", "seed", env_extra=env, home=home)

    def partly_done():
        status = Store.open(url).read("status")
        return len(status) == 40 and (status == 2).sum() >= 4 and (status == 1).sum() >= 4

    assert _kill_group_when(proc, partly_done), "the run ended before it could be killed"
    left = int((Store.open(url).read("status") == 1).sum())
    rerun = _cli("preprocess", str(audio), "--store", url, "--preset", "seed", env_extra=env, home=home)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    import re

    chunks_redone = int(re.search(r"(\d+) chunks processed", " ".join(out.split())).group(1))
    assert 0 < chunks_redone < 20 and chunks_redone <= (left + 1) // 2 + 1, (chunks_redone, left)
    clean = str(tmp_path / "clean.zarr")
    run_on_dask(preprocess_flow, cfg("seed", clips_per_chunk=2), input_dir=str(audio), store=clean)
    for name in ("status", "blocks", "hash"):
        np.testing.assert_array_equal(Store.open(clean).read(name), Store.open(url).read(name), err_msg=name)

    # 2. killed mid-training: the re-run resumes from the last checkpoint
    out_dir = tmp_path / "run"
    args = ("run", str(audio), "--labels", str(labels), "--k", "4", "--preset", "fast", "--out", str(out_dir), "--epochs", "12")
    env = {"AUDIOCLUST_MIN_DELTA": "0", "AUDIOCLUST_PATIENCE": "100"}
    state = out_dir / "model" / "checkpoint" / "state.json"

    def some_epochs_done():
        import json

        return state.is_file() and json.loads(state.read_text())["epoch"] >= 3

    proc = _cli(*args, env_extra=env, home=home)
    assert _kill_group_when(proc, some_epochs_done), "training ended before it could be killed"
    rerun = _cli(*args, env_extra=env, home=home)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    import re

    flat = " ".join(out.split())
    assert "resuming from the checkpoint after epoch" in flat
    assert re.search(r"existing store: 40 files listed, 0 new, 0 changed, 0 removed; 0 of 3 chunks to process", flat), flat[-2000:]
    import json

    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 12 and metrics["scores"]["all"]["nmi"] > 0.3


from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402


class FlakyReads(WorkerPlugin):
    """A Dask worker plugin: reading a named file raises OSError, once (transient) or always (permanent).

    The count is kept in a file so that every worker process sees the same history.
    """

    def __init__(self, name: str, failures: int, counter: str):
        self.name, self.failures, self.counter = name, failures, counter

    def setup(self, worker):
        import tasks.preprocess as pre

        original = pre.read_and_hash

        def flaky(path, *args):
            if os.path.basename(path) == self.name:
                n = int(open(self.counter).read() or 0) if os.path.exists(self.counter) else 0
                if n < self.failures:
                    with open(self.counter, "w") as fh:
                        fh.write(str(n + 1))
                    raise OSError(5, "Input/output error")
            return original(path, *args)

        pre.read_and_hash = flaky


@pytest.fixture
def local_cluster(prefect_api):
    from distributed import LocalCluster

    from flows.runtime import worker_env

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      env=worker_env(prefect_api, 1)) as cluster:
        yield cluster


def test_a_read_that_fails_once_is_retried_and_a_permanent_one_names_the_file(prefect_api, local_cluster, small_corpus, tmp_path):
    from distributed import Client

    audio, _ = small_corpus
    name = sorted(p.name for p in audio.iterdir())[3]
    with Client(local_cluster) as client:
        client.register_plugin(FlakyReads(name, 1, str(tmp_path / "count1")), name="flaky")
        config = cfg(clips_per_chunk=8, dask_address=local_cluster.scheduler_address)
        result = run_on_dask(preprocess_flow, config, input_dir=str(audio), store=str(tmp_path / "a.zarr"))
        assert result["stored"] == 40 and open(tmp_path / "count1").read() == "1"  # it did fail once

        client.unregister_worker_plugin("flaky")
        client.register_plugin(FlakyReads(name, 99, str(tmp_path / "count2")), name="always")
        with pytest.raises(Exception, match=f"cannot read {name}"):
            run_on_dask(preprocess_flow, config, input_dir=str(audio), store=str(tmp_path / "b.zarr"))
        assert int(open(tmp_path / "count2").read()) == 3  # the first try and two retries


@pytest.mark.parametrize("holding", [0, 1])
def test_windowed_batches_stream_their_items_and_results_and_name_the_failed_one(prefect_api, holding):
    """run_windowed reads a stream of items only as the window opens (less what the caller holds),
    hands each result over as it comes (what `assign` relies on to hold neither the listing nor
    the rows), and a failed item is reported to the caller, does not stop the others, and fails
    the stage at the end."""
    from prefect import flow, task

    from flows.pipeline import run_windowed

    window, read, seen, failed = 3, [0], [], []

    def items():
        for i in range(20):
            read[0] += 1
            yield i

    @task(retries=0)
    def square(i):
        if i == 7:
            raise ValueError("item 7 is bad")
        return i * i

    def on_result(item, result):
        assert read[0] - len(seen) - len(failed) <= window - holding  # never more than the window read ahead
        seen.append((item, result))

    @flow
    def stage():
        return run_windowed(square.submit, items(), window, "test", on_result=on_result,
                            on_failure=lambda item, exc: failed.append((item, str(exc))), held=lambda: holding)

    with pytest.raises(RuntimeError, match="test: 1 of 20 batches failed; first: item 7 is bad"):
        stage()
    assert sorted(seen) == [(i, i * i) for i in range(20) if i != 7]
    assert failed == [(7, "item 7 is bad")]


def test_too_few_clips_for_k_stop_before_training_with_one_message(prefect_api, bad_corpus, tmp_path):
    """k above the clips that could be stored: the run ends Failed with one message (no traceback, no
    retry) right after preprocessing, before any training."""
    from prefect.exceptions import FailedRun

    from flows.pipeline import pipeline

    audio, labels, good, bad = bad_corpus
    found = len(good) + len(bad)
    with pytest.raises(FailedRun, match=rf"cannot make 20 clusters from {len(good)} stored clips \({len(bad)} of {found} "
                                        r"files rejected, most as 'undecodable' \(3\)\); lower --k, or add clips"):
        run_on_dask(pipeline, cfg(k=20, clips_per_chunk=4), input_dir=str(audio), labels=str(labels), out=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "model").exists()
