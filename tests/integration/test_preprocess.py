"""Incremental preprocessing, and an existing Dask cluster (dask scheduler + 2 dask workers)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows.config import load_config
from flows.pipeline import preprocess_flow
from flows.runtime import run_on_dask
from storage import Store
from tasks.synth import synth_clip
from tests.conftest import free_port, write_wav

pytestmark = pytest.mark.integration


@pytest.fixture
def corpus(small_corpus, tmp_path):
    audio, labels = small_corpus
    shutil.copytree(audio, tmp_path / "audio")
    return tmp_path / "audio", labels


def config(**kw):
    return load_config("fast", clips_per_chunk=8, n_workers=2, dashboard_address="127.0.0.1:0", **kw)


def test_rerun_does_no_audio_work_and_new_or_changed_files_redo_only_their_chunks(prefect_api, corpus, tmp_path):
    audio, labels = corpus
    url = str(tmp_path / "store.zarr")
    cfg = config()
    first = run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url, labels=str(labels))
    assert first["found"] == first["stored"] == 40 and first["processed_chunks"] == 5
    before = Store.open(url).read("blocks")

    again = run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url, labels=str(labels))
    assert again["processed_chunks"] == 0 and again["stored"] == 40
    np.testing.assert_array_equal(Store.open(url).read("blocks"), before)

    # one changed file (its chunk only) and two new files (appended in a new chunk)
    changed = sorted(audio.iterdir())[9]  # clip 9: the second chunk
    write_wav(changed, synth_clip("clicks", 22050, 5.0, np.random.default_rng(99)))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    for i in range(2):
        write_wav(audio / f"zz_new_{i}.wav", synth_clip("tone", 22050, 5.0, np.random.default_rng(i)))
    third = run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url, labels=str(labels))
    assert (third["new"], third["changed"], third["processed_chunks"]) == (2, 1, 2)
    assert third["found"] == third["stored"] == 42
    store = Store.open(url)
    after = store.read("blocks")
    bpc = 6
    changed_rows = np.flatnonzero([not np.array_equal(before[i * bpc : (i + 1) * bpc], after[i * bpc : (i + 1) * bpc]) for i in range(40)])
    assert list(changed_rows) == [9]
    assert list(store.read("path")[40:]) == ["zz_new_0.wav", "zz_new_1.wav"]

    # a removed file leaves the listing: neither stored nor rejected any more
    (audio / "zz_new_1.wav").unlink()
    fourth = run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url, labels=str(labels))
    assert (fourth["found"], fourth["stored"], fourth["removed"], fourth["processed_chunks"]) == (41, 41, 1, 0)


def test_an_interrupted_run_is_finished_by_the_next(prefect_api, corpus, tmp_path):
    """Chunks left PENDING (as a killed run leaves them) are processed by the re-run, and only they."""
    audio, labels = corpus
    url = str(tmp_path / "store.zarr")
    cfg = config()
    run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url)
    store = Store.open(url, mode="r+")
    status = store.read("status")
    status[16:24] = 1  # PENDING: chunk 3 as a run killed before writing it would leave it
    store.group["status"][:] = status
    result = run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url)
    assert result["processed_chunks"] == 1 and result["stored"] == 40 and result["pending"] == 0


@pytest.fixture
def dask_cluster(prefect_api, tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    port = free_port()
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "DASK_LOGGING__DISTRIBUTED": "warning", "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"], env=env, cwd=tmp_path)]
    address = f"tcp://127.0.0.1:{port}"
    for i in range(2):
        procs.append(subprocess.Popen([str(bindir / "dask"), "worker", address, "--nthreads", "1", "--name", f"w{i}", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0", "--local-directory", str(tmp_path / f"w{i}")], env=env, cwd=tmp_path))
    from distributed import Client

    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_preprocess_on_an_existing_dask_cluster(prefect_api, dask_cluster, corpus, tmp_path):
    audio, labels = corpus
    url = str(tmp_path / "store.zarr")
    cfg = config(dask_address=dask_cluster)
    result = run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url, labels=str(labels))
    assert result["stored"] == 40 and result["processed_chunks"] == 5
    from distributed import Client

    with Client(dask_cluster) as client:
        # both workers did preprocessing work: every task range of the 5 chunks ran
        from flows.pipeline import task_ranges

        tasks = len(task_ranges([(s, s + 8) for s in range(0, 40, 8)], cfg.runtime.clips_per_task, 2))
        done = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(done) == 2 and all(n > 0 for n in done.values()) and sum(done.values()) >= tasks >= 2, done
        # the flow registered the audio warm-up on the existing cluster: each worker ran it when it got the plugin
        warmed = client.run(lambda dask_worker: "audioclust-audio-warm-up" in dask_worker.plugins)
        assert list(warmed.values()) == [True, True]
    assert Store.open(url).ok().sum() == 40
