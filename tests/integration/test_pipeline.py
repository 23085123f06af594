"""The whole flow through a real Prefect API, a real 2-process LocalCluster, Zarr on disk and TensorFlow."""

import csv
import json
import os
import re
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


@pytest.fixture(scope="module")
def corpus_with_bad_files(small_corpus, tmp_path_factory):
    audio, labels = small_corpus
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(audio, root / "audio")
    (root / "audio" / "empty.wav").write_bytes(b"")
    (root / "audio" / "notes.wav").write_text("this is text, not audio\n" * 10)
    return root / "audio", labels


@pytest.fixture(scope="module")
def pipeline_run(prefect_api, corpus_with_bad_files, tmp_path_factory):
    audio, labels = corpus_with_bad_files
    out = tmp_path_factory.mktemp("run")
    config = load_config("fast", k=4, n_workers=2, epochs=10, clips_per_chunk=8, dashboard_address="127.0.0.1:0")
    metrics = run_on_dask(pipeline, config, input_dir=str(audio), labels=str(labels), out=str(out))
    metrics["flow_run_id"] = _last_run_id()
    return out, metrics


def corpus_labels(out):
    return json.loads((out / "metrics.json").read_text())["labels_file"]


def test_store_holds_every_input(pipeline_run):
    out, metrics = pipeline_run
    store = Store.open(str(out / "store.zarr"))
    assert store.n_clips == 42 and store.n_blocks == 42 * 6
    ok = store.ok()
    assert ok.sum() == 40
    assert dict(store.rejects()) == {
        "empty.wav": "empty file (0 bytes)",
        "notes.wav": store.rejects()[1][1],
    }
    assert store.rejects()[1][1].startswith("undecodable")
    blocks = store.blocks(0, store.n_blocks)
    assert blocks.shape == (252, 32, 32, 1)
    assert np.all(blocks[np.repeat(ok, 6)].reshape(40, -1).max(axis=1) > 0.5)  # real images were written
    codes = store.read("codes")
    assert codes.shape == (252, 16) and np.all(np.isfinite(codes))


