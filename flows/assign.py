"""``audioclust assign`` at scale: new clips into a finished run's clusters, batches fanned out on Dask.

The same work as :func:`tasks.assign.assign` in one process, one task per ``batch`` files of
the listing. The flow process streams: it reads the listing only as batches go out, and writes
the rows to the CSV in listing order as batches come back. Batches in flight and batches
waiting for an earlier one share one window, so it holds a window of batches, never the whole
corpus or the whole result.
"""

from __future__ import annotations

import csv
from itertools import islice
from pathlib import Path

from prefect import flow, get_run_logger

from flows.config import Config
from flows.corpus import join, scan
from flows.pipeline import run_windowed
from tasks.assign import ROW_FIELDS, assign_task, load_run


class OrderedRows:
    """A ``file,cluster,farther_than,reason`` CSV written in listing order from batches that arrive in any order.

    A batch is known by the listing position of its first file; one that arrives early waits
    in memory until the batches before it are written. A failed batch is skipped (its files
    get no row; the flow fails at the end)."""

    def __init__(self, path: str | Path):
        self._fh = open(path, "w", newline="")
        self._out = csv.DictWriter(self._fh, fieldnames=ROW_FIELDS)
        self._out.writeheader()
        self._next, self._early = 0, {}
        self.rows = self.rejected = 0

    def add(self, start: int, n: int, rows: list[dict] | None) -> None:
        self._early[start] = (n, rows)
        while self._next in self._early:
            n, rows = self._early.pop(self._next)
            for r in rows or ():
                self._out.writerow(r)
                self.rows += 1
                self.rejected += r["cluster"] < 0
            self._next += n

    def held(self) -> int:
        """Batches that came back before an earlier one, waiting here."""
        return len(self._early)

    def close(self) -> None:
        self._fh.close()


def listing_batches(input_dir: str, batch: int):
    """``(start, [(name, path), ...])`` for consecutive ``batch``-sized slices of the listing, read lazily."""
    entries, start = scan(input_dir), 0
    while part := list(islice(entries, batch)):
        yield start, [(e.path, join(input_dir, e.path)) for e in part]
        start += len(part)


@flow(name="audioclust-assign", flow_run_name="assign")
def assign_flow(config: Config, input_dir: str, model: str, out: str, batch: int = 256) -> dict:
    """Cluster of every file under ``input_dir`` by the finished run ``model``, written to the CSV ``out``
    (``file,cluster,farther_than,reason``, in listing order); returns ``{"files", "assigned", "rejected", "out"}``."""
    load_run(model)  # a run folder that cannot be used fails here, not in every task
    get_run_logger().info("assigning the files under %s in batches of up to %d", input_dir, batch)
    writer = OrderedRows(out)
    try:
        run_windowed(
            lambda b: assign_task.submit(b[1], model, b[0], b[0] + len(b[1])),
            listing_batches(input_dir, batch), config.max_in_flight, "assign",
            on_result=lambda b, part: writer.add(b[0], len(b[1]), part["rows"]),
            on_failure=lambda b, exc: writer.add(b[0], len(b[1]), None),
            held=writer.held,
        )
    finally:
        writer.close()
    return {"files": writer.rows, "assigned": writer.rows - writer.rejected, "rejected": writer.rejected, "out": str(out)}
