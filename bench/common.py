"""Shared helpers for the benchmarks: peak memory sampling and table printing."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class PeakRSS:
    """Samples the RSS of this process and all its children (Dask workers) every 50 ms.

    The list of children is refreshed every 0.5 s: finding them scans every process of the
    machine (about 1 ms here), and at every sample that cost 2 % of a core, taken from the
    workers being measured on a 2-core machine (but from an idle core in the one-process rows).
    """

    REFRESH_S = 0.5

    def __init__(self):
        self.peak_self = 0
        self.peak_child = 0
        self._stop = threading.Event()

    def _sample(self):
        me = psutil.Process()
        children, found = [], 0.0
        while not self._stop.is_set():
            try:
                self.peak_self = max(self.peak_self, me.memory_info().rss)
                if time.monotonic() - found >= self.REFRESH_S:
                    children, found = me.children(recursive=True), time.monotonic()
                for child in children:
                    try:
                        self.peak_child = max(self.peak_child, child.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            time.sleep(0.05)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return max(self.peak_self, self.peak_child) / 2**20


@contextmanager
def timed(results: dict, key: str):
    t = time.perf_counter()
    yield
    results[key] = time.perf_counter() - t


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in r])
    Console(width=160).print(table)