def test_outputs_and_scores(pipeline_run):
    out, metrics = pipeline_run
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and {int(r["cluster"]) for r in rows} <= set(range(4))
    with open(out / "rejects.csv") as fh:
        assert {r["file"] for r in csv.DictReader(fh)} == {"empty.wav", "notes.wav"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["found"] == 42 and saved["stored"] + saved["rejected"] == 42
    assert set(saved["scores"]) == {"all", "public", "private"}
    assert saved["scores"]["public"]["n"] == 20
    # far above chance: chance measured by scoring shuffled predictions of the same sizes
    from tasks.metrics import scores

    truth = dict(csv.reader(open(corpus_labels(out))))
    y_true = [truth[r["file"]] for r in rows]
    y_pred = np.array([int(r["cluster"]) for r in rows])
    rng = np.random.default_rng(0)
    chance = np.mean([scores(y_true, rng.permutation(y_pred))["nmi"] for _ in range(50)])
    nmi = saved["scores"]["all"]["nmi"]
    assert nmi == pytest.approx(scores(y_true, y_pred)["nmi"])
    assert nmi > 0.35 and nmi > 4 * chance, (nmi, chance)
    for png in ("loss.png", "embedding.png", "contingency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    html = (out / "report.html").read_text()
    assert html.count("<figure><img") == 3 and "notes.wav" in html  # figures and rejects embedded
    assert "<details><summary>" in html and "id='audioclust-data'" in html  # configuration collapsed; the browser's data
    # what was scored against, what the splits are, where the time went, what each figure shows
    assert "(column &#x27;label&#x27;)" in html and "the two halves of a fixed, seeded split" in html
    assert "Stage times" in html and "Training loss per epoch" in html
    assert (out / "model" / "encoder.keras").is_file()
    assert metrics["epochs"] >= 1


def test_score_rescores_a_finished_run_on_another_label_column(pipeline_run, tmp_path):
    from sklearn.metrics import normalized_mutual_info_score
    from typer.testing import CliRunner

    from flows.cli import app

    out, _ = pipeline_run
    metrics = json.loads((out / "metrics.json").read_text())
    runner = CliRunner()
    # the run's own labels and column: exactly the run's scores, nothing re-run
    result = runner.invoke(app, ["score", str(out), "--labels", metrics["labels_file"]])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "scores-label.json").read_text())["scores"] == metrics["scores"]
    # another column: a coarser grouping of the families, three files left unlabelled
    with open(metrics["labels_file"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    texture = {"tone": "tonal", "chirps_high": "tonal", "noise_bursts": "noisy", "clicks": "noisy"}
    extra = tmp_path / "labels.csv"
    with open(extra, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "texture"])
        w.writerows([r["file"], r["label"], "" if i < 3 else texture[r["label"]]] for i, r in enumerate(rows))
    result = runner.invoke(app, ["score", str(out), "--labels", str(extra), "--label-column", "texture"])
    assert result.exit_code == 0, result.output
    scored = json.loads((out / "scores-texture.json").read_text())
    assert scored["labelled"] == metrics["labelled"] - 3 == scored["scores"]["all"]["n"]
    by_name = {Path(r["file"]).name: texture[r["label"]] for r in rows[3:]}
    with open(out / "predictions.csv", newline="") as fh:
        pairs = [(by_name[Path(r["file"]).name], int(r["cluster"])) for r in csv.DictReader(fh) if Path(r["file"]).name in by_name]
    assert scored["scores"]["all"]["nmi"] == pytest.approx(normalized_mutual_info_score(*zip(*pairs)))
    printed = " ".join(result.output.split())
    assert "labelled in 'texture'" in printed and f"NMI {scored['scores']['all']['nmi']:.4f}" in printed
    # mistakes: one line each
    missing = runner.invoke(app, ["score", str(out), "--labels", str(extra), "--label-column", "speaker"])
    assert missing.exit_code == 2 and "needs columns 'file' and 'speaker'" in missing.output and "Traceback" not in missing.output
    not_a_run = runner.invoke(app, ["score", str(tmp_path), "--labels", str(extra)])
    assert not_a_run.exit_code == 2 and "not a finished run folder" in not_a_run.output
    # a column whose name is not a file name: its own file, not the one of a column spelled like it
    spaced = tmp_path / "spaced.csv"
    spaced.write_text(extra.read_text().replace("texture", "tex ture", 1))
    result = runner.invoke(app, ["score", str(out), "--labels", str(spaced), "--label-column", "tex ture"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.glob("scores-tex_ture-*.json")] and not (out / "scores-tex_ture.json").exists()


def test_worker_task_runs_reported_to_the_same_api(pipeline_run, prefect_api):
    """Task runs executed in Dask worker processes are visible through the flow's API."""
    import asyncio

    from prefect.client.orchestration import get_client

    from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter

    run_id = pipeline_run[1]["flow_run_id"]

    async def read():
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run_id]}))
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id={"any_": [run_id]}))
            return run, tasks, arts

    run, task_runs, artifacts = asyncio.run(read())
    assert run.state.is_completed() and run.flow_id
    names = [t.name for t in task_runs]
    preprocess = [n for n in names if n.startswith("preprocess-clips-")]
    encode = [n for n in names if n.startswith("encode-blocks-")]
    from flows.pipeline import task_ranges

    chunks = [(s, min(s + 8, 42)) for s in range(0, 42, 8)]  # 42 clips / 8 per chunk
    assert len(encode) == len(chunks) == 6
    assert len(preprocess) == len(task_ranges(chunks, load_config("fast").runtime.clips_per_task, 2)) == 4  # 2 per worker, even shares
    assert {a.key for a in artifacts} >= {"audioclust-summary", "audioclust-scores"}
    # the flow run carries the run's tags; its fan-out task runs none (each tagged task run would
    # first ask the API for tag concurrency slots, and fresh workers asking at once back off 2 s)
    assert "audioclust" in run.tags
    assert all(not t.tags for t in task_runs if t.name.startswith(("preprocess-clips-", "encode-blocks-"))), \
        [(t.name, t.tags) for t in task_runs if t.tags]


def test_parallel_encoding_equals_one_process_predict(pipeline_run):
    """Codes written by the Dask workers equal encoder.predict over the same blocks in one process."""
    import keras

    out, metrics = pipeline_run
    store = Store.open(str(out / "store.zarr"))
    encoder = keras.models.load_model(metrics["model"], compile=False, safe_mode=True)
    blocks = store.blocks(0, store.n_blocks)
    expected = encoder.predict(blocks, batch_size=64, verbose=0).reshape(len(blocks), -1)
    np.testing.assert_allclose(store.read("codes"), expected, rtol=1e-5, atol=1e-6)


CHROMIUM = "/usr/bin/chromium"


def playing(page, selector: str) -> tuple[bool, float, float]:
    """``(paused, currentTime now, currentTime 0.6 s later)`` of the audio element at ``selector``."""
    first = page.eval_on_selector(selector, "a => [a.paused, a.currentTime]")
    page.wait_for_timeout(600)
    return first[0], first[1], page.eval_on_selector(selector, "a => a.currentTime")


