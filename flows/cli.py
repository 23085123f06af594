"""audioclust: cluster a folder of audio clips with a convolutional network and K-Means (a consensus of K-Means runs by default, or IDEC)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from flows import runs, terminal
from flows.runs import LOCAL_ASSIGN_MAX, CommandError
from tasks import progress

app = typer.Typer(
    help=__doc__ + "\n\nRuns are Prefect flows with preprocessing and encoding fanned out on Dask. "
    "Without PREFECT_API_URL a local Prefect API is started for the run; set it to watch runs in your dashboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
_executable = False  # set by main(): this process is the audioclust command, whose terminal it may take over

Input = Annotated[str, typer.Argument(metavar="INPUT", help="Folder (or fsspec URL, e.g. s3://bucket/clips) of audio clips (wav, flac, ogg, mp3), searched recursively.")]
Labels = Annotated[Optional[str], typer.Option("--labels", help="CSV with columns file,label: stored with the clips; a run scores its clusters against them (NMI/AMI/ARI/ACC).")]
LabelColumn = Annotated[str, typer.Option("--label-column", help="Column of --labels to score against.")]
Preset = Annotated[Optional[str], typer.Option("--preset", help="Named preset: seed (the report exactly), default (our best), fast (tests) \\[default: AUDIOCLUST_PRESET, else the --config file's, else default].")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML file of config fields (overrides the preset).")]
K = Annotated[Optional[str], typer.Option("--k", help="Number of clusters, or auto: chosen from the data in [--k-min, --k-max] \\[default: 20].")]
KMin = Annotated[Optional[int], typer.Option("--k-min", help="--k auto: the fewest clusters to consider \\[default: 2].")]
KMax = Annotated[Optional[int], typer.Option("--k-max", help="--k auto: the most clusters to consider (at most a third of the clips) \\[default: 20].")]
Epochs = Annotated[Optional[str], typer.Option("--epochs", help="Maximum training epochs, or 'auto' for the contrastive objective (overrides the preset).")]
Features = Annotated[Optional[str], typer.Option("--features", help="network (the trained encoder's codes) or mfcc-stats (handcrafted baseline: MFCC and log-Mel mean/std, no network).")]
Cluster = Annotated[Optional[str], typer.Option("--cluster", help="kmeans (the seed and fast presets'); consensus: of 100 K-Means runs on random PCA sub-spaces (the default preset's; with seed or fast also set pca, e.g. AUDIOCLUST_PCA=auto); head: softmax heads trained on the network's features so each clip agrees with its consensus neighbours (SCAN), then self-labeled; or idec: a clustering layer trained inside the network (DEC/IDEC), initialized from K-Means.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed for training and K-Means \\[default: 0].")]
Workers = Annotated[Optional[int], typer.Option("--n-workers", help="Local Dask worker processes \\[default: 2].")]
Address = Annotated[Optional[str], typer.Option("--dask-address", help="Use a running Dask scheduler (tcp://HOST:PORT) instead of a LocalCluster.")]
Threads = Annotated[Optional[int], typer.Option("--threads-per-worker", help="Threads per local Dask worker \\[default: 1].")]
Memory = Annotated[Optional[str], typer.Option("--memory-limit", help="Memory limit per local Dask worker, e.g. 4GiB \\[default: auto].")]
Segment = Annotated[Optional[float], typer.Option("--segment", help="Cut every file into windows of this many seconds, each clustered (long recordings); predictions give each window's start and end \\[default: one clip per file].")]
Hop = Annotated[Optional[float], typer.Option("--hop", help="Seconds between window starts \\[default: --segment, windows side by side].")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show every log line as the libraries write it: Prefect's run log, TensorFlow's start-up lines, library warnings (as AUDIOCLUST_LOG_LEVEL=DEBUG; INFO: Prefect's run log only).")]


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


@contextmanager
def _reported():
    """A :class:`flows.runs.CommandError` inside is one error line and its exit status."""
    try:
        yield
    except CommandError as exc:
        progress.deactivate()  # the bars go before the line
        _fail(str(exc), exc.code)


def _quiet(verbose: bool, default: str = "NOTES") -> str:
    """Set up the terminal (:mod:`flows.terminal`) before Prefect, Dask or TensorFlow are imported."""
    level = terminal.log_level(verbose)
    level = default if level == "NOTES" else level
    terminal.quiet(level, err, takeover=_executable)
    return level


@contextmanager
def _running(verbose: bool, command: str):
    """A command that runs a flow: a quiet terminal, its stages' progress on stderr, errors as one line."""
    level = _quiet(verbose)
    progress.activate(progress.RichReporter(err, live=level != "DEBUG", title=f"audioclust {command}"))
    try:
        with _reported():
            yield
    finally:
        progress.deactivate()


