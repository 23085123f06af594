"""``audioclust assign``: new clips into a finished run's clusters, in this process or fanned out on Dask.

:func:`assign_files` chooses: a small folder is assigned in this process (:func:`tasks.assign.assign`),
a large one by :func:`assign_flow`, the same work as a Prefect flow with one task per ``batch``
files of the listing. The flow process streams: it reads the listing only as batches go out,
and writes the rows to the CSV in listing order as batches come back. Batches in flight and
batches waiting for an earlier one share one window, so it holds a window of batches, never the
whole corpus or the whole result.
"""

from __future__ import annotations

import csv
import os
import tempfile
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Optional

from prefect import flow, get_run_logger

from flows.config import Config
from flows.corpus import is_url, join, scan
from flows.pipeline import run_windowed
from flows.runs import LOCAL_ASSIGN_MAX, CommandError, check_writable, checked_config, run_flow
from tasks import progress
from tasks.assign import ROW_FIELDS, RunError, assign, assign_task, load_run


class OrderedRows:
    """A ``file,start,end,cluster,confidence,farther_than,reason`` CSV written in listing order from batches that arrive in any order.

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
    (``file,start,end,cluster,confidence,farther_than,reason``, in listing order); returns ``{"files", "assigned", "rejected", "out"}``."""
    load_run(model)  # a run folder that cannot be used fails here, not in every task
    get_run_logger().info("assigning the files under %s in batches of up to %d", input_dir, batch)
    writer = OrderedRows(out)
    try:
        run_windowed(
            lambda b: assign_task.submit(b[1], model, b[0], b[0] + len(b[1])),
            listing_batches(input_dir, batch), config.runtime.max_in_flight, "assign",
            on_result=lambda b, part: writer.add(b[0], len(b[1]), part["rows"]),
            on_failure=lambda b, exc: writer.add(b[0], len(b[1]), None),
            held=writer.held,
        )
    finally:
        writer.close()
        progress.done("assign")
    return {"files": writer.rows, "assigned": writer.rows - writer.rejected, "rejected": writer.rejected, "out": str(out)}


def assign_files(input_dir: str, model: Path | str, out: Path | str | None = None, local: Optional[bool] = None,
                 n_workers: Optional[int] = None, dask_address: Optional[str] = None,
                 print_line: Callable[[str], None] = print) -> dict:
    """Assign every clip under ``input_dir`` to a cluster of the finished run ``model``; returns
    ``{"files", "assigned", "rejected"}``.

    The rows go to the CSV ``out`` (file, start, end, cluster, confidence, farther_than, reason), else to ``print_line``,
    tab-separated under a header. ``local``: in this process (True), as a Prefect flow on Dask
    (False), or in this process when there are at most :data:`LOCAL_ASSIGN_MAX` files and neither
    ``n_workers`` nor ``dask_address`` is given (None). Problems the user can fix are one-line
    :class:`flows.runs.CommandError`s, raised before any work.
    """
    from flows.config import load_config

    if local and (n_workers is not None or dask_address is not None):
        raise CommandError("--local runs in this process: drop --n-workers/--dask-address, or use --dask")
    config = checked_config(input_dir, None, "label", lambda: load_config(n_workers=n_workers, dask_address=dask_address))
    try:
        load_run(model)
    except RunError as exc:
        raise CommandError(str(exc)) from None
    head = list(islice(scan(input_dir), LOCAL_ASSIGN_MAX + 1))  # enough of the listing to choose
    if local is None:
        local = len(head) <= LOCAL_ASSIGN_MAX and n_workers is None and dask_address is None
    if out:
        check_writable(Path(out).parent, "the folder of --out")
    if local:
        entries = head if len(head) <= LOCAL_ASSIGN_MAX else list(scan(input_dir))
        progress.start("assign", len(entries), "files")
        rows = assign(((e.path, join(input_dir, e.path)) for e in entries), model, progress=lambda n: progress.advance("assign", n))
        if out:
            with open(out, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=ROW_FIELDS)
                w.writeheader()
                w.writerows(rows)
        else:
            print_rows(rows, print_line)
        rejected = sum(r["cluster"] < 0 for r in rows)
        return {"files": len(rows), "assigned": len(rows) - rejected, "rejected": rejected}
    # the flow streams its rows into a CSV: ``out``, or a temporary one to print
    if out:
        target = Path(out).resolve()
    else:
        fd, name = tempfile.mkstemp(prefix="audioclust-assign-", suffix=".csv")
        os.close(fd)
        target = Path(name)
    try:
        # absolute paths: the workers of a --dask-address cluster may run in another directory
        root = input_dir if is_url(input_dir) else str(Path(input_dir).resolve())
        counts = run_flow(assign_flow, config, input_dir=root, model=str(Path(model).resolve()), out=str(target))
        if not out:
            with open(target, newline="") as fh:
                print_rows(csv.DictReader(fh), print_line)
    finally:
        if not out:
            target.unlink(missing_ok=True)
    return {key: counts[key] for key in ("files", "assigned", "rejected")}


def print_rows(rows: Iterable[dict], print_line: Callable[[str], None]) -> None:
    """Rows of :func:`assign_files`, tab-separated under a header: file, start, end, cluster, confidence, farther_than, reason."""
    print_line("\t".join(ROW_FIELDS))
    for r in rows:
        print_line("\t".join(str(r[k]) for k in ROW_FIELDS))
