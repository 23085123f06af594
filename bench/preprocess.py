"""Preprocessing throughput and memory (run: python -m bench.preprocess).

For each corpus (esc10 from ../shared/data when present, and a synthesized one of --clips
clips) prints: a plain single-process loop over the same feature function (the floor), the
same loop split over as many independent processes as each --workers count above 1 (no Dask, no
store: the ceiling the machine's cores allow that many workers), the flow's own per-clip work in one process (the same task ranges through ``preprocess_range``:
the loop's work plus the content hash and the store writes), the same task ranges on bare
dask.distributed (LocalCluster, each --workers count above 1), and the Prefect flow with each
--workers count (1 and 2 by default): clips per second, speed-up over the loop, peak RSS of the largest
process, and store bytes per clip; each row is the median of ``--repeats`` interleaved runs. The
loop's floor runs with the BLAS/OpenMP thread pools a worker has (``threads_per_worker``: one
core each); a second loop row keeps the libraries' default pools for comparison. Throughput
is steady state: every process has warmed the audio stack (``tasks.audio.warm_up``: imports,
numba compilation) before the clock starts, as the flow's workers do when they join; the flow
rows also give wall time with cluster start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import numpy as np  # noqa: E402

from bench.common import SHARED_DATA, PeakRSS, print_table  # noqa: E402


def synth_corpus(root: Path, n: int, unique: int = 64) -> Path:
    """``n`` WAV files: ``unique`` synthesized clips, the rest hard links to them (same decode cost)."""
    from tasks.synth import FAMILIES, synth_clip

    import soundfile as sf

    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = []
    for i in range(min(unique, n)):
        p = audio / f"u{i:05d}.wav"
        sf.write(p, synth_clip(FAMILIES[i % len(FAMILIES)], 22050, 5.0, rng), 22050, subtype="PCM_16")
        base.append(p)
    for i in range(len(base), n):
        os.link(base[i % len(base)], audio / f"c{i:07d}.wav")
    return audio


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _features(audio: Path, paths: list[str], config) -> None:
    """The feature function over ``paths``: decode, Mel image, blocks (rejects skipped)."""
    from storage import to_blocks
    from tasks.audio import Rejected, image, load_clip

    spec, geo = config.audio, config.audio.geometry()
    for p in paths:
        try:
            y, _ = load_clip(str(audio / p), spec)
            to_blocks(image(y, spec), geo.block, geo.width)
        except Rejected:
            pass


def plain_loop(audio: Path, config, threads: int | None = None) -> tuple[float, float, int]:
    """The feature function over every file, in this process. ``threads`` caps the BLAS/OpenMP pools
    (a Dask worker runs with ``threads_per_worker`` of them); None leaves the libraries' defaults."""
    from threadpoolctl import threadpool_limits

    from flows.corpus import scan
    from tasks.audio import warm_up

    paths = [e.path for e in scan(audio)]
    warm_up(config.audio)  # imports and numba compilation happen before the clock, as the workers' warm-up does
    with PeakRSS() as mem, threadpool_limits(limits=threads):
        t = time.perf_counter()
        _features(audio, paths, config)
        dt = time.perf_counter() - t
    return len(paths) / dt, mem.peak_mb, len(paths)


def _loop_part(audio: Path, paths: list[str], config, threads: int, ready, go, out) -> None:
    """One of ``loop_processes``' processes: warm up, say so, wait for the start, time its share."""
    from threadpoolctl import threadpool_limits

    from tasks.audio import warm_up

    warm_up(config.audio)
    with threadpool_limits(limits=threads):
        ready.put(True)
        go.wait()
        t = time.perf_counter()
        _features(audio, paths, config)
        out.put(time.perf_counter() - t)


def loop_processes(audio: Path, config, threads: int, processes: int) -> tuple[float, float, int]:
    """The plain loop split over ``processes`` independent processes released together once all have
    warmed up (no Dask, no store): what this machine's cores give at all for that many workers, the
    ceiling of every distributed row. Clips/s over the longest of the processes' timed shares.
    A process that fails stops the benchmark with its exit code (its traceback is above)."""
    import multiprocessing as mp
    import queue

    from flows.corpus import scan

    paths = [e.path for e in scan(audio)]
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_loop_part, args=(audio, paths[i::processes], config, threads, ready, go, out))
             for i in range(processes)]

    def collect(q) -> list:
        """One item from every process; a process that exits with an error ends the wait."""
        items: list = []
        while len(items) < processes:
            try:
                items.append(q.get(timeout=0.5))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    for proc in procs:
                        proc.kill()
                    raise RuntimeError(f"a loop process exited with code {dead[0]}") from None
        return items

    with PeakRSS() as mem:
        for proc in procs:
            proc.start()
        collect(ready)  # every process warmed up
        go.set()  # the clocks start together
        times = collect(out)
        for proc in procs:
            proc.join()
    return len(paths) / max(times), mem.peak_mb, len(paths)


