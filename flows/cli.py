"""audioclust: cluster a folder of audio clips with a convolutional network and K-Means (a consensus of K-Means runs by default, or IDEC)."""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help=__doc__ + "\n\nRuns are Prefect flows with preprocessing and encoding fanned out on Dask. "
    "Without PREFECT_API_URL a local Prefect API is started for the run; set it to watch runs in your dashboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

PresetOpt = typer.Option(None, "--preset", help="Named preset: seed (the report exactly), default (our best), fast (tests) \\[default: AUDIOCLUST_PRESET, else the --config file's, else default].")
ConfigOpt = typer.Option(None, "--config", help="TOML file of config fields (overrides the preset).")
KOpt = typer.Option(None, "--k", help="Number of clusters \\[default: 20].")
EpochsOpt = typer.Option(None, "--epochs", help="Maximum training epochs, or 'auto' for the contrastive objective (overrides the preset).")
FeaturesOpt = typer.Option(None, "--features", help="network (the trained encoder's codes) or mfcc-stats (handcrafted baseline: MFCC and log-Mel mean/std, no network).")
ClusterOpt = typer.Option(None, "--cluster", help="kmeans (the seed and fast presets'); consensus: of 100 K-Means runs on random PCA sub-spaces (the default preset's; with seed or fast also set pca, e.g. AUDIOCLUST_PCA=auto); or idec: a clustering layer trained inside the network (DEC/IDEC), initialized from K-Means.")
SeedOpt = typer.Option(None, "--seed", help="Random seed for training and K-Means \\[default: 0].")
WorkersOpt = typer.Option(None, "--n-workers", help="Local Dask worker processes \\[default: 2].")
AddressOpt = typer.Option(None, "--dask-address", help="Use a running Dask scheduler (tcp://HOST:PORT) instead of a LocalCluster.")
InputArg = typer.Argument(..., metavar="INPUT", help="Folder (or fsspec URL, e.g. s3://bucket/clips) of audio clips (wav, flac, ogg, mp3), searched recursively.")
LabelsOpt = typer.Option(None, "--labels", help="CSV with columns file,label: stored with the clips; a run scores its clusters against them (NMI/AMI/ARI/ACC).")
LabelColumnOpt = typer.Option("label", "--label-column", help="Column of --labels to score against.")
ThreadsOpt = typer.Option(None, "--threads-per-worker", help="Threads per local Dask worker \\[default: 1].")
MemoryOpt = typer.Option(None, "--memory-limit", help="Memory limit per local Dask worker, e.g. 4GiB \\[default: auto].")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask's own INFO chatter; task logs still show


def _checked_config(input_dir: str, labels: Optional[str], label_column: str, build):
    """``build()``'s configuration once INPUT and the labels file check out; a problem is one error line.

    Quiets the libraries afterwards, so every command imports the flows the same way."""
    from flows.config import ConfigError
    from flows.corpus import InputError, check_root, read_labels

    try:
        config = build()
        check_root(str(input_dir))
        if labels:
            read_labels(labels, label_column)
    except (ConfigError, InputError) as exc:
        _fail(str(exc))
    _quiet_libraries()
    return config


def _run_flow(flow, config, **parameters):
    """``flow`` on Dask (flows.runtime); a store that cannot be used, or a flow that ends itself as
    Failed with a message (too few clips for k), is one error line, exit 1."""
    from prefect.exceptions import FailedRun

    from flows.runtime import run_on_dask
    from storage import StoreError

    try:
        return run_on_dask(flow, config, **parameters)
    except (StoreError, FailedRun) as exc:
        _fail(str(exc), code=1)


def _store_writable(store: Optional[str]) -> None:
    """A local store's folder (where the store and its lock file go) can be written: see :func:`_writable`."""
    if store and "://" not in store:
        _writable(Path(store).resolve().parent, "the store's folder")


