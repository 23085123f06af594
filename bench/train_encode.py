"""Training and encoding cost on esc10 with the `seed` preset (run: python -m bench.train_encode).

Prints one table: seconds per training epoch (batch 4, measured on --train-clips clips and
scaled to the whole corpus), blocks encoded per second by one-process ``predict`` (1 thread and
all threads) and by the encode flow on a LocalCluster of 1 and 2 workers, and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


from bench.common import SHARED_DATA, PeakRSS, print_table  # noqa: E402


def build_store(audio: Path, url: str, config) -> None:
    from flows.corpus import scan
    from storage import Store
    from tasks.preprocess import preprocess_range

    store = Store.create(url, config.audio.geometry(), config.runtime.clips_per_chunk)
    store.sync_manifest(scan(audio))
    for s, e in store.clip_chunks():
        preprocess_range(url, str(audio), s, e, config.audio)


def predict_rate(encoder_path: str, store_url: str, threads: int) -> tuple[float, float]:
    """Blocks/s of one-process predict in a fresh subprocess limited to ``threads``."""
    import subprocess
    import sys

    code = f"""
import os, time, json
from tasks.keras_setup import configure_keras
configure_keras({threads})
from storage import Store
from tasks.encode import encode_blocks, load_encoder
from bench.common import PeakRSS
s = Store.open({store_url!r})
with PeakRSS() as m:
    enc = load_encoder({encoder_path!r})
    blocks = s.blocks(0, s.n_blocks)
    encode_blocks(enc, blocks[:64])
    t = time.perf_counter(); encode_blocks(enc, blocks); dt = time.perf_counter() - t
print(json.dumps([s.n_blocks / dt, m.peak_mb]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--audio", default=str(SHARED_DATA / "esc10" / "audio"))
    ap.add_argument("--train-clips", type=int, default=100, help="clips timed for one training epoch")
    ap.add_argument("--work", default=None, help="folder for the store and model (default: a temp dir)")
    args = ap.parse_args()
    audio = Path(args.audio)
    if not audio.is_dir():
        raise SystemExit(f"error: corpus not found: {audio}")

    from flows.config import load_config
    from flows.pipeline import encode_flow
    from flows.runtime import run_on_dask
    from storage import Store
    from tasks.train import TrainingSettings, train_autoencoder

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-train-encode-"))
    config = load_config("seed", dashboard_address="127.0.0.1:0")
    url = str(work / "store.zarr")
    t = time.perf_counter()
    build_store(audio, url, config)
    n_clips = Store.open(url).n_clips
    print(f"preprocessed {n_clips} clips in {time.perf_counter() - t:.0f} s (one process) into {url}")

    # training: one epoch on a subset (a store of the first --train-clips clips)
    sub_url = str(work / "train-subset.zarr")
    src = Store.open(url)
    from flows.corpus import scan

    sub = Store.create(sub_url, src.geometry, config.runtime.clips_per_chunk)
    sub.sync_manifest(list(scan(audio))[: args.train_clips])
    for s, e in sub.clip_chunks():
        b0, b1 = sub.block_range(s, e)
        sub.write_clips(s, status=src.read("status", s, e), reasons=list(src.read("reason", s, e)), hashes=list(src.read("hash", s, e)),
                        durations=src.read("duration", s, e), blocks=src.read("blocks", b0, b1))
    with PeakRSS() as mem_train:
        summary = train_autoencoder(sub_url, str(work / "model"), config.model, TrainingSettings(epochs=1, batch_size=4, seed=0), log=lambda m: None)
    epoch_s = summary["train_seconds"] * n_clips / args.train_clips
    encoder = summary["encoder"]

    rows = [["train, batch 4, 1 epoch (scaled to corpus)", f"{epoch_s:.0f} s/epoch", f"{summary['train_seconds'] / (args.train_clips * 6) * 1000:.1f} ms/block", "", mem_train.peak_mb]]
    n_blocks = Store.open(url).n_blocks
    base = None
    for threads in (1, 0):
        rate, peak = predict_rate(encoder, url, threads)
        label = f"one-process predict, {threads or os.cpu_count()} thread(s)"
        base = base or rate
        rows.append([label, f"{rate:.0f} blocks/s", "", f"{rate / base:.2f}x", peak])
    for workers in (1, 2):
        cfg = load_config("seed", n_workers=workers, dashboard_address="127.0.0.1:0")
        with PeakRSS() as mem:
            t = time.perf_counter()
            result = run_on_dask(encode_flow, cfg, store=url, encoder=encoder)
            wall = time.perf_counter() - t
        dt = result["encode_s"]
        rows.append([f"encode flow, {workers} worker(s)", f"{n_blocks / dt:.0f} blocks/s", f"{dt:.1f} s ({wall:.0f} s with cluster start)", f"{n_blocks / dt / base:.2f}x", mem.peak_mb])
    print_table(
        f"train/encode, seed preset, {n_clips} clips = {n_blocks} blocks of 144x144x3",
        ["what", "rate", "time", "vs 1-thread predict", "peak RSS MB"],
        rows,
    )


if __name__ == "__main__":
    main()
