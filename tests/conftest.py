import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API server (SQLite in a temp dir) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        from prefect.settings import get_current_settings

        yield str(get_current_settings().api.url)


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
