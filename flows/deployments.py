"""Flows for operators: scheduled runs and a watcher that runs only when the input folder changed.

Both take plain parameters (a preset name and field overrides), so deployments, schedules and
the dashboard's "run" form can set them, and run :func:`flows.pipeline.pipeline` as a subflow
on a Dask task runner built from that configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags

from flows.config import load_config
from flows.corpus import corpus_name, scan
from flows.pipeline import feature_fingerprint, pipeline
from flows.runtime import dask_task_runner, ensure_prefect_api
from storage import Store, StoreError


@flow(name="audioclust-scheduled", flow_run_name="scheduled-{preset}")
def cluster_corpus(
    input_dir: str,
    labels: str | None = None,
    out: str = "runs/scheduled",
    store: str | None = None,
    preset: str = "default",
    overrides: dict[str, Any] | None = None,
    label_column: str = "label",
) -> dict:
    """Run the whole pipeline on ``input_dir`` with a named preset and optional field overrides."""
    config = load_config(preset, **(overrides or {}))
    runner = dask_task_runner(config, ensure_prefect_api())
    with tags(f"corpus:{corpus_name(input_dir)}", f"preset:{config.preset}"):
        return pipeline.with_options(task_runner=runner)(
            input_dir=input_dir, config=config, labels=labels, out=out, store=store, label_column=label_column
        )


@flow(name="audioclust-watch", flow_run_name="watch-{preset}")
def watch_corpus(
    input_dir: str,
    labels: str | None = None,
    out: str = "runs/watched",
    store: str | None = None,
    preset: str = "default",
    overrides: dict[str, Any] | None = None,
    label_column: str = "label",
) -> dict:
    """Run the pipeline only if ``input_dir`` has new, changed or removed files since the store was last synced."""
    logger = get_run_logger()
    config = load_config(preset, **(overrides or {}))
    store_url = store or str(Path(out) / "store.zarr")
    try:
        existing = Store.open(store_url)
        same = existing.attrs.get("fingerprint") == feature_fingerprint(input_dir, config)
        diff = existing.changes(scan(input_dir, exclude=(labels,))) if same else None
    except StoreError:
        diff = None
    if diff is not None and not any(diff.values()):
        logger.info("no new, changed or removed files under %s: nothing to do", input_dir)
        return {"ran": False, **diff}
    logger.info("changes under %s: %s; running the pipeline", input_dir, diff or "no usable store yet")
    metrics = cluster_corpus(input_dir=input_dir, labels=labels, out=out, store=store_url, preset=preset,
                             overrides=overrides, label_column=label_column)
    return {"ran": True, **(diff or {}), "nmi": metrics["scores"].get("all", {}).get("nmi")}