def fresh_store(audio: Path, config, url: str, workers: int = 2):
    """A new store at ``url`` with the manifest of ``audio``, and the task ranges the flow would cut
    over it for ``workers`` workers (as the flow, before its clock starts)."""
    from flows.corpus import scan
    from flows.pipeline import feature_fingerprint, task_ranges
    from storage import Store

    store, _ = Store.open_or_create(url, config.audio.geometry(), config.runtime.clips_per_chunk, feature_fingerprint(str(audio), config))
    store.sync_manifest(scan(audio))
    return store, task_ranges(store.pending_chunks(), config.runtime.clips_per_task, workers)


def serial_batches(audio: Path, config, work: Path, threads: int) -> tuple[float, float, int]:
    """The flow's own work in this process: the same task ranges through ``preprocess_range`` one
    after another (decode and features as the loop, plus the content hash and whole-chunk writes)."""
    from threadpoolctl import threadpool_limits

    from tasks.audio import warm_up
    from tasks.preprocess import preprocess_range

    url = str(work / "serial.zarr")
    store, ranges = fresh_store(audio, config, url)
    warm_up(config.audio)
    with PeakRSS() as mem, threadpool_limits(limits=threads):
        t = time.perf_counter()
        for s, e in ranges:
            preprocess_range(url, str(audio), s, e, config.audio)
        dt = time.perf_counter() - t
    return store.n_clips / dt, mem.peak_mb, du(Path(url))


def bare_dask(audio: Path, config, work: Path, workers: int = 2) -> tuple[float, float, int]:
    """The same chunk tasks as the flow with ``workers`` workers, submitted with plain distributed (no Prefect)."""
    from distributed import Client, LocalCluster, as_completed

    from flows.runtime import configure_dask, worker_env
    from tasks.preprocess import AudioWarmUp, preprocess_range

    url = str(work / "bare.zarr")
    store, ranges = fresh_store(audio, config, url, workers)
    configure_dask()
    with PeakRSS() as mem:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                          host="127.0.0.1", env=worker_env("", 1)) as cluster, Client(cluster) as client:
            client.wait_for_workers(workers)
            client.register_plugin(AudioWarmUp(config.audio))
            t = time.perf_counter()
            futs = [client.submit(preprocess_range, url, str(audio), s, e, config.audio, pure=False) for s, e in ranges]
            for f in as_completed(futs):
                f.result()
            dt = time.perf_counter() - t
    return store.n_clips / dt, mem.peak_mb, du(Path(url))


def flow(audio: Path, config, work: Path, workers: int) -> tuple[float, float, int, float]:
    """Clips/s of the flow's chunk processing (cluster start excluded, as for bare dask), and its wall time."""
    from flows.config import load_config
    from flows.pipeline import preprocess_flow
    from flows.runtime import run_on_dask

    url = str(work / f"flow{workers}.zarr")
    cfg = load_config(config.preset, n_workers=workers, dashboard_address="127.0.0.1:0")
    with PeakRSS() as mem:
        t = time.perf_counter()
        result = run_on_dask(preprocess_flow, cfg, input_dir=str(audio), store=url)
        wall = time.perf_counter() - t
    return result["found"] / result["process_s"], mem.peak_mb, du(Path(url)), wall


def median(runs: list[tuple]) -> tuple:
    """The run with the median rate (first field), with the largest peak RSS (second field) of all runs."""
    mid = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    return (mid[0], max(r[1] for r in runs), *mid[2:])


