"""``audioclust assign`` at scale: new clips into a finished run's clusters, batches fanned out on Dask.

The same work as :func:`tasks.assign.assign` in one process, one task per ``batch`` files of
the listing; rows come back in listing order.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.config import Config
from flows.corpus import join, scan
from flows.pipeline import run_windowed
from tasks.assign import assign_task, load_run


@flow(name="audioclust-assign", flow_run_name="assign")
def assign_flow(config: Config, input_dir: str, model: str, batch: int = 256) -> list[dict]:
    """Cluster of every file under ``input_dir`` by the finished run ``model``: rows ``{"file", "cluster", "reason"}``."""
    load_run(model)  # a run folder that cannot be used fails here, not in every task
    files = [(e.path, join(input_dir, e.path)) for e in scan(input_dir)]
    ranges = [(s, min(s + batch, len(files))) for s in range(0, len(files), batch)]
    get_run_logger().info("assigning %d files in %d batches of up to %d", len(files), len(ranges), batch)
    parts = run_windowed(lambda r: assign_task.submit(files[r[0] : r[1]], model, r[0], r[1]), ranges, config.max_in_flight, "assign")
    return [row for part in sorted(parts, key=lambda p: p["start"]) for row in part["rows"]]