def _print_scores(scores: dict, title: str) -> None:
    """The scores table (one row per split) and the NMI line, when there are scores."""
    if not scores:
        return
    table = Table(title=title)
    for col in ("split", "clips", "NMI", "AMI", "ARI", "ACC"):
        table.add_column(col, justify="right")
    for split, s in scores.items():
        table.add_row(split, str(s["n"]), f"{s['nmi']:.4f}", f"{s['ami']:.4f}", f"{s['ari']:.4f}", f"{s['acc']:.4f}")
    console.print(table)
    console.print(f"NMI {scores['all']['nmi']:.4f}")


def _print_result(metrics: dict, seconds: float) -> None:
    _print_scores(metrics["scores"], f"audioclust: {metrics['stored']} clips clustered into k = {metrics['k']}")
    if metrics.get("k_auto"):
        from tasks.report import k_picked

        console.print(f"k = {metrics['k']}, {k_picked(metrics)}", soft_wrap=True)
    timings = metrics.get("timings") or {}
    cached = [what for what, key in (("the network", "train_cached"), ("the clustering", "cluster_cached")) if timings.get(key)]
    console.print(
        f"found {metrics['found']}, stored {metrics['stored']}, rejected {metrics['rejected']} "
        f"(see {metrics['rejects_file']}); "
        + (f"{metrics['epochs']} epochs on {metrics['device']}; " if metrics.get("device") else "no network; ")
        + (f"reused from the last run in this folder: {' and '.join(cached)}; " if cached else "")
        + f"{seconds:.0f} s",
        soft_wrap=True,  # one line whatever the terminal's width: easy to grep
    )
    console.print(f"predictions: {metrics['predictions']}\nreport:      {metrics['report']}", soft_wrap=True)
    most = (metrics.get("preprocess") or {}).get("commonest_reject")  # set by the pipeline when over half are rejected
    if most:
        err.print(f"[yellow]warning:[/] {metrics['rejected']} of {metrics['found']} files were rejected, most as {most}: "
                  "is the preset right for this corpus? (see the rejects file)", highlight=False, soft_wrap=True)
    pre = metrics.get("preprocess") or {}
    if pre.get("ignored_files"):  # long files read as one clip: say how much audio that left out
        err.print(f"[yellow]warning:[/] {pre['ignored_files']} files are longer than the clip: {pre['ignored_s']:.0f} s of their "
                  "audio was not read (listed in the rejects file); --segment SECONDS clusters every window of them",
                  highlight=False, soft_wrap=True)


@app.command()
def run(
    input_dir: Input,
    labels: Labels = None,
    label_column: LabelColumn = "label",
    k: K = None,
    k_min: KMin = None,
    k_max: KMax = None,
    preset: Preset = None,
    config: ConfigFile = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Zarr store path \\[default: OUT/store.zarr].")] = None,
    out: Annotated[Path, typer.Option("--out", help="Run folder: model, predictions, metrics, plots.")] = Path("runs/latest"),
    epochs: Epochs = None,
    features: Features = None,
    cluster: Cluster = None,
    seed: Seed = None,
    n_workers: Workers = None,
    threads_per_worker: Threads = None,
    memory_limit: Memory = None,
    dask_address: Address = None,
    segment: Segment = None,
    hop: Hop = None,
    verbose: Verbose = False,
) -> None:
    """Preprocess, train, encode and cluster INPUT; print scores when labels are given.

    Preprocessing is incremental: re-running on the same folder and store only processes new or changed files.
    Every other setting can be given in a --config TOML file ([section] key = value) or as
    AUDIOCLUST_<SECTION>__<KEY> in the environment (docs/architecture.md#configuration).
    """
    t0 = time.perf_counter()
    with _running(verbose, "run"):
        metrics = runs.run_pipeline(
            input_dir, labels, out, store, label_column,
            preset=preset, file=config, k=k, k_min=k_min, k_max=k_max, epochs=epochs, features=features, cluster=cluster, seed=seed,
            n_workers=n_workers, dask_address=dask_address, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
            segment=segment, hop=hop,
        )
    _print_result(metrics, time.perf_counter() - t0)


