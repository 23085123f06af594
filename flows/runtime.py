"""Where a run executes: which Prefect API it reports to, and which Dask cluster does the work."""

from __future__ import annotations

import os

from flows.config import Config


def ensure_prefect_api(timeout: int = 120) -> str:
    """The Prefect API URL this process reports to.

    With ``PREFECT_API_URL`` configured, that server. Otherwise start one local API
    server for the whole run (bound to 127.0.0.1, history kept in ``$PREFECT_HOME``)
    so the flow process and every Dask worker report to the same place, instead of
    each worker starting a temporary server of its own.
    """
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        return str(url)
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's own client uses when no URL is set
    server.start(timeout=timeout)
    return server.api_url


def worker_env(api_url: str, threads: int) -> dict[str, str]:
    """Environment of local Dask worker processes."""
    n = str(max(1, threads))
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DASK_LOGGING__DISTRIBUTED": os.environ.get("DASK_LOGGING__DISTRIBUTED", "warning"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "NUMBA_NUM_THREADS": n,
    }


# Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's dynamic mmap
# threshold: every large array is then mmapped and page-faulted afresh, and spectrogram work
# runs 1.7x slower (a plain loop: 55 -> 33 clips/s). Keep big arrays on the heap instead.
# glibc reads these at process start, so they go in the nanny's pre-spawn environment.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def configure_dask() -> None:
    """Dask settings for worker processes this process spawns (LocalCluster nannies)."""
    import dask

    current = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    dask.config.set({"distributed.nanny.pre-spawn-environ": {**current, **MALLOC_ENV}})


def dask_task_runner(config: Config, api_url: str):
    """A DaskTaskRunner on ``config.runtime.dask_address``, or on a fresh LocalCluster of processes."""
    from prefect_dask import DaskTaskRunner

    if config.runtime.dask_address:
        return DaskTaskRunner(address=config.runtime.dask_address)
    configure_dask()
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": config.runtime.n_workers,
            "threads_per_worker": config.runtime.threads_per_worker,
            "processes": True,
            "memory_limit": config.runtime.memory_limit,
            "host": "127.0.0.1",
            "dashboard_address": config.runtime.dashboard_address,
            "env": worker_env(api_url, config.runtime.threads_per_worker),
        },
    )


def run_on_dask(flow, config: Config, **parameters):
    """Run ``flow`` with its tasks on Dask, reporting to one Prefect API, tagged with corpus and preset."""
    from prefect import tags
    from prefect.settings import get_current_settings

    from flows.corpus import corpus_name
    from tasks import progress

    temporary = not get_current_settings().api.url
    api_url = ensure_prefect_api()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    runtime = config.runtime
    where = f"the Dask scheduler at {runtime.dask_address}" if runtime.dask_address else f"{runtime.n_workers} local Dask workers"
    progress.note(f"{flow.name} on {where}; Prefect API {api_url}" + (" (temporary: set PREFECT_API_URL to keep the runs)" if temporary else ""))
    labels = [f"preset:{config.preset}"]
    if "input_dir" in parameters:
        labels.append(f"corpus:{corpus_name(parameters['input_dir'])}")
    with tags("audioclust", *labels):
        return flow.with_options(task_runner=dask_task_runner(config, api_url))(config=config, **parameters)
