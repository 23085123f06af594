import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Without `.ci/run`'s server, the session's own (`prefect_server`) gets its address now, before
# anything imports Prefect: Prefect's import-time settings, which its service threads (the API
# log worker) use whatever the test has set, then name it, and no temporary server is started
# for them. The server itself starts only when a test first needs it, so unit tests pay nothing.
_OWN_SERVER_PORT = None
if not os.environ.get("PREFECT_API_URL"):
    _OWN_SERVER_PORT = free_port()
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_OWN_SERVER_PORT}/api"

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def prefect_api(prefect_server):
    """A real Prefect API for the whole session: the same server as :func:`prefect_server`.

    One server, as under `.ci/run`: with a temporary harness API beside a started server, the
    test process's event client stayed bound to one while flows ran against the other, and a
    re-run's task runs never reached the API (``make test`` failed where ``.ci/run`` passed).
    """
    yield prefect_server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` (schedules, deployments, workers): `.ci/run`'s, or one started
    here on the address set above (the whole process, its worker processes and subprocesses
    already report there)."""
    import subprocess
    import sys
    import time

    import httpx

    url = os.environ["PREFECT_API_URL"]
    if _OWN_SERVER_PORT is None:
        yield url
        return
    home = tmp_path_factory.mktemp("prefect-server-home")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    exe = Path(sys.executable).with_name("prefect")
    proc = subprocess.Popen([str(exe), "server", "start", "--host", "127.0.0.1", "--port", str(_OWN_SERVER_PORT)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode} (port {_OWN_SERVER_PORT} taken?)")
        time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("prefect server did not start")
    try:
        yield url
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)  # the session's last logs reach the server before it stops
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """40 clips of 4 well-separated families, with labels."""
    from tasks.synth import make_corpus

    root = tmp_path_factory.mktemp("corpus")
    audio, labels = make_corpus(root, per_family=10, families=("tone", "noise_bursts", "clicks", "chirps_high"), seed=1)
    return audio, labels


def write_wav(path, y, sr=22050, subtype="PCM_16"):
    import soundfile as sf

    sf.write(path, np.asarray(y, dtype=np.float32), sr, subtype=subtype)
    return path
