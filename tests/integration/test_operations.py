"""Operating it against a running `prefect server start`: a deployment from deploy/, run by a
process worker, triggered through the API; artifacts, cached task states and worker logs read
back through the API; the watcher that only runs on new files."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _prefect(*args, env):
    exe = Path(sys.executable).with_name("prefect")
    return subprocess.run([str(exe), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


async def _read(url, fn):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await fn(client)


def _children(parent_id):
    from prefect.client.schemas.filters import FlowRunFilter

    async def fn(client):
        # the subflow runs whose parent task run belongs to parent_id
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [parent_id]}))
        ids = [t.id for t in tasks]
        return await client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_task_run_id={"any_": ids})) if ids else []

    return asyncio.run(_read(None, fn))


def _task_runs(flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter

    async def fn(client):
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))

    return asyncio.run(_read(None, fn))


@pytest.fixture(scope="module")
def worker(prefect_server, tmp_path_factory):
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "AUDIOCLUST_PROJECT_DIR": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    created = _prefect("work-pool", "create", "audioclust-process", "--type", "process", env=env)
    assert created.returncode == 0 or "already exists" in created.stdout + created.stderr, created.stdout + created.stderr
    deployed = _prefect("--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml", env=env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    exe = Path(sys.executable).with_name("prefect")
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(exe), "worker", "start", "--pool", "audioclust-process"], env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=5)  # its runs are over; about half the time it took the whole 30 s it was once given
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_deployments_come_from_deploy_folder_with_schedules(worker):
    async def fn(client):
        return [await client.read_deployment_by_name(n) for n in ("audioclust-scheduled/nightly", "audioclust-watch/on-new-files")]

    nightly, watch = asyncio.run(_read(None, fn))
    assert nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert watch.schedules[0].schedule.interval.total_seconds() == 600
    assert nightly.work_pool_name == "audioclust-process"


def test_a_triggered_run_completes_and_its_rerun_is_cached(worker, small_corpus, tmp_path):
    from prefect.client.schemas.filters import LogFilter
    from prefect.deployments import run_deployment

    audio, labels = small_corpus
    params = {
        "input_dir": str(audio), "labels": str(labels), "out": str(tmp_path / "run"), "preset": "fast",
        "overrides": {"k": 4, "epochs": 4, "n_workers": 2, "clips_per_chunk": 8, "dashboard_address": "127.0.0.1:0"},
    }
    t = time.perf_counter()
    first = run_deployment("audioclust-scheduled/nightly", parameters=params, timeout=600)
    first_s = time.perf_counter() - t
    assert first.state.is_completed(), first.state
    (pipeline_run,) = _children(first.id)
    corpus = audio.parent.name  # a folder named "audio" is named after its parent
    assert pipeline_run.name == f"{corpus}-fast" and {f"corpus:{corpus}", "preset:fast"} <= set(pipeline_run.tags)

    async def artifacts(client):
        from prefect.client.schemas.filters import ArtifactFilter

        return await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id={"any_": [pipeline_run.id]}))

    keys = {a.key for a in asyncio.run(_read(None, artifacts))}
    assert {"audioclust-summary", "audioclust-scores", "audioclust-cluster-sizes", "audioclust-loss-plot"} <= keys

    tasks = _task_runs(pipeline_run.id)
    preprocess_ids = [tr.id for tr in tasks if tr.name.startswith("preprocess-clips-")]
    from flows.config import load_config
    from flows.pipeline import task_ranges

    n = sum(1 for p in audio.iterdir() if p.is_file())
    chunks = [(s, min(s + 8, n)) for s in range(0, n, 8)]
    assert len(preprocess_ids) == len(task_ranges(chunks, load_config("fast").runtime.clips_per_task, 2)) >= 2

    async def logs(client):
        return await client.read_logs(log_filter=LogFilter(task_run_id={"any_": preprocess_ids}))

    messages = [entry.message for entry in asyncio.run(_read(None, logs))]
    assert any("stored" in m and "rejected" in m for m in messages), messages[:5]  # logged on a Dask worker

    t = time.perf_counter()
    second = run_deployment("audioclust-scheduled/nightly", parameters=params, timeout=600)
    second_s = time.perf_counter() - t
    assert second.state.is_completed()
    (rerun,) = _children(second.id)
    states = {tr.name: tr.state.name for tr in _task_runs(rerun.id)}
    assert states["train-model"] == "Cached" and states["cluster-and-report"] == "Cached"
    assert {s for n, s in states.items() if n.startswith("encode-blocks-")} == {"Cached"}
    print(f"deployment run: first {first_s:.1f} s, cached re-run {second_s:.1f} s")


def test_the_watcher_runs_only_when_files_change(prefect_server, small_corpus, tmp_path):
    import shutil

    from flows.deployments import watch_corpus

    audio, labels = small_corpus
    shutil.copytree(audio, tmp_path / "audio")
    params = dict(input_dir=str(tmp_path / "audio"), labels=str(labels), out=str(tmp_path / "run"), preset="fast",
                  overrides={"k": 4, "epochs": 2, "n_workers": 2, "clips_per_chunk": 8, "dashboard_address": "127.0.0.1:0"})
    assert watch_corpus(**params)["ran"] is True
    assert watch_corpus(**params) == {"ran": False, "new": 0, "changed": 0, "removed": 0}
    shutil.copy(tmp_path / "audio" / "tone_000.wav", tmp_path / "audio" / "tone_new.wav")
    third = watch_corpus(**params)
    assert third["ran"] is True and third["new"] == 1