@app.command()
def assign(
    input_dir: Input,
    model: Annotated[Path, typer.Option("--model", help="A finished run folder (the --out of `audioclust run`).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="CSV to write (file, start, end, cluster, confidence, farther_than, reason) \\[default: print to the terminal].")] = None,
    local: Annotated[Optional[bool], typer.Option("--local/--dask", help=f"In this process, with a progress bar, or as a Prefect flow fanning batches of 256 files out on Dask \\[default: local up to {LOCAL_ASSIGN_MAX} files; --n-workers or --dask-address mean --dask].")] = None,
    n_workers: Workers = None,
    dask_address: Address = None,
    verbose: Verbose = False,
) -> None:
    """Put the clips under INPUT into the clusters of a finished run, without retraining.

    Each clip is processed exactly as the run's clips were (audio settings, encoder, feature transform,
    centroids, or clustering head). Files that cannot be used get cluster -1 and the reason. confidence is
    the probability of the clip's cluster (as in the run's predictions.csv). farther_than is the share of the
    run's clips that lie closer to their cluster's centre than the new clip lies to its own: near 1, the
    clip is unlike anything the run clustered (blank for IDEC runs).
    """
    with _running(verbose, "assign"):
        from flows.assign import assign_files

        counts = assign_files(input_dir, model, out, local, n_workers, dask_address, print_line=_print_row)
    err.print(f"{counts['files']} files: {counts['assigned']} assigned, {counts['rejected']} rejected" + (f" -> {out}" if out else ""))


def _print_row(line: str) -> None:
    """A line of ``assign``'s rows, on stdout (the bars, on stderr, are done: they stop first)."""
    progress.deactivate()
    console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def preprocess(
    input_dir: Input,
    store: Annotated[str, typer.Option("--store", help="Zarr store path or URL; created, or updated incrementally.")],
    labels: Labels = None,
    label_column: LabelColumn = "label",
    preset: Preset = None,
    config: ConfigFile = None,
    n_workers: Workers = None,
    threads_per_worker: Threads = None,
    memory_limit: Memory = None,
    dask_address: Address = None,
    segment: Segment = None,
    hop: Hop = None,
    verbose: Verbose = False,
) -> None:
    """Only preprocess INPUT into a store: spectrogram images and blocks, with a manifest and rejects."""
    with _running(verbose, "preprocess"):
        result = runs.preprocess(input_dir, store, labels, label_column, preset=preset, file=config, n_workers=n_workers,
                                 dask_address=dask_address, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
                                 segment=segment, hop=hop)
    same = f" ({result['unchanged']} with the same content, not decoded)" if result["unchanged"] else ""
    console.print(
        f"{result['found']} files: {result['stored']} stored, {result['rejected']} rejected "
        f"({result['new']} new, {result['changed']} changed{same}, {result['removed']} removed; "
        f"{result['processed_chunks']} chunks processed) -> {store}"
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the synthetic corpus and the run go.")] = Path("runs/demo"),
    per_family: Annotated[int, typer.Option("--per-family", help="Clips per sound family (8 families).")] = 12,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Preset for the demo run (seed takes hours on a CPU) \\[default: default].")] = None,
    config: ConfigFile = None,
    k: Annotated[Optional[str], typer.Option("--k", help="Number of clusters, or auto: chosen from the data.")] = "auto",
    epochs: Epochs = None,
    n_workers: Workers = None,
    verbose: Verbose = False,
) -> None:
    """Synthesize a labelled corpus of 8 sound families, choose k and cluster it (the default preset), printing the chosen k and NMI."""
    _quiet(verbose)
    with _reported():
        clips = runs.check_demo(out, per_family)
    console.print(f"synthesizing {clips} clips of {clips // per_family} sound families under {out / 'corpus'}")
    t0 = time.perf_counter()
    with _running(verbose, "demo"):
        metrics = runs.run_demo(out, per_family, preset=preset, file=config, epochs=epochs, n_workers=n_workers, k=k)
    _print_result(metrics, time.perf_counter() - t0)
    console.print(f"open {metrics['report']} in a browser: listen to every cluster, and to any clip of the map", soft_wrap=True)


@app.command()
def sweep(
    input_dir: Input,
    grid: Annotated[Path, typer.Option("--grid", help="TOML grid file (see deploy/sweep-small.toml and deploy/sweep-report.toml).")],
    labels: Labels = None,
    label_column: LabelColumn = "label",
    out: Annotated[Path, typer.Option("--out", help="Sweep folder: stores, one run folder per experiment, results, figures, report.html.")] = Path("runs/sweep"),
    k: Annotated[Optional[int], typer.Option("--k", help="Number of clusters for every experiment (overrides the grid file).")] = None,
    n_workers: Workers = None,
    dask_address: Address = None,
    verbose: Verbose = False,
) -> None:
    """Run one experiment per grid point (x seed); write results.csv/.parquet, the report's figures and report.html."""
    with _running(verbose, "sweep"):
        rows = runs.sweep(input_dir, grid, labels, label_column, out, k, n_workers, dask_address)
    table = Table(title=f"sweep: {len(rows)} experiments")
    for col in ("run", "name", "NMI", "AMI", "ACC", "epochs", "status"):
        table.add_column(col)
    for r in rows:
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        table.add_row(str(r["run"]), r["name"], fmt(r["nmi"]), fmt(r["ami"]), fmt(r["acc"]), str(r["epochs"]), r["status"][:40])
    console.print(table)
    console.print(f"results: {out / 'results.csv'}, {out / 'results.parquet'}\nreport:  {out / 'report.html'}")


@app.command()
def serve(
    input_dir: Input,
    labels: Labels = None,
    out: Annotated[str, typer.Option("--out", help="Run folder.")] = "runs/served",
    store: Annotated[Optional[str], typer.Option("--store", help="Zarr store \\[default: OUT/store.zarr].")] = None,
    label_column: LabelColumn = "label",
    preset: Preset = None,
    config: ConfigFile = None,
    k: K = None,
    cron: Annotated[Optional[str], typer.Option("--cron", help="Run on this cron schedule (UTC), e.g. '0 2 * * *'.")] = None,
    watch: Annotated[Optional[int], typer.Option("--watch", help="Every N seconds, run only if INPUT has new, changed or removed files.")] = None,
    verbose: Verbose = False,
) -> None:
    """Serve the pipeline on a schedule from this process (needs a Prefect server: PREFECT_API_URL).

    --config and --k become the runs' overrides, read now (a field set by an AUDIOCLUST_* variable
    keeps the variable's value: environment over file, as for `run`).
    """
    _quiet(verbose, default="INFO")  # a service: Prefect's log of each run, without TensorFlow's lines
    with _reported():
        runs.serve(input_dir, labels, out, store, label_column, preset, config, k, cron, watch)


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run folder (the --out of `audioclust run`).")],
    labels: Annotated[str, typer.Option("--labels", help="CSV with a 'file' column and the label column; files named by relative path or by name.")],
    label_column: LabelColumn = "label",
    split_seed: Annotated[Optional[int], typer.Option("--split-seed", min=0, help="Seed of the public/private split \\[default: the run's].")] = None,
) -> None:
    """Score a finished run's clusters against labels, without running anything again.

    For another label column (fsdd's speaker beside its digit) or another labels file: prints the
    scores table as `run` does and writes RUN/scores-COLUMN.json (replacing an earlier scoring of
    that column). The run's metrics.json and report.html stay as they are.
    """
    from flows.score import score_run

    with _reported():
        result = score_run(run_dir, labels, label_column, split_seed)
    _print_scores(result["scores"], f"{run_dir}: {result['labelled']} of {result['clips']} clustered clips labelled in '{label_column}'")
    console.print(f"scores: {result['file']}", soft_wrap=True)


@app.command()
def verify(store: Annotated[str, typer.Argument(metavar="STORE", help="Zarr store path or URL.")]) -> None:
    """Check a store end to end: every chunk's checksum, no missing data for stored clips, a consistent manifest."""
    with _reported():
        report = runs.verify(store)
    counts = report["counts"]
    console.print(
        f"{store}: {report['slots']} slots ({counts['ok']} ok, {counts['rejected']} rejected, {counts['pending']} pending, "
        f"{counts['removed']} removed), {report['arrays']} arrays"
    )
    for p in report["problems"]:
        err.print(f"[red]problem:[/] {p}", highlight=False)
    if report["problems"]:
        raise typer.Exit(1)
    console.print("[green]ok[/]: every chunk read and checked")


def main() -> None:  # console-script entry point
    global _executable
    _executable = True
    try:
        app()
    except KeyboardInterrupt:
        progress.deactivate()
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