def _writable(folder: Path | str, what: str) -> None:
    """Create the local folder ``folder`` now and check it can be written: a place that cannot is one
    error line before Prefect and Dask start, not a traceback from inside the flow."""
    if "://" in str(folder):
        return
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        _fail(f"cannot write {what} {folder}: {exc.strerror or exc}")


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


def _run_pipeline(input_dir: str, labels: Optional[str], out: Path, store: Optional[str], label_column: str, **cfg) -> dict:
    from flows.config import load_config

    config = _checked_config(input_dir, labels, label_column, lambda: load_config(**cfg))
    _store_writable(store)
    _writable(out, "the run folder")
    from flows.pipeline import pipeline

    t0 = time.perf_counter()
    metrics = _run_flow(
        pipeline,
        config,
        input_dir=str(input_dir),
        labels=str(labels) if labels else None,
        out=str(out),
        store=store,
        label_column=label_column,
    )
    _print_result(metrics, time.perf_counter() - t0)
    return metrics


@app.command()
def run(
    input_dir: str = InputArg,
    labels: Optional[str] = LabelsOpt,
    label_column: str = LabelColumnOpt,
    k: Optional[int] = KOpt,
    preset: Optional[str] = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    store: Optional[str] = typer.Option(None, "--store", help="Zarr store path \\[default: OUT/store.zarr]."),
    out: Path = typer.Option(Path("runs/latest"), "--out", help="Run folder: model, predictions, metrics, plots."),
    epochs: Optional[str] = EpochsOpt,
    features: Optional[str] = FeaturesOpt,
    cluster: Optional[str] = ClusterOpt,
    seed: Optional[int] = SeedOpt,
    n_workers: Optional[int] = WorkersOpt,
    threads_per_worker: Optional[int] = ThreadsOpt,
    memory_limit: Optional[str] = MemoryOpt,
    dask_address: Optional[str] = AddressOpt,
) -> None:
    """Preprocess, train, encode and cluster INPUT; print scores when labels are given.

    Preprocessing is incremental: re-running on the same folder and store only processes new or changed files.
    Every other config field can be set in a --config TOML file or as AUDIOCLUST_<FIELD> in the environment.
    """
    _run_pipeline(
        input_dir, labels, out, store, label_column,
        preset=preset, file=config, k=k, epochs=epochs, features=features, cluster=cluster, seed=seed,
        n_workers=n_workers, dask_address=dask_address, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
    )


LOCAL_ASSIGN_MAX = 1024  # more files than this go to Dask (a Prefect flow) unless --local


