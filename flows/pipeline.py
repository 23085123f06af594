"""The whole pipeline as one Prefect flow: preprocess -> train -> encode -> cluster and report.

Fan-out stages run on the flow's Dask task runner: preprocessing one task per run of
consecutive store chunks (about ``clips_per_task`` clips, see :func:`task_ranges`), encoding one
task per block chunk; training and clustering run in the flow process. Call through
:func:`flows.runtime.run_on_dask` (the CLI does) so tasks run on Dask and report to one API.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from prefect import flow, get_run_logger
from prefect.context import TagsContext
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.config import Config
from flows.corpus import corpus_name, is_url, join, label_lookup, read_labels, scan
from storage import Store, StoreError
from storage.lock import store_lock
from tasks import progress
from tasks.caching import digest, file_digest, made_for, report_key, train_key
from tasks.encode import encode_range_task, encoder_code_size
from tasks.plots import plot_loss
from tasks.preprocess import AudioWarmUp, preprocess_range_task
from tasks.report import cluster_and_report_task, publish_artifacts, run_report
from tasks.audio import probe_duration, reject_kind
from tasks.train import train_task


def run_windowed(submit, items: Iterable, window: int, stage: str, on_result: Callable | None = None,
                 on_failure: Callable | None = None, held: Callable[[], int] | None = None) -> list:
    """Submit ``submit(item)`` for every item with at most ``window`` in flight; log progress.

    Every item runs even if some fail; failures are raised together at the end. ``items`` may
    be a stream (a generator): it is read only as the window opens (the progress lines then
    count without a total). With ``on_result(item, result)``
    results are handed over as they come and not kept (the returned list is then empty);
    ``on_failure(item, exc)`` hears of each failed item as it fails. ``held()``, the number of
    results the caller still holds (results that came back before an earlier one), counts
    against the window: a slow item holds back new submissions, not an unbounded pile of results.

    The batch task runs carry no tags (the flow run keeps its own): Prefect asks the API for
    tag concurrency slots before every tagged task run, and fresh workers asking at once
    collide on the server's SQLite write lock, one of them backing off 2 s (a 2 000-clip
    preprocess went from 3.7 s to 5.3 s in about one run of three).
    """
    logger = get_run_logger()

    def untagged(item):
        with TagsContext(current_tags=set()):
            return submit(item)

    total = len(items) if hasattr(items, "__len__") else None
    every = max(1, total // 10) if total else 10
    pending, in_flight, results, failures = iter(items), {}, [], []
    end = object()

    def fill():
        while len(in_flight) + (held() if held else 0) < max(1, window) and (item := next(pending, end)) is not end:
            in_flight[untagged(item)] = item

    progress.start(stage, total, "tasks")
    fill()
    done = 0
    while in_flight:
        fut = next(as_completed(list(in_flight)))
        item = in_flight.pop(fut)
        try:
            result = fut.result()
        except Exception as exc:  # recorded; the other batches go on
            failures.append(exc)
            if on_failure:
                on_failure(item, exc)
        else:
            if on_result:
                on_result(item, result)
            else:
                results.append(result)
        done += 1
        if done == total or done % every == 0:
            logger.info("%s: %d/%s task ranges done", stage, done, total if total else "?")
        progress.advance(stage)
        fill()
    if failures:
        raise RuntimeError(f"{stage}: {len(failures)} of {done} batches failed; first: {failures[0]}") from failures[0]
    return results


# Tasks per worker on a small corpus: 2 against 4 cut the 2-worker flow's cost over bare Dask on
# 2 000 clips from 1.33x to 1.20x (bench/preprocess, median of 5). 1 did no better: 4.21 s
# against 4.01 s of processing (median of 5, interleaved, after batch task runs lost their tags),
# and it leaves a slow worker nobody to share with.
TASKS_PER_WORKER = 2

def feature_fingerprint(input_dir: str, config: Config) -> str:
    """What the stored images depend on: the input root, the audio settings and the layout (as configured,
    so ``"auto"`` values stay auto: a store keeps the values they were resolved to)."""
    return digest(_root_id(input_dir), config.audio.configured(), config.runtime.clips_per_chunk)[:16]


def resolve_config(input_dir: str, store_url: str, config: Config, labels: str | None = None, sample: int = 300) -> Config:
    """``config`` with ``"auto"`` audio fields fixed: from the store made for this corpus and configuration
    if there is one (so a grown corpus stays incremental), else from a sample of the files' durations."""
    if config.audio.resolved:
        return config
    try:
        store = Store.open(store_url)
        if store.attrs.get("fingerprint") == feature_fingerprint(input_dir, config) and "resolved" in store.attrs:
            return config.with_resolved(store.attrs["resolved"])
    except StoreError:
        pass
    rng, picked = np.random.default_rng(0), []
    for i, entry in enumerate(scan(input_dir, exclude=(labels,))):  # reservoir sample of the listing
        if len(picked) < sample:
            picked.append(entry)
        elif (j := rng.integers(0, i + 1)) < sample:
            picked[j] = entry
    durations = [d for e in picked if (d := probe_duration(join(input_dir, e.path))) is not None]
    resolved = config.resolve(durations)
    get_run_logger().info(
        "auto settings from %d sampled files: duration %.2f s, %d frames", len(durations), resolved.audio.duration, resolved.audio.n_frames
    )
    return resolved


