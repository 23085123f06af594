"""Cache keys built from what a result depends on: content, configuration and code, never run ids.

Prefect persists the results of tasks that use these keys (local result storage by default,
``PREFECT_LOCAL_STORAGE_PATH`` or ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` to move it). Tasks
whose results are files or store arrays are submitted with ``refresh_cache=True`` when those
outputs are gone, so a cached state never stands in for data that no longer exists.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from storage import Store

_PACKAGES = ("tasks", "storage")

# Batch tasks on Dask workers (preprocess, encode, assign) read files and the store: an I/O error
# is retried twice, after 2 s and 10 s, with jitter so that workers do not retry in step.
BATCH_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_jitter_factor": 0.5}


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of this project's task and storage sources: any change there invalidates cached results."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for pkg in _PACKAGES:
        for f in sorted((root / pkg).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def digest(*parts) -> str:
    def plain(x):
        if isinstance(x, BaseModel):
            return x.model_dump(mode="json")
        if isinstance(x, np.ndarray):
            return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
        return x

    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def store_digest(store_url: str) -> str:
    """What the stored blocks depend on: the feature fingerprint and each clip's status and content hash."""
    store = Store.open(store_url)
    return digest(store.attrs.get("fingerprint"), store.read("status"), store.read("hash"))


def file_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:32]


def checkpoint_fingerprint(store_url: str, *settings) -> str:
    """What a training checkpoint must match to be resumed: the code, the stored clips' content
    and the training settings (as :func:`train_key`, without the run folder it lives in)."""
    return digest(code_version(), store_digest(store_url), *settings)[:16]


def train_key(p: dict) -> str:
    """What a trained network depends on: the code, the stored clips, the model and training settings, its folder."""
    return "train-" + digest(code_version(), store_digest(p["store_url"]), p["model"], p["train"], str(Path(p["run_dir"]).resolve()))


def encode_key(context, p: dict) -> str:
    return "encode-" + digest(code_version(), store_digest(p["store_url"]), file_digest(p["encoder_path"]), p["start"], p["stop"], p.get("codes", "codes"))


def report_key(p: dict) -> str:
    """What a clustering depends on: the code, the clip features' content, paths and labels, the settings (and the network, for IDEC)."""
    store = Store.open(p["store_url"])
    ok = store.ok()
    if p["features"].source == "network":  # the codes are what the clustering sees
        content = store.read(p.get("codes", "codes"))[np.repeat(ok, store.geometry.blocks_per_clip)]
    else:  # handcrafted features come from the stored images
        content = store_digest(p["store_url"])
    model = None
    if p["clustering"].method == "idec":  # trains the network further: depends on its weights
        model = file_digest(str(Path(p["model_dir"]) / "encoder.keras"))
    return "report-" + digest(
        code_version(), content, store.read("path")[ok], store.read("label")[ok],
        p["features"], p["clustering"], p["split_seed"], model, str(Path(p["out_dir"]).resolve()),
    )


def given_key(context, parameters: dict) -> str:
    """Prefect's cache key of a stage task: the ``cache_key`` parameter the flow computed (:func:`train_key`, :func:`report_key`)."""
    return parameters["cache_key"]


def made_for(summary: Path, key: str) -> bool:
    """True when a stage's summary file exists and records that it was made for ``key``."""
    try:
        return json.loads(summary.read_text()).get("cache_key") == key
    except (OSError, ValueError, AttributeError):
        return False