@app.command()
def assign(
    input_dir: str = InputArg,
    model: Path = typer.Option(..., "--model", help="A finished run folder (the --out of `audioclust run`)."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV to write (file, cluster, farther_than, reason) \\[default: print to the terminal]."),
    local: Optional[bool] = typer.Option(None, "--local/--dask", help=f"In this process, with a progress bar, or as a Prefect flow fanning batches of 256 files out on Dask \\[default: local up to {LOCAL_ASSIGN_MAX} files; --n-workers or --dask-address mean --dask]."),
    n_workers: Optional[int] = WorkersOpt,
    dask_address: Optional[str] = AddressOpt,
) -> None:
    """Put the clips under INPUT into the clusters of a finished run, without retraining.

    Each clip is processed exactly as the run's clips were (audio settings, encoder, feature transform,
    centroids). Files that cannot be used get cluster -1 and the reason. farther_than is the share of the
    run's clips that lie closer to their cluster's centre than the new clip lies to its own: near 1, the
    clip is unlike anything the run clustered (blank for IDEC runs).
    """
    from flows.config import load_config
    from flows.corpus import is_url, join, scan

    if local and (n_workers is not None or dask_address is not None):
        _fail("--local runs in this process: drop --n-workers/--dask-address, or use --dask")
    config = _checked_config(input_dir, None, "label", lambda: load_config(n_workers=n_workers, dask_address=dask_address))
    from tasks.assign import ROW_FIELDS, RunError, assign as assign_files, load_run

    try:
        load_run(model)
    except RunError as exc:
        _fail(str(exc))
    head = list(islice(scan(input_dir), LOCAL_ASSIGN_MAX + 1))  # enough of the listing to choose
    if local is None:
        local = len(head) <= LOCAL_ASSIGN_MAX and n_workers is None and dask_address is None
    if out:
        _writable(out.parent, "the folder of --out")
    if local:
        from rich.progress import Progress

        entries = head if len(head) <= LOCAL_ASSIGN_MAX else list(scan(input_dir))
        with Progress(console=err, transient=True) as bar:
            job = bar.add_task("assigning", total=len(entries))
            rows = assign_files(((e.path, join(input_dir, e.path)) for e in entries), model,
                                progress=lambda n: bar.advance(job, n))
        if out:
            with open(out, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=ROW_FIELDS)
                w.writeheader()
                w.writerows(rows)
        else:
            _print_assigned(rows)
        rejected = sum(r["cluster"] < 0 for r in rows)
        counts = {"files": len(rows), "assigned": len(rows) - rejected, "rejected": rejected}
    else:
        from flows.assign import assign_flow

        # the flow streams its rows into a CSV (ours, or a temporary one to print)
        if out:
            target = out.resolve()
        else:
            fd, name = tempfile.mkstemp(prefix="audioclust-assign-", suffix=".csv")
            os.close(fd)
            target = Path(name)
        try:
            # absolute paths: the workers of a --dask-address cluster may run in another directory
            root = input_dir if is_url(input_dir) else str(Path(input_dir).resolve())
            counts = _run_flow(assign_flow, config, input_dir=root, model=str(model.resolve()), out=str(target))
            if not out:
                with open(target, newline="") as fh:
                    _print_assigned(csv.DictReader(fh))
        finally:
            if not out:
                target.unlink(missing_ok=True)
    err.print(f"{counts['files']} files: {counts['assigned']} assigned, {counts['rejected']} rejected" + (f" -> {out}" if out else ""))


def _print_assigned(rows) -> None:
    """Rows of ``assign`` to the terminal, tab-separated under a header: file, cluster, farther_than, reason."""
    from tasks.assign import ROW_FIELDS

    console.print("\t".join(ROW_FIELDS), highlight=False)
    for r in rows:
        console.print("\t".join(str(r[k]) for k in ROW_FIELDS), highlight=False, soft_wrap=True)


@app.command()
def preprocess(
    input_dir: str = InputArg,
    store: str = typer.Option(..., "--store", help="Zarr store path or URL; created, or updated incrementally."),
    labels: Optional[str] = LabelsOpt,
    label_column: str = LabelColumnOpt,
    preset: Optional[str] = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    n_workers: Optional[int] = WorkersOpt,
    threads_per_worker: Optional[int] = ThreadsOpt,
    memory_limit: Optional[str] = MemoryOpt,
    dask_address: Optional[str] = AddressOpt,
) -> None:
    """Only preprocess INPUT into a store: spectrogram images and blocks, with a manifest and rejects."""
    from flows.config import load_config

    cfg = _checked_config(input_dir, labels, label_column, lambda: load_config(
        preset=preset, file=config, n_workers=n_workers, dask_address=dask_address,
        threads_per_worker=threads_per_worker, memory_limit=memory_limit))
    from flows.pipeline import preprocess_flow

    _store_writable(store)
    result = _run_flow(preprocess_flow, cfg, input_dir=input_dir, store=store, labels=labels, label_column=label_column)
    same = f" ({result['unchanged']} with the same content, not decoded)" if result["unchanged"] else ""
    console.print(
        f"{result['found']} files: {result['stored']} stored, {result['rejected']} rejected "
        f"({result['new']} new, {result['changed']} changed{same}, {result['removed']} removed; "
        f"{result['processed_chunks']} chunks processed) -> {store}"
    )


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the synthetic corpus and the run go."),
    per_family: int = typer.Option(12, "--per-family", help="Clips per sound family (8 families)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset for the demo run (seed takes hours on a CPU) \\[default: fast]."),
    config: Optional[Path] = ConfigOpt,
    epochs: Optional[str] = EpochsOpt,
    n_workers: Optional[int] = WorkersOpt,
) -> None:
    """Synthesize a labelled corpus of 8 sound families and cluster it (k = 8), printing NMI."""
    from tasks.synth import FAMILIES, make_corpus

    if per_family < 2:
        _fail("--per-family must be at least 2")
    _writable(out, "the demo folder")
    console.print(f"synthesizing {per_family * len(FAMILIES)} clips of {len(FAMILIES)} sound families under {out / 'corpus'}")
    audio, labels = make_corpus(out / "corpus", per_family=per_family)
    _run_pipeline(
        str(audio), str(labels), out / "run", None, "label",
        preset=preset, fallback="fast", file=config, k=len(FAMILIES), epochs=epochs, n_workers=n_workers,
    )