def _root_id(input_dir: str) -> str:
    return str(input_dir).rstrip("/") if is_url(input_dir) else str(Path(input_dir).resolve())


def preprocess_stage(input_dir: str, store_url: str, config: Config, labels: str | None, label_column: str) -> dict:
    """Sync the store's manifest with the corpus and process the chunks that hold new or changed files.

    ``config`` may still hold ``"auto"`` values; pass it through :func:`resolve_config` first to
    know what they became (this function resolves them the same way)."""
    logger = get_run_logger()
    label_of = label_lookup(read_labels(labels, label_column)) if labels else None
    fingerprint = feature_fingerprint(input_dir, config)
    config = resolve_config(input_dir, store_url, config, labels)
    store, created = Store.open_or_create(
        store_url,
        config.audio.geometry(),
        config.runtime.clips_per_chunk,
        fingerprint,
        attrs={"input_dir": _root_id(input_dir), "audio": config.audio.model_dump(mode="json"), "preset": config.preset,
               "resolved": {"duration": config.audio.duration, "n_frames": config.audio.n_frames}},
    )
    audio = config.audio
    starts_of = None
    if audio.segment is not None:  # a file's windows, from its header (new and changed files only)
        starts_of = lambda e: audio.starts(probe_duration(join(input_dir, e.path)) or 0.0)  # noqa: E731
    sync = store.sync_manifest(scan(input_dir, exclude=(labels,)), label_of, starts_of)
    if not sync["listed"]:
        raise ValueError(f"no files under {input_dir}")
    chunks = store.pending_chunks()
    windows = f" ({sync['items']} windows)" if audio.segment is not None else ""
    logger.info(
        "%s store: %d files listed%s, %d new, %d changed, %d removed; %d of %d chunks to process",
        "new" if created else "existing", sync["listed"], windows, sync["new"], sync["changed"], sync["removed"],
        len(chunks), len(store.clip_chunks()),
    )
    workers = warm_workers(audio) if chunks else 0
    ranges = task_ranges(chunks, config.runtime.clips_per_task, workers or config.runtime.n_workers)
    t = time.perf_counter()
    done = run_windowed(
        lambda r: preprocess_range_task.submit(store_url, str(input_dir), r[0], r[1], audio),
        ranges, config.runtime.max_in_flight, "preprocess",
    )
    seconds = time.perf_counter() - t
    counts = store.counts()
    result = {"found": sync["items"], "files": sync["listed"], "stored": counts["ok"], "rejected": counts["rejected"],
              "pending": counts["pending"], "processed_chunks": len(chunks), "unchanged": sum(d["unchanged"] for d in done),
              "process_s": round(seconds, 2), **store.ignored(), **{k: sync[k] for k in ("new", "changed", "removed")}}
    if result["stored"] + result["rejected"] != result["found"]:
        raise RuntimeError(f"preprocess: {result['found']} items listed but {result['stored']} stored + {result['rejected']} rejected")
    if result["ignored_files"]:  # never cut in silence: say how much audio the clips left out
        logger.warning("%d files are longer than the %.1f s clip: %.0f s of their audio was not read; "
                       "--segment %.0f clusters every window of them", result["ignored_files"], audio.duration,
                       result["ignored_s"], audio.duration)
    return result


