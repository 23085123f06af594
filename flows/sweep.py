"""Experiment sweeps: a grid of configurations run on already-preprocessed stores, one subflow each.

A grid file (TOML)::

    [sweep]
    preset = "fast"          # base preset every point starts from
    seeds = [0, 1, 2]        # each grid point runs once per seed
    max_concurrent = 1       # experiments at once (each trains in this process; 1 on a small CPU)
    [sweep.overrides]        # fields fixed for every experiment
    epochs = 20
    [grid]                   # every combination of these is one grid point
    spectrogram = ["mel", "log", "linear"]
    encoder = ["strided", "dense", "pool"]
    batch_size = [4, 16]

Preprocessing runs once per distinct audio setting (e.g. per spectrogram kind) into its own
store; every experiment trains its own model, writes its own codes array in that store, and
clusters them. A failed point is recorded and the others go on.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.context import FlowRunContext, SettingsContext

from flows.config import Config, ConfigError, load_config, read_toml
from flows.pipeline import feature_fingerprint, model_stages, preprocess_stage, resolve_config
from storage.lock import store_lock

SWEEP_FACTORS = ("spectrogram", "encoder", "decoder", "batch_size", "learning_rate", "code_channels", "seed")
METRICS = ("nmi", "ami", "ari", "acc")


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read and check a grid file; unknown fields fail here, before any work."""
    data = read_toml(path, "grid file")
    sweep = data.get("sweep", {})
    grid = data.get("grid", {})
    if not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: [grid] needs at least one field with a non-empty list of values")
    spec = {
        "preset": sweep.get("preset"),  # None: AUDIOCLUST_PRESET, else fast (point_config)
        "seeds": list(sweep.get("seeds", [0])),
        "max_concurrent": int(sweep.get("max_concurrent", 1)),
        "overrides": dict(sweep.get("overrides", {})),
        "grid": grid,
    }
    for point in expand(spec):  # every point must be a valid configuration
        point_config(spec, point)
    return spec


def expand(spec: dict) -> list[dict]:
    keys = list(spec["grid"])
    points = []
    for values in itertools.product(*(spec["grid"][k] for k in keys)):
        for seed in spec["seeds"]:
            points.append({**dict(zip(keys, values)), "seed": seed})
    return points


def point_config(spec: dict, point: dict) -> Config:
    return load_config(spec["preset"], fallback="fast", **{**spec["overrides"], **point})


def _name(i: int, point: dict) -> str:
    return f"e{i:03d}-" + "-".join(f"{v}" for k, v in point.items())[:60].replace(".", "p").replace("/", "_")


@flow(name="audioclust-experiment", flow_run_name="experiment-{name}")
def experiment(name: str, store: str, out: str, config: Config) -> dict:
    """Train, encode (into this experiment's own codes array) and cluster, on a preprocessed store."""
    timings: dict = {}
    metrics, trained = model_stages(store, Path(out), config, timings, codes=f"codes_{name}")
    metrics.update(epochs=trained["epochs"], train_seconds=trained["train_seconds"], timings=timings)
    return metrics


def _row(i: int, name: str, point: dict, metrics: dict | None, error: str | None, seconds: float) -> dict:
    row: dict[str, Any] = {"run": i, "name": name, **{k: point.get(k) for k in point}}
    scores = (metrics or {}).get("scores", {})
    for split in ("all", "public", "private"):
        for m in METRICS:
            key = m if split == "all" else f"{m}_{split}"
            row[key] = scores.get(split, {}).get(m)
    row.update(
        epochs=(metrics or {}).get("epochs"),
        train_seconds=(metrics or {}).get("train_seconds"),
        seconds=round(seconds, 1),
        status="completed" if error is None else f"failed: {error}"[:300],
    )
    return row