def bench_corpus(name: str, audio: Path, config, work: Path, rows: list, only_flow: bool = False, repeats: int = 1,
                 workers: tuple[int, ...] = (1, 2)) -> None:
    """Every row ``repeats`` times, interleaved (loop, bare dask, flows, loop, ...) so that the machine's
    slow spells fall on all rows alike; each row shows its median run, and the flow's cost over bare
    dask is the median of the per-round ratios (for every worker count above 1)."""
    if not config.audio.resolved:  # "auto" audio settings (the default preset): from the corpus, as the flow does
        from tasks.audio import probe_duration

        config = config.resolve([d for p in sorted(audio.iterdir()) if (d := probe_duration(str(p))) is not None])
    n = sum(1 for _ in audio.iterdir())
    threads = config.runtime.threads_per_worker
    most = max(workers)
    many = [w for w in workers if w > 1]
    measures: dict = {}
    if not only_flow:
        measures = {
            "loop": lambda wk: plain_loop(audio, config, threads),
            "loop-threads": lambda wk: plain_loop(audio, config),
            "serial": lambda wk: serial_batches(audio, config, wk, threads),
            **{f"procs{w}": (lambda wk, w=w: loop_processes(audio, config, threads, w)) for w in many},
            **{f"bare{w}": (lambda wk, w=w: bare_dask(audio, config, wk, w)) for w in many},
        }
    measures.update({f"flow{w}": (lambda wk, w=w: flow(audio, config, wk, w)) for w in (workers if not only_flow else (most,))})
    runs: dict[str, list] = {k: [] for k in measures}
    for i in range(repeats):
        for key, measure in measures.items():
            wk = work / f"{key}-{i}"
            wk.mkdir(parents=True, exist_ok=True)
            runs[key].append(measure(wk))
            shutil.rmtree(wk, ignore_errors=True)
    med = {k: median(v) for k, v in runs.items()}
    if only_flow:  # scaling runs: the flow with the most workers alone
        rate, mem, size, wall = med[f"flow{most}"]
        rows.append([name, n, f"Prefect flow, {most} worker(s)", rate, "", mem, size / n, f"{wall:.0f} s wall with cluster start"])
        return
    rate0 = med["loop"][0]
    rows.append([name, n, f"plain loop, 1 process, {threads} BLAS thread", rate0, 1.0, med["loop"][1], "", ""])
    rows.append([name, n, "plain loop, 1 process, default BLAS threads", med["loop-threads"][0], med["loop-threads"][0] / rate0,
                 med["loop-threads"][1], "", ""])
    rate_s, mem_s, size_s = med["serial"]
    rows.append([name, n, "serial batches (loop + hash + store), 1 process", rate_s, rate_s / rate0, mem_s, size_s / n, ""])
    for w in many:
        rate_p, mem_p = med[f"procs{w}"][:2]
        rows.append([name, n, f"plain loop, {w} processes (the cores' ceiling)", rate_p, rate_p / rate0, mem_p, "", ""])
    for w in many:
        rate_b, mem_b, size_b = med[f"bare{w}"]
        rows.append([name, n, f"bare dask.distributed, {w} workers", rate_b, rate_b / rate0, mem_b, size_b / n, ""])
    for w in workers:
        rate, mem, size, wall = med[f"flow{w}"]
        note = f"{rate / rate_s:.2f}x serial batches; "
        if w > 1:
            note += f"{rate / med[f'procs{w}'][0]:.2f}x the {w}-process loop; "
            over = sorted(b[0] / f[0] for b, f in zip(runs[f"bare{w}"], runs[f"flow{w}"]))
            note += f"{over[len(over) // 2]:.2f}x bare dask time (range {over[0]:.2f}-{over[-1]:.2f}); "
        note += f"{wall:.0f} s wall with cluster start"
        rows.append([name, n, f"Prefect flow, {w} worker(s)", rate, rate / rate0, mem, size / n, note])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=2000, help="size of the synthesized corpus")
    ap.add_argument("--preset", default="seed", help="geometry to preprocess with (seed: 288x432x3; default: 64-band, auto width)")
    ap.add_argument("--skip-esc10", action="store_true")
    ap.add_argument("--work", default=None)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts for the flow rows (and bare dask rows, above 1) [1,2]")
    ap.add_argument("--only-flow", action="store_true", help="time only the flow with the most workers (for scaling runs)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per row on fresh stores; the median rate is shown [3]")
    args = ap.parse_args()
    try:
        workers = tuple(sorted({int(w) for w in args.workers.split(",")}))
    except ValueError:
        ap.error(f"--workers takes comma-separated counts, like 1,2,4; got {args.workers!r}")
    if not workers or min(workers) < 1:
        ap.error("--workers: counts are 1 or more")
    from flows.config import load_config
    from flows.runtime import ensure_prefect_api

    ensure_prefect_api()
    config = load_config(args.preset, dashboard_address="127.0.0.1:0")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-preprocess-"))
    rows: list = []
    esc10 = SHARED_DATA / "esc10" / "audio"
    if esc10.is_dir() and not args.skip_esc10:
        bench_corpus("esc10", esc10, config, work / "esc10", rows, args.only_flow, args.repeats, workers)
    synth = synth_corpus(work / "synth", args.clips)
    bench_corpus(f"synth-{args.clips}", synth, config, work / "synth", rows, args.only_flow, args.repeats, workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print_table(
        f"preprocess, {config.preset} geometry {config.audio.n_mels}x{config.audio.n_frames}x{config.audio.channels}, {cores} cores",
        ["corpus", "clips", "how", "clips/s", "vs loop", "peak RSS MB", "store B/clip", "orchestration"],
        rows,
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
