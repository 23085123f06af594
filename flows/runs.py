"""What the commands do, callable from Python: check the inputs, then run a flow on Dask.

Each function checks everything it can before Prefect and Dask start, and raises
:class:`CommandError` with a one-line message for a problem the user can fix: a configuration,
an input folder or labels file, a folder that cannot be written, a store in use, a run that
ends itself as Failed (too few clips for k). The command line prints the message as one
``error:`` line and exits with the error's ``code``.

Heavy imports (Prefect, Dask, TensorFlow) happen inside the functions, so that the command line
can set up its terminal (:mod:`flows.terminal`) before they are imported.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Optional


class CommandError(Exception):
    """A problem the user can fix; ``str()`` is one line, ``code`` the exit status (2: the
    inputs are wrong, 1: the run failed)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


LOCAL_ASSIGN_MAX = 1024  # `assign`: more files than this go to Dask (a Prefect flow) unless --local


def check_writable(folder: Path | str, what: str) -> None:
    """Create the local folder ``folder`` now and check it can be written: a place that cannot is one
    error line before Prefect and Dask start, not a traceback from inside the flow. URLs are not checked."""
    if "://" in str(folder):
        return
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise CommandError(f"cannot write {what} {folder}: {exc.strerror or exc}") from None


def check_store_writable(store: Optional[str]) -> None:
    """A local store's folder (where the store and its lock file go) can be written."""
    if store and "://" not in store:
        check_writable(Path(store).resolve().parent, "the store's folder")


def checked_config(input_dir: str, labels: Optional[str], label_column: str, build: Callable[[], Any]):
    """``build()``'s result (a configuration) once it, INPUT and the labels file check out."""
    from flows.config import ConfigError
    from flows.corpus import InputError, check_root, read_labels

    try:
        config = build()
        check_root(str(input_dir))
        if labels:
            read_labels(labels, label_column)
    except (ConfigError, InputError) as exc:
        raise CommandError(str(exc)) from None
    return config


def run_flow(flow, config, **parameters):
    """``flow`` on Dask (:func:`flows.runtime.run_on_dask`); a store that cannot be used, or a flow
    that ends itself as Failed with a message, is a :class:`CommandError` with code 1."""
    from prefect.exceptions import FailedRun

    from flows.runtime import run_on_dask
    from storage import StoreError

    try:
        return run_on_dask(flow, config, **parameters)
    except (StoreError, FailedRun) as exc:
        raise CommandError(str(exc), code=1) from None


def run_pipeline(input_dir: str, labels: Optional[str] = None, out: Path | str = "runs/latest", store: Optional[str] = None,
                 label_column: str = "label", **settings: Any) -> dict:
    """The whole pipeline on INPUT (``audioclust run``); returns the run's metrics.

    ``settings`` are :func:`flows.config.load_config`'s arguments: ``preset``, ``file``, ``fallback``
    and the CLI's flat names (``k``, ``epochs``, ``n_workers``...; None: not given)."""
    from flows.config import load_config

    config = checked_config(input_dir, labels, label_column, lambda: load_config(**settings))
    check_store_writable(store)
    check_writable(out, "the run folder")
    from flows.pipeline import pipeline

    return run_flow(pipeline, config, input_dir=str(input_dir), labels=str(labels) if labels else None, out=str(out),
                    store=store, label_column=label_column)


def check_demo(out: Path, per_family: int) -> int:
    """The demo's arguments check out; returns the number of clips it will synthesize."""
    from tasks.synth import FAMILIES

    if per_family < 2:
        raise CommandError("--per-family must be at least 2")
    check_writable(out, "the demo folder")
    return per_family * len(FAMILIES)