@flow(name="audioclust-sweep", flow_run_name="sweep")
def sweep(input_dir: str, grid: dict, out: str, labels: str | None = None, label_column: str = "label", config: Config | None = None) -> list[dict]:
    """Run every grid point (x seed) as an experiment subflow; write results.csv/.parquet, figures and report.html."""
    from prefect_dask import DaskTaskRunner

    logger = get_run_logger()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = expand(grid)
    configs = [point_config(grid, p) for p in points]
    logger.info("sweep: %d experiments (%d grid points x %d seeds)", len(points), len(points) // len(grid["seeds"]), len(grid["seeds"]))

    # one store per distinct audio setting, preprocessed once (incrementally) under its lock
    stores: dict[str, str] = {}
    for cfg in configs:
        fp = feature_fingerprint(input_dir, cfg)
        if fp not in stores:
            stores[fp] = str(out_dir / "stores" / f"{cfg.audio.spectrogram}-{fp[:8]}.zarr")
            with store_lock(stores[fp], f"sweep {out_dir}"):
                preprocess_stage(input_dir, stores[fp], cfg, labels, label_column)
    configs = [resolve_config(input_dir, stores[feature_fingerprint(input_dir, c)], c, labels) for c in configs]

    address = FlowRunContext.get().task_runner.client.scheduler.address
    runner = DaskTaskRunner(address=address)
    # A thread starts with an empty context, so Prefect there falls back to its import-time settings:
    # an API URL set in code (temporary_settings) was lost and experiments went to a temporary server.
    settings = SettingsContext.get()

    def run_one(i: int):
        point, cfg = points[i], configs[i]
        name = _name(i, point)
        t = time.perf_counter()
        try:
            with SettingsContext(profile=settings.profile, settings=settings.settings):
                metrics = experiment.with_options(task_runner=runner)(
                    name=name, store=stores[feature_fingerprint(input_dir, cfg)], out=str(out_dir / "runs" / name), config=cfg
                )
            return _row(i, name, point, metrics, None, time.perf_counter() - t)
        except Exception as exc:  # one failed point does not stop the sweep
            logger.warning("experiment %s failed: %s", name, exc)
            return _row(i, name, point, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t)

    with ThreadPoolExecutor(max_workers=max(1, grid["max_concurrent"])) as pool:
        rows = list(pool.map(run_one, range(len(points))))
    write_results(rows, out_dir)
    figures = sweep_figures(rows, out_dir, input_dir, configs[0])
    sweep_report(rows, grid, figures, out_dir)
    create_table_artifact(table=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                          key="audioclust-sweep-results", description="One row per experiment")
    create_link_artifact(key="audioclust-sweep-report", link=(out_dir / "report.html").resolve().as_uri(), link_text="report.html")
    return rows


def write_results(rows: list[dict], out_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    table = pa.Table.from_pylist([{c: (None if r.get(c) is None else r.get(c)) for c in columns} for r in rows])
    pq.write_table(table, out_dir / "results.parquet")


def sweep_figures(rows: list[dict], out_dir: Path, input_dir: str, config: Config) -> list[Path]:
    """The report's Figures 3-9 for this sweep (those whose factor varied, plus 3, 8 and 9)."""
    from flows.corpus import join, scan
    from tasks.audio import Rejected, load_clip
    from tasks.figures import progression, score_by, spectrogram_kinds
    from tasks.plots import plot_loss

    figs = out_dir / "figures"
    figs.mkdir(exist_ok=True)
    made = []
    for entry in scan(input_dir):  # Figure 3: the first usable clip
        try:
            y, _ = load_clip(join(input_dir, entry.path), config.audio)
        except Rejected:
            continue
        made.append(spectrogram_kinds(y, config.audio, figs / "fig3_spectrogram_kinds.png", f"Spectrogram kinds: {entry.path}"))
        break
    done = [r for r in rows if r["status"] == "completed" and r.get("nmi") is not None]
    for number, factor in ((4, "spectrogram"), (5, "encoder"), (6, "decoder"), (7, "batch_size"), (None, "learning_rate"), (None, "code_channels")):
        if done and factor in done[0] and len({r[factor] for r in done}) > 1:
            stem = f"fig{number}_nmi_by_{factor}" if number else f"nmi_by_{factor}"
            made.append(score_by(done, factor, figs / f"{stem}.png"))
    if done:
        best = max(done, key=lambda r: r["nmi"])
        history = out_dir / "runs" / best["name"] / "model" / "history.json"
        if history.is_file():
            made.append(plot_loss(json.loads(history.read_text()), figs / "fig8_loss_best_run.png", f"Training loss of the best run ({best['name']})",
                                  objective=_objective(history.with_name("train.json"))))
    made.append(progression([r.get("nmi") for r in rows], figs / "fig9_nmi_progression.png"))
    return made


def _objective(train_json: Path) -> str:
    """What a run's network was trained for (its training summary), for the loss figure's labels."""
    try:
        return json.loads(train_json.read_text()).get("objective", "autoencoder")
    except (OSError, ValueError):
        return "autoencoder"


def sweep_report(rows: list[dict], grid: dict, figures: list[Path], out_dir: Path) -> Path:
    from tasks.figures import html_report, html_table

    cols = ["run", "name", *[k for k in SWEEP_FACTORS if k in rows[0]], "nmi", "ami", "ari", "acc", "nmi_public", "nmi_private", "epochs", "train_seconds", "status"]
    sections = [
        ("Grid", f"<pre>{json.dumps({k: grid[k] for k in ('preset', 'seeds', 'max_concurrent', 'overrides', 'grid')}, indent=1)}</pre>"),
        ("Results (one row per experiment)", html_table(rows, [c for c in cols if any(c in r for r in rows)])),
    ]
    return html_report(f"audioclust sweep: {len(rows)} experiments", sections, figures, out_dir / "report.html")
