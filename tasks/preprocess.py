"""One chunk of clips: files -> images and blocks -> one whole-chunk write to the store."""

from __future__ import annotations

import os

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from storage import Store
from tasks.audio import AudioSpec, Rejected, image, load_clip, to_blocks


def preprocess_batch(store_url: str, root: str, start: int, stop: int, spec: AudioSpec) -> dict:
    """Decode clips ``[start, stop)`` (paths relative to ``root``) and write their chunk.

    A file that fails is recorded with its reason; the batch itself only fails on
    store errors (which are worth a retry).
    """
    store = Store.open(store_url, mode="r+")
    geo = store.geometry
    paths = store.read("path", start, stop)
    n = stop - start
    images = np.zeros((n, *geo.image_shape), np.float32)
    ok = np.zeros(n, bool)
    reasons = [""] * n
    durations = np.zeros(n, np.float32)
    for i, rel in enumerate(paths):
        try:
            y, durations[i] = load_clip(os.path.join(root, str(rel)), spec)
            images[i] = image(y, spec)
            ok[i] = True
        except Rejected as exc:
            reasons[i] = str(exc)
    blocks = np.concatenate([to_blocks(im, geo.block) for im in images]) if n else images
    store.write_clips(start, images, ok, reasons, durations, blocks)
    return {"start": start, "stop": stop, "stored": int(ok.sum()), "rejected": int(n - ok.sum())}


@task(
    name="preprocess-batch",
    task_run_name="preprocess-clips-{start}-{stop}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_jitter_factor=0.5,
    cache_policy=NO_CACHE,  # writes the store: never skipped
)
def preprocess_batch_task(store_url: str, root: str, start: int, stop: int, spec: AudioSpec) -> dict:
    result = preprocess_batch(store_url, root, start, stop, spec)
    get_run_logger().info(
        "clips %d-%d: %d stored, %d rejected", start, stop, result["stored"], result["rejected"]
    )
    return result
