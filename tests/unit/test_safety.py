"""Safety: paths stay inside the input root, models load in safe mode, servers bind loopback, bounded reads."""

import os
import subprocess
import tracemalloc

import numpy as np
import pytest

from flows.config import load_config
from flows.runtime import dask_task_runner
from storage.lock import StoreLocked, lock_path, store_lock
from tasks.audio import AudioSettings, Rejected, load_clip
from tasks.preprocess import source_path


def test_manifest_paths_cannot_leave_the_input_root(tmp_path):
    assert source_path(str(tmp_path), "a/b.wav") == str(tmp_path / "a" / "b.wav")
    for bad in ("../outside.wav", "a/../../outside.wav", "/etc/passwd"):
        with pytest.raises(Rejected, match="outside the input root"):
            source_path(str(tmp_path), bad)
    with pytest.raises(Rejected, match="outside the input root"):
        source_path("s3://bucket/clips", "../other/x.wav")


def test_a_corpus_of_symbolic_links_is_read_where_they_point(tmp_path):
    """Subsets linked from a dataset folder (or DVC / git-annex checkouts) are inputs like any file."""
    from flows.corpus import scan
    from storage import Geometry, Store
    from tasks.preprocess import preprocess_range
    from tasks.synth import make_corpus

    audio, _ = make_corpus(tmp_path / "dataset", per_family=2, families=("tone",), seed=2)
    subset = tmp_path / "subset"
    subset.mkdir()
    for p in sorted(audio.iterdir()):
        (subset / p.name).symlink_to(p)
    assert source_path(str(subset), "tone_000.wav") == str(subset / "tone_000.wav")
    url = str(tmp_path / "s.zarr")
    store = Store.create(url, Geometry(freq=64, frames=96, block=32, channels=1), clips_per_chunk=4)
    store.sync_manifest(scan(subset))
    result = preprocess_range(url, str(subset), 0, store.n_clips, AudioSettings(n_mels=64, n_frames=96, block=32, channels=1))
    assert (result["stored"], result["rejected"]) == (2, 0), Store.open(url).rejects()


def test_models_are_loaded_in_safe_mode(tmp_path):
    """A saved model with a Lambda layer (arbitrary code) is refused by the encoder loader."""
    import keras

    from tasks.encode import load_encoder

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp))
    model.save(tmp_path / "evil.keras")
    with pytest.raises(ValueError, match="(?i)unsafe|safe_mode|lambda"):
        load_encoder(str(tmp_path / "evil.keras"))


def test_local_dask_cluster_binds_loopback():
    runner = dask_task_runner(load_config("fast"), "http://127.0.0.1:4200/api")
    kwargs = runner.cluster_kwargs
    assert kwargs["host"] == "127.0.0.1" and kwargs["dashboard_address"].startswith("127.0.0.1:")
    assert kwargs["env"]["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"


def test_an_hour_long_file_is_read_only_up_to_the_window(tmp_path):
    import soundfile as sf

    path = tmp_path / "hour.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16") as fh:
        for _ in range(60):  # 60 x 60 s
            fh.write((0.1 * rng.standard_normal(8000 * 60)).astype(np.float32))
    short = tmp_path / "five.wav"
    sf.write(short, (0.1 * rng.standard_normal(8000 * 5)).astype(np.float32), 8000, subtype="PCM_16")
    assert os.path.getsize(path) > 50e6
    load_clip(str(short), AudioSettings())  # warm-up: imports and JIT compilation are not the file's cost

    def peak_of(p):
        tracemalloc.start()
        out = load_clip(str(p), AudioSettings())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return out, peak

    (y, seconds), peak_hour = peak_of(path)
    _, peak_five = peak_of(short)
    assert seconds == pytest.approx(5.0) and y.shape == (5 * 22050,)
    # the file is 57 MB of samples; reading it costs what a 5 s file costs
    assert peak_hour < peak_five + 2e6, (peak_hour, peak_five)


def test_a_held_store_is_refused_and_a_stale_lock_is_broken(tmp_path):
    url = str(tmp_path / "s.zarr")
    with store_lock(url, "run A"):
        with pytest.raises(StoreLocked, match=r"in use by run A \(pid \d+ on .*\); wait .* or delete .*s.zarr.lock"):
            with store_lock(url, "run B"):
                pass
    assert not os.path.exists(lock_path(url))
    dead = subprocess.Popen(["true"])
    dead.wait()
    import json
    import socket
    import time

    with open(lock_path(url), "w") as fh:
        json.dump({"owner": "killed run", "host": socket.gethostname(), "pid": dead.pid, "since": time.time()}, fh)
    with store_lock(url, "run C") as me:
        assert me["owner"] == "run C"
    assert not os.path.exists(lock_path(url))


def test_local_workers_get_heap_friendly_malloc_settings():
    """glibc reads these at process start: they must be in the nanny's pre-spawn environment."""
    import dask

    from flows.runtime import MALLOC_ENV

    dask_task_runner(load_config("fast"), "http://127.0.0.1:4200/api")
    environ = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert all(environ[k] == v for k, v in MALLOC_ENV.items())


def test_a_link_that_breaks_is_rejected_and_stored_again_once_restored_and_a_loop_is_listed(tmp_path):
    """A git-annex drop (the link breaks) and get (it points again): rejected, then stored again, not
    kept as rejected by a stale content hash. A symbolic link loop is listed and rejected, not a crash."""
    from flows.corpus import scan
    from storage import Geometry, Store
    from storage import OK, REJECTED
    from tasks.preprocess import preprocess_range
    from tasks.synth import make_corpus

    audio, _ = make_corpus(tmp_path / "dataset", per_family=3, families=("tone",), seed=2)
    subset = tmp_path / "subset"
    subset.mkdir()
    for p in sorted(audio.iterdir()):
        (subset / p.name).symlink_to(p)
    (subset / "loop.wav").symlink_to(subset / "loop.wav")
    url = str(tmp_path / "s.zarr")
    spec = AudioSettings(n_mels=64, n_frames=96, block=32, channels=1)
    store = Store.create(url, Geometry(freq=64, frames=96, block=32, channels=1), clips_per_chunk=8)

    def run():
        store.sync_manifest(scan(subset))
        preprocess_range(url, str(subset), 0, store.n_clips, spec)
        s = Store.open(url)
        return dict(zip(s.read("path"), s.read("status"))), dict(s.rejects())

    status, rejects = run()
    assert [status[f"tone_00{i}.wav"] for i in range(3)] == [OK] * 3 and status["loop.wav"] == REJECTED
    assert rejects["loop.wav"].startswith("broken symbolic link")
    target = audio / "tone_001.wav"
    target.rename(tmp_path / "dropped.wav")  # the link breaks
    status, rejects = run()
    assert status["tone_001.wav"] == REJECTED and rejects["tone_001.wav"] == f"broken symbolic link: to {target}"
    (tmp_path / "dropped.wav").rename(target)  # and points again
    status, rejects = run()
    assert status["tone_001.wav"] == OK and "tone_001.wav" not in rejects


def test_probing_a_pipe_for_its_duration_does_not_block(tmp_path):
    """The default preset samples durations before preprocessing: a pipe among the files must not hang it."""
    import threading

    from tasks.audio import probe_duration

    os.mkfifo(tmp_path / "pipe.wav")
    got = []
    th = threading.Thread(target=lambda: got.append(probe_duration(str(tmp_path / "pipe.wav"))), daemon=True)
    th.start()
    th.join(10)
    assert got == [None]