def test_the_report_plays_clips_in_a_real_browser(pipeline_run, tmp_path):
    """The run's report.html in Chromium: a map point and a cluster's clip play, and the page asks for nothing outside itself."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium; .ci/run does) to test the report's player")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    out, _ = pipeline_run
    page_url = (out / "report.html").resolve().as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_url)
        points = page.locator("#map circle")
        assert points.count() == 40 and not errors, errors  # every stored clip is a point
        point = page.locator("#map circle.sound").last  # drawn last: on top of any point it overlaps
        point.hover()
        tip = page.locator("#tip").inner_text()
        assert re.search(r"\w+_\d{3}\.wav - cluster \d", tip), tip  # names the file and its cluster
        point.click()
        paused, t0, t1 = playing(page, "#player")
        assert not paused and t1 > t0, (paused, t0, t1)
        assert "playing:" in page.locator("#now-playing").inner_text()
        page.locator(".cluster .clip img").first.click()  # the first cluster's clip nearest its centre
        paused, t0, t1 = playing(page, ".cluster .clip audio")
        assert not paused and t1 > t0, (paused, t0, t1)
        assert page.eval_on_selector("#player", "a => a.paused")  # one clip at a time
        assert not page.locator("details").first.evaluate("d => d.open")  # the raw configuration stays collapsed
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    outside = [u for u in requests if u != page_url and not u.startswith(("data:", "blob:"))]
    assert not outside and requests[0] == page_url, outside


def test_demo_command_with_embedded_defaults(tmp_path):
    """`audioclust demo` as a user runs it: no PREFECT_API_URL, it starts its own API and cluster; the default
    preset with --k auto, so k is chosen from the data (and recorded, drawn and printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    exe = Path(sys.executable).with_name("audioclust")
    result = subprocess.run(
        [str(exe), "demo", "--out", str(tmp_path / "demo"), "--per-family", "6", "--epochs", "6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "NMI" in result.stdout
    metrics = json.loads((tmp_path / "demo" / "run" / "metrics.json").read_text())
    auto = metrics["k_auto"]
    assert metrics["stored"] == 48 and metrics["preset"] == "default" and metrics["k"] == auto["chosen"]
    assert (auto["k_min"], auto["k_max"]) == (2, 16) and auto["k"] == list(range(2, 17)) and 2 <= metrics["k"] <= 16
    assert len(metrics["cluster_sizes"]) == metrics["k"] and metrics["clustering"]["k"] == metrics["k"]
    printed = " ".join(result.stdout.split())
    assert f"k = {metrics['k']}, chosen from 2-16 by" in printed and "report.html in a browser" in printed
    assert (tmp_path / "demo" / "run" / "k_auto.png").is_file()


def _task_states(flow_run_id):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return {t.name: t.state.name for t in asyncio.run(read())}


def _last_run_id():
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from prefect.client.schemas.filters import FlowFilter

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name={"any_": ["audioclust-pipeline"]}), sort=FlowRunSort.START_TIME_DESC, limit=1
            )
            return runs[0].id

    return asyncio.run(read())


def test_a_second_run_is_served_from_cache_and_a_training_change_retrains(pipeline_run, corpus_with_bad_files):
    out, first = pipeline_run
    audio, labels = corpus_with_bad_files
    config = load_config("fast", k=4, n_workers=2, epochs=10, clips_per_chunk=8, dashboard_address="127.0.0.1:0")
    second = run_on_dask(pipeline, config, input_dir=str(audio), labels=str(labels), out=str(out))
    states = _task_states(_last_run_id())
    assert states["train-model"] == "Cached" and states["cluster-and-report"] == "Cached"
    encode = [s for n, s in states.items() if n.startswith("encode-blocks-")]
    assert encode and set(encode) == {"Cached"}
    assert not any(n.startswith("preprocess-clips-") for n in states)  # the manifest: nothing to redo
    assert second["scores"] == first["scores"]
    assert second["timings"]["train_s"] < 5

    # a training field changed: retrain, re-encode, re-cluster; preprocessing untouched
    changed = load_config("fast", k=4, n_workers=2, epochs=11, clips_per_chunk=8, dashboard_address="127.0.0.1:0")
    third = run_on_dask(pipeline, changed, input_dir=str(audio), labels=str(labels), out=str(out))
    states = _task_states(_last_run_id())
    assert states["train-model"] == "Completed" and states["cluster-and-report"] == "Completed"
    assert {s for n, s in states.items() if n.startswith("encode-blocks-")} == {"Completed"}
    assert third["preprocess"]["processed_chunks"] == 0 and third["epochs"] == 11