def run_demo(out: Path, per_family: int = 12, preset: Optional[str] = None, file: Optional[Path] = None,
             epochs: Optional[str] = None, n_workers: Optional[int] = None, k: Optional[int | str] = "auto") -> dict:
    """Synthesize a labelled corpus of 8 sound families under OUT/corpus and cluster it under OUT/run
    (the default preset unless one is named; k chosen from the data unless given)."""
    from tasks.synth import make_corpus

    check_demo(out, per_family)
    audio, labels = make_corpus(out / "corpus", per_family=per_family)
    return run_pipeline(str(audio), str(labels), out / "run", None, "label", preset=preset, fallback="default", file=file,
                        k=k, epochs=epochs, n_workers=n_workers)


def preprocess(input_dir: str, store: str, labels: Optional[str] = None, label_column: str = "label",
               preset: Optional[str] = None, file: Optional[Path] = None, **runtime: Any) -> dict:
    """Only bring ``store`` up to date with INPUT (incremental); returns the counts.
    ``runtime``: ``n_workers``, ``threads_per_worker``, ``memory_limit``, ``dask_address`` (and ``segment``, ``hop``)."""
    from flows.config import load_config

    config = checked_config(input_dir, labels, label_column, lambda: load_config(preset=preset, file=file, **runtime))
    from flows.pipeline import preprocess_flow

    check_store_writable(store)
    return run_flow(preprocess_flow, config, input_dir=input_dir, store=store, labels=labels, label_column=label_column)


def sweep(input_dir: str, grid: Path, labels: Optional[str] = None, label_column: str = "label", out: Path = Path("runs/sweep"),
          k: Optional[int] = None, n_workers: Optional[int] = None, dask_address: Optional[str] = None) -> list[dict]:
    """One experiment per point of the grid file (x seed); returns the results' rows."""
    from flows.config import load_config
    from flows.sweep import load_grid

    spec: dict = {}

    def build():
        spec.update(load_grid(grid))
        if k is not None:
            spec["overrides"]["k"] = k
        return load_config(spec["preset"], fallback="fast", **spec["overrides"], n_workers=n_workers, dask_address=dask_address)

    base = checked_config(input_dir, labels, label_column, build)
    from flows.sweep import sweep as sweep_flow

    return run_flow(sweep_flow, base, input_dir=input_dir, grid=spec, out=str(out), labels=labels, label_column=label_column)


def serve(input_dir: str, labels: Optional[str] = None, out: str = "runs/served", store: Optional[str] = None,
          label_column: str = "label", preset: Optional[str] = None, file: Optional[Path] = None, k: Optional[int] = None,
          cron: Optional[str] = None, watch: Optional[int] = None) -> None:
    """Serve the pipeline from this process on a cron schedule or every ``watch`` seconds (when
    INPUT changed); blocks. The preset and overrides are :func:`flows.config.serve_parameters`'."""
    from flows.config import serve_parameters

    if (cron is None) == (watch is None):
        raise CommandError("give exactly one of --cron or --watch SECONDS")
    if watch is not None and watch < 1:
        raise CommandError("--watch takes a number of seconds >= 1")
    # labels are read by each run
    name, overrides = checked_config(input_dir, None, label_column, lambda: serve_parameters(preset, file, k))
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise CommandError("serve needs a Prefect server: run `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api")
    from flows.corpus import corpus_name
    from flows.deployments import cluster_corpus, watch_corpus

    params = {"input_dir": input_dir, "labels": labels, "out": out, "store": store, "preset": name,
              "overrides": overrides, "label_column": label_column}
    deployment = f"{corpus_name(input_dir)}-{'watch' if watch else 'scheduled'}"
    if watch:
        watch_corpus.serve(name=deployment, interval=watch, parameters=params, tags=["audioclust", "watch"])
    else:
        cluster_corpus.serve(name=deployment, cron=cron, parameters=params, tags=["audioclust"])


def verify(store: str) -> dict:
    """Check the store end to end (:meth:`storage.Store.verify`): ``{"slots", "counts", "arrays", "problems"}``."""
    from storage import Store, StoreError

    try:
        st = Store.open(store)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    problems = st.verify()
    return {"slots": st.n_clips, "counts": st.counts(), "arrays": len(list(st.group.array_keys())), "problems": problems}
