"""Long recordings through preprocessing, in windows (``--segment``): throughput and memory.

* audio-hours per minute for ``--hours`` of synthesized recordings (files of ``--file-hours``
  each) in 5 s windows, beside a corpus of 5 s clips of the same total length, both through the
  preprocessing flow on 2 Dask workers (default preset's geometry);
* peak RSS of the flow process and of every worker for one 1-hour file against one 10-hour
  file (flat: a window is read by seeking, never the whole file).

    .venv/bin/python -m bench.windows --hours 24     # about 17 000 windows; needs ~3 GB of /tmp
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import numpy as np  # noqa: E402

from bench.common import PeakRSS, print_table  # noqa: E402

RATE = 16000  # 16-bit mono WAV at 16 kHz: 115 MB an hour
FAMILIES = ("tone", "chirp_up", "noise_bursts", "clicks", "harmonic", "rumble")


def write_recording(path: Path, hours: float, seed: int) -> None:
    """``hours`` of families taking turns every 5-30 s, written a minute at a time (never held whole)."""
    import soundfile as sf

    from tasks.synth import synth_clip

    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16") as out:
        left = hours * 3600
        while left > 0:
            seconds = float(max(1.0, min(left, rng.uniform(5, 30))))  # (the last piece at least 1 s)
            y = synth_clip(FAMILIES[rng.integers(len(FAMILIES))], RATE, seconds, rng)
            out.write((0.8 * y / max(float(np.abs(y).max()), 1e-9)).astype(np.float32))
            left -= seconds


def write_clips(folder: Path, n: int, seed: int) -> None:
    import soundfile as sf

    from tasks.synth import synth_clip

    rng = np.random.default_rng(seed)
    for i in range(n):
        y = synth_clip(FAMILIES[i % len(FAMILIES)], RATE, 5.0, rng)
        sf.write(str(folder / f"{i:06d}.wav"), (0.8 * y / max(float(np.abs(y).max()), 1e-9)).astype(np.float32), RATE, subtype="PCM_16")


def preprocess(folder: Path, store: Path, segment: float | None) -> tuple[dict, float, PeakRSS]:
    from flows.config import load_config
    from flows.pipeline import preprocess_flow
    from flows.runtime import run_on_dask

    config = load_config("default", n_workers=2, dashboard_address="127.0.0.1:0", segment=segment, duration=5.0)
    with PeakRSS() as rss:
        t = time.perf_counter()
        result = run_on_dask(preprocess_flow, config, input_dir=str(folder), store=str(store))
        seconds = time.perf_counter() - t
    return result, seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="total audio of each corpus")
    parser.add_argument("--file-hours", type=float, default=1.0, help="length of each long recording")
    parser.add_argument("--skip-memory", action="store_true", help="no 1-hour / 10-hour memory rows")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-windows-"))
    rows = []
    try:
        long_dir, clip_dir = work / "long", work / "clips"
        long_dir.mkdir()
        clip_dir.mkdir()
        for i in range(int(round(args.hours / args.file_hours))):
            write_recording(long_dir / f"rec{i:03d}.wav", args.file_hours, seed=i)
        write_clips(clip_dir, int(args.hours * 3600 / 5), seed=99)
        for name, folder, segment in (("long recordings, 5 s windows", long_dir, 5.0), ("5 s clips", clip_dir, None)):
            result, seconds, rss = preprocess(folder, work / f"{folder.name}.zarr", segment)
            work_s = result["process_s"]  # the tasks' time, without starting the cluster
            rows.append([name, result["files"], result["found"], f"{work_s:.0f} ({seconds:.0f})", f"{args.hours / (work_s / 60):.2f}", f"{rss.peak_mb:.0f}"])
        if not args.skip_memory:
            for hours in (1.0, 10.0):
                one = work / f"one-{hours:g}h"
                one.mkdir()
                write_recording(one / "rec.wav", hours, seed=7)
                result, seconds, rss = preprocess(one, work / f"one-{hours:g}h.zarr", 5.0)
                work_s = result["process_s"]
                rows.append([f"one {hours:g}-hour file", 1, result["found"], f"{work_s:.0f} ({seconds:.0f})", f"{hours / (work_s / 60):.2f}",
                             f"{rss.peak_self / 2**20:.0f} / {rss.peak_child / 2**20:.0f}"])
                shutil.rmtree(one)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(f"preprocessing long recordings (default preset, 2 workers, {os.cpu_count()} cores)",
                ["corpus", "files", "items", "processing s (wall)", "audio-hours / min", "peak RSS MB (largest; flow / worker)"], rows)


if __name__ == "__main__":
    main()