def warm_workers(spec) -> int:
    """Warm the audio stack on every Dask worker before the chunks go out (:class:`AudioWarmUp`);
    the number of workers (0 when the flow does not run on Dask)."""
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    client = getattr(runner, "client", None) if type(runner).__name__ == "DaskTaskRunner" else None
    if client is None:
        return 0
    t = time.perf_counter()
    client.register_plugin(AudioWarmUp(spec))
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    get_run_logger().info("%d workers warmed up in %.1f s", workers, time.perf_counter() - t)
    return workers


def task_ranges(chunks: list[tuple[int, int]], clips_per_task: int, workers: int) -> list[tuple[int, int]]:
    """Pending chunks (in store order) grouped into task ranges of consecutive chunks.

    A Prefect task costs a worker about 0.1 s to start (settings, API clients, state calls; the
    first one in a worker process 0.1-0.16 s), whatever it does. So the pending clips are
    cut into as few ranges as hold at most about ``clips_per_task`` clips each (1 024 by default:
    about 3 s of the default geometry's work), but at least ``TASKS_PER_WORKER`` per worker so
    that a small corpus still spreads over every worker. Cuts fall on the chunk boundaries
    nearest to equal shares, so ranges are as even as whole chunks allow. A range may span
    chunks with nothing pending: the task skips them.
    """
    if not chunks:
        return []
    total = sum(e - s for s, e in chunks)
    n = min(len(chunks), max(-(-total // max(1, clips_per_task)), TASKS_PER_WORKER * max(1, workers)))
    ranges: list[tuple[int, int]] = []
    held, last = 0, None
    for s, e in chunks:
        # the equal share (of n) that holds the chunk's middle clip: the cut before a share's end
        # falls on the chunk boundary nearer to it (exact integers: middle = held + (e - s) / 2)
        share = -(-(2 * held + e - s) * n // (2 * total))
        held += e - s
        if share == last:
            ranges[-1] = (ranges[-1][0], e)
        else:
            ranges.append((s, e))
            last = share
    return ranges


@flow(name="audioclust-preprocess", flow_run_name="preprocess")
def preprocess_flow(input_dir: str, store: str, config: Config, labels: str | None = None, label_column: str = "label") -> dict:
    """Only preprocessing: bring ``store`` up to date with ``input_dir`` (incremental)."""
    with store_lock(store, _owner()):
        return preprocess_stage(input_dir, store, config, labels, label_column)


def _owner() -> str:
    return f"flow run '{flow_run.name}' ({flow_run.id})"


def encode_stage(store_url: str, encoder_path: str, code_size: int, max_in_flight: int = 16, codes: str = "codes") -> int:
    """Encode every block chunk on Dask; returns the number of blocks encoded.

    Chunks whose codes this encoder already wrote come back Cached; missing ones are redone.
    """
    store = Store.open(store_url, mode="r+")
    store.ensure_codes(code_size, file_digest(encoder_path), codes)

    def submit(r):
        refresh = not store.codes_present(*r, codes)
        return encode_range_task.with_options(refresh_cache=refresh).submit(store_url, encoder_path, r[0], r[1], codes)

    return sum(run_windowed(submit, list(store.iter_block_chunks()), max_in_flight, "encode"))


@flow(name="audioclust-encode", flow_run_name="encode")
def encode_flow(store: str, encoder: str, config: Config) -> dict:
    """Re-encode every block of ``store`` with the encoder at path ``encoder``."""
    t = time.perf_counter()
    with store_lock(store, _owner()):
        blocks = encode_stage(store, encoder, encoder_code_size(encoder), config.runtime.max_in_flight)
    return {"blocks": blocks, "encode_s": time.perf_counter() - t}


def _run_name() -> str:
    params = flow_run.parameters
    corpus = corpus_name(str(params.get("input_dir", "corpus")))
    cfg = params.get("config")
    preset = getattr(cfg, "preset", None) or (cfg or {}).get("preset", "default")
    return f"{corpus}-{preset}"


def model_stages(store_url: str, out_dir: Path, config: Config, timings: dict, codes: str = "codes") -> tuple[dict, dict | None]:
    """train -> encode (into the codes array ``codes``) -> cluster and report, on a preprocessed store.

    With ``features = "mfcc-stats"`` there is no network: the handcrafted baseline is clustered.
    Returns ``(metrics, training summary or None)`` and times each stage into ``timings``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    trained = None
    if config.features.source == "network":
        t = time.perf_counter()
        params = dict(store_url=store_url, run_dir=str(out_dir / "model"), model=config.model, train=config.training)
        trained, timings["train_cached"] = _cached_stage(train_task, train_key(params), out_dir / "model" / "train.json", params)
        history = json.loads(Path(trained["history"]).read_text())
        plot_loss(history, out_dir / "loss.png", objective=config.model.objective)
        timings["train_s"] = round(time.perf_counter() - t, 1)

        t = time.perf_counter()
        encode_stage(store_url, trained["encoder"], encoder_code_size(trained["encoder"]), config.runtime.max_in_flight, codes)
        timings["encode_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    params = dict(store_url=store_url, out_dir=str(out_dir), features=config.features, clustering=config.clustering,
                  split_seed=config.split_seed, codes=codes, model_dir=str(out_dir / "model") if trained else None)
    metrics, timings["cluster_cached"] = _cached_stage(cluster_and_report_task, report_key(params), out_dir / "metrics.json", params)
    timings["cluster_s"] = round(time.perf_counter() - t, 1)
    return metrics, trained


def _cached_stage(task, key: str, summary: Path, params: dict) -> tuple[dict, bool]:
    """Run ``task`` under Prefect's cache with ``key``; ``(result, whether it was Cached)``.

    The key names everything the stage's outputs depend on, including its folder; the outputs'
    summary file records the key it was made for, so a folder that another configuration wrote
    since is recomputed rather than taken from the cache."""
    state = task.with_options(refresh_cache=not made_for(summary, key))(**params, cache_key=key, return_state=True)
    return state.result(), state.name == "Cached"


def common_reject(store_url: str) -> str:
    """The most common kind of reject in the store, for messages: ``'too short' (2177)``."""
    from collections import Counter

    kinds = Counter(reject_kind(reason) for _, reason in Store.open(store_url).rejects())
    return ", ".join(f"'{k}' ({n})" for k, n in kinds.most_common(1)) or "none"


@flow(name="audioclust-pipeline", flow_run_name=_run_name)
def pipeline(
    input_dir: str,
    config: Config,
    labels: str | None = None,
    out: str = "runs/latest",
    store: str | None = None,
    label_column: str = "label",
) -> dict:
    """Cluster every clip under ``input_dir``; write the store, model, predictions and metrics under ``out``."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_url = store or str(out_dir / "store.zarr")
    timings = {}
    with store_lock(store_url, _owner()):
        t = time.perf_counter()
        config = resolve_config(input_dir, store_url, config, labels)
        counts = preprocess_stage(input_dir, store_url, config, labels, label_column)
        timings["preprocess_s"] = round(time.perf_counter() - t, 1)
        get_run_logger().info("preprocess: %(found)d files, %(stored)d stored, %(rejected)d rejected", counts)
        k = config.clustering.fewest  # with k "auto", k_min: k itself is chosen in the cluster stage
        if counts["rejected"] * 2 > counts["found"] or counts["stored"] < k:
            most = counts["commonest_reject"] = common_reject(store_url)  # (the CLI's warning names it too)
            if counts["stored"] < k:  # before any training; a Failed state, not a traceback
                why = f" ({counts['rejected']} of {counts['found']} files rejected, most as {most})" if counts["rejected"] else ""
                return Failed(message=f"cannot make {k} clusters from {counts['stored']} stored clips{why}; lower {'--k-min' if config.clustering.k == 'auto' else '--k'}, or add clips")
            get_run_logger().warning("%d of %d files rejected, most as %s: is the preset right for this corpus?",
                                     counts["rejected"], counts["found"], most)
        metrics, trained = model_stages(store_url, out_dir, config, timings)

    metrics.update(
        store=store_url,
        loss_plot=str(out_dir / "loss.png") if trained else None,
        model=trained["encoder"] if trained else None,
        epochs=trained["epochs"] if trained else 0,
        final_loss=trained["final_loss"] if trained else None,
        device=trained["device"] if trained else None,
        preset=config.preset,
        preprocess=counts,
        input_dir=str(input_dir),
        labels_file=labels,
        label_column=label_column if labels else None,
        timings=timings,
        config=config.model_dump(mode="json"),
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    page = out_dir / "report.html"
    # the page shows the clustering's results and figures: redraw it only when they changed
    metrics["report"] = str(page if timings["cluster_cached"] and page.is_file() else run_report(store_url, out_dir, metrics))
    publish_artifacts(metrics, out_dir)
    if metrics.get("degenerate"):  # a failure with its cause, never a score
        return Failed(message=f"no usable clustering: {metrics['degenerate']}. The run folder {out_dir} keeps what was made.")
    return metrics
