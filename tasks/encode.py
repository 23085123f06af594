"""Encode block ranges with the trained encoder, on Dask workers."""

from __future__ import annotations

import os

import numpy as np

from prefect import get_run_logger, task

from storage import Store
from tasks.caching import BATCH_RETRIES, encode_key
from tasks.keras_setup import configure_keras, load_model

_ENCODERS: dict[tuple[str, float], object] = {}


def load_encoder(path: str):
    """Load the encoder once per process (keyed by path and modification time)."""
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _ENCODERS:
        configure_keras(int(os.environ.get("AUDIOCLUST_WORKER_THREADS", "0")))
        _ENCODERS.clear()
        _ENCODERS[key] = load_model(path, compile=False)
    return _ENCODERS[key]


def encoder_code_size(path: str) -> int:
    """Values per block in the codes of the encoder at ``path``."""
    return int(np.prod(load_encoder(path).output_shape[1:]))


def encode_blocks(encoder, blocks, batch_size: int = 256):
    """Codes of ``blocks`` flattened to (n, code_size): the one definition of encoding."""
    codes = encoder.predict(blocks, batch_size=batch_size, verbose=0)
    return codes.reshape(len(blocks), -1)


def encode_range(store_url: str, encoder_path: str, start: int, stop: int, codes: str = "codes") -> int:
    """Encode blocks ``[start, stop)`` (one chunk) and write them to the codes array ``codes``."""
    store = Store.open(store_url, mode="r+")
    values = encode_blocks(load_encoder(encoder_path), store.blocks(start, stop))
    store.write_codes(start, values, codes)
    return len(values)


@task(
    name="encode-blocks",
    task_run_name="encode-blocks-{start}-{stop}",
    **BATCH_RETRIES,
    cache_key_fn=encode_key,  # the flow refreshes it when the chunk's codes are missing
    persist_result=True,
)
def encode_range_task(store_url: str, encoder_path: str, start: int, stop: int, codes: str = "codes") -> int:
    n = encode_range(store_url, encoder_path, start, stop, codes)
    get_run_logger().info("encoded blocks %d-%d", start, stop)
    return n