@app.command()
def sweep(
    input_dir: str = InputArg,
    grid: Path = typer.Option(..., "--grid", help="TOML grid file (see deploy/sweep-small.toml and deploy/sweep-report.toml)."),
    labels: Optional[str] = LabelsOpt,
    label_column: str = LabelColumnOpt,
    out: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep folder: stores, one run folder per experiment, results, figures, report.html."),
    k: Optional[int] = typer.Option(None, "--k", help="Number of clusters for every experiment (overrides the grid file)."),
    n_workers: Optional[int] = WorkersOpt,
    dask_address: Optional[str] = AddressOpt,
) -> None:
    """Run one experiment per grid point (x seed); write results.csv/.parquet, the report's figures and report.html."""
    from flows.config import load_config
    from flows.sweep import load_grid

    spec: dict = {}

    def build():
        spec.update(load_grid(grid))
        if k is not None:
            spec["overrides"]["k"] = k
        return load_config(spec["preset"], fallback="fast", **spec["overrides"], n_workers=n_workers, dask_address=dask_address)

    base = _checked_config(input_dir, labels, label_column, build)
    from flows.runtime import run_on_dask
    from flows.sweep import sweep as sweep_flow

    rows = run_on_dask(sweep_flow, base, input_dir=input_dir, grid=spec, out=str(out), labels=labels, label_column=label_column)
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
    input_dir: str = InputArg,
    labels: Optional[str] = LabelsOpt,
    out: str = typer.Option("runs/served", "--out", help="Run folder."),
    store: Optional[str] = typer.Option(None, "--store", help="Zarr store \\[default: OUT/store.zarr]."),
    label_column: str = LabelColumnOpt,
    preset: Optional[str] = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    k: Optional[int] = KOpt,
    cron: Optional[str] = typer.Option(None, "--cron", help="Run on this cron schedule (UTC), e.g. '0 2 * * *'."),
    watch: Optional[int] = typer.Option(None, "--watch", help="Every N seconds, run only if INPUT has new, changed or removed files."),
) -> None:
    """Serve the pipeline on a schedule from this process (needs a Prefect server: PREFECT_API_URL).

    --config and --k become the runs' overrides, read now (a field set by an AUDIOCLUST_* variable
    keeps the variable's value: environment over file, as for `run`).
    """
    from flows.config import ConfigError, _env_values, config_file_fields, load_config

    if (cron is None) == (watch is None):
        _fail("give exactly one of --cron or --watch SECONDS")
    if watch is not None and watch < 1:
        _fail("--watch takes a number of seconds >= 1")
    overrides: dict = {}
    try:
        if config is not None:
            overrides = config_file_fields(config)
        env = _env_values()
        preset = preset or env.get("preset") or overrides.get("preset") or "default"  # load_config's ranking
        overrides = {name: v for name, v in overrides.items() if name != "preset" and name not in env}
    except ConfigError as exc:
        _fail(str(exc))
    if k is not None:
        overrides["k"] = k
    _checked_config(input_dir, None, label_column, lambda: load_config(preset, **overrides))  # labels are read by each run
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        _fail("serve needs a Prefect server: run `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api")
    from flows.deployments import cluster_corpus, corpus_name, watch_corpus

    params = {"input_dir": input_dir, "labels": labels, "out": out, "store": store, "preset": preset,
              "overrides": overrides, "label_column": label_column}
    name = f"{corpus_name(input_dir)}-{'watch' if watch else 'scheduled'}"
    if watch:
        watch_corpus.serve(name=name, interval=watch, parameters=params, tags=["audioclust", "watch"])
    else:
        cluster_corpus.serve(name=name, cron=cron, parameters=params, tags=["audioclust"])


@app.command()
def score(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="A finished run folder (the --out of `audioclust run`)."),
    labels: str = typer.Option(..., "--labels", help="CSV with a 'file' column and the label column; files named by relative path or by name."),
    label_column: str = LabelColumnOpt,
    split_seed: Optional[int] = typer.Option(None, "--split-seed", min=0, help="Seed of the public/private split \\[default: the run's]."),
) -> None:
    """Score a finished run's clusters against labels, without running anything again.

    For another label column (fsdd's speaker beside its digit) or another labels file: prints the
    scores table as `run` does and writes RUN/scores-COLUMN.json (replacing an earlier scoring of
    that column). The run's metrics.json and report.html stay as they are.
    """
    import json

    from flows.corpus import InputError, label_lookup, read_labels
    from tasks.metrics import score_predictions
    from tasks.report import read_predictions

    predictions = run_dir / "predictions.csv"
    if not predictions.is_file():
        _fail(f"{run_dir} is not a finished run folder: no predictions.csv")
    _writable(run_dir, "run folder")
    try:
        label_of = label_lookup(read_labels(labels, label_column))
    except InputError as exc:
        _fail(str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read labels file {labels}: {exc}")
    if split_seed is None:  # the run's own split (runs from before the config was recorded used 0)
        try:
            run_metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
            split_seed = int(((run_metrics or {}).get("config") or {}).get("split_seed", 0))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            _fail(f"cannot read the run's split seed from {run_dir / 'metrics.json'} ({exc}); give --split-seed")
    try:
        result = score_predictions(read_predictions(predictions), label_of, split_seed)
    except (KeyError, ValueError, TypeError, OSError) as exc:  # a predictions.csv not written by a run
        _fail(f"cannot read {predictions} (columns file,cluster expected): {exc!r}")
    if not result["clips"]:
        _fail(f"{predictions} lists no clips", code=1)
    if result["labelled"] < 2:
        _fail(f"{result['labelled']} of the {result['clips']} clustered files has a label in column '{label_column}' of {labels}: "
              "nothing to score", code=1)
    result.update(run=str(run_dir), labels_file=labels, label_column=label_column, split_seed=split_seed)
    out = run_dir / f"scores-{_file_name_part(label_column)}.json"
    out.write_text(json.dumps(result, indent=1))
    _print_scores(result["scores"], f"{run_dir}: {result['labelled']} of {result['clips']} clustered clips labelled in '{label_column}'")
    console.print(f"scores: {out}", soft_wrap=True)


def _file_name_part(text: str) -> str:
    """``text`` as part of a file name: itself when it is made of letters, digits, - and _; otherwise
    those characters with a short hash of the whole, so that "x y" and "x_y" do not share a file."""
    import hashlib

    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)
    return safe if safe == text and text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@app.command()
def verify(store: str = typer.Argument(..., metavar="STORE", help="Zarr store path or URL.")) -> None:
    """Check a store end to end: every chunk's checksum, no missing data for stored clips, a consistent manifest."""
    from storage import Store, StoreError

    try:
        st = Store.open(store)
    except StoreError as exc:
        _fail(str(exc))
    problems = st.verify()
    counts = st.counts()
    console.print(
        f"{store}: {st.n_clips} slots ({counts['ok']} ok, {counts['rejected']} rejected, {counts['pending']} pending, "
        f"{counts['removed']} removed), {len(list(st.group.array_keys()))} arrays"
    )
    for p in problems:
        err.print(f"[red]problem:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print("[green]ok[/]: every chunk read and checked")


def main() -> None:  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
