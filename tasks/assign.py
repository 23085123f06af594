"""Put new clips into a finished run's clusters, without retraining (``audioclust assign``).

A clip goes the same way the run's clips went: the run's audio settings, its (possibly
IDEC-refined) encoder, its feature transform and its centroids, all read from the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.audio import AudioSettings, Rejected, check_regular, clip_blocks, probe_duration
from tasks.caching import BATCH_RETRIES
from tasks.cluster import Clusterer, clip_feature_rows


# the columns of assign's CSV; farther_than: the share of the run's clips that lie closer to their
# cluster's centre than this clip lies to its own (near 1: unlike anything the run clustered);
# confidence: the probability of its cluster, as predictions.csv gives it for the run's clips
ROW_FIELDS = ("file", "start", "end", "cluster", "confidence", "farther_than", "reason")


class RunError(ValueError):
    """The run folder is missing something ``assign`` needs; one line for the user."""


def load_run(run_dir: str | Path) -> tuple[dict, Clusterer, str | None]:
    """``(metrics, clusterer, encoder path or None)`` of a finished pipeline run."""
    run = Path(run_dir)
    for name in ("metrics.json", "clusterer.npz"):
        if not (run / name).is_file():
            raise RunError(f"{run} is not a finished audioclust run (no {name})")
    metrics = json.loads((run / "metrics.json").read_text())
    if "audio" not in metrics or "geometry" not in metrics:
        raise RunError(f"{run}/metrics.json lacks the audio settings (made by an older version?)")
    clusterer = Clusterer.load(run / "clusterer.npz")
    encoder = None
    if clusterer.features.source == "network":
        name = "dec_encoder.keras" if clusterer.clustering.method == "idec" else "encoder.keras"
        encoder = str(run / "model" / name)
        if not Path(encoder).is_file():
            raise RunError(f"{run} has no model/{name}")
    return metrics, clusterer, encoder


def assign(
    files: Iterable[tuple[str, str]], run_dir: str | Path, batch: int = 64, progress: Callable[[int], None] | None = None
) -> list[dict]:
    """Cluster of each ``(name, path)``: rows of :data:`ROW_FIELDS` (cluster -1 and a reason when rejected;
    ``farther_than`` as :meth:`tasks.cluster.Clusterer.farther_than`, blank when unknown)."""
    metrics, clusterer, encoder_path = load_run(run_dir)
    try:
        spec = AudioSettings(**metrics["audio"])
    except ValueError as exc:
        raise RunError(f"{run_dir}/metrics.json holds audio settings this version cannot read (made by an older version?): {exc}") from None
    geo = spec.geometry()
    encoder = None
    if encoder_path:
        from tasks.encode import encode_blocks, load_encoder

        encoder = load_encoder(encoder_path)
    rows: list[dict] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        blocks = np.concatenate([b for _, b, _ in pending]).astype(np.float32)
        codes = encode_blocks(encoder, blocks) if encoder is not None else None
        x = clip_feature_rows(clusterer.features, geo, spec.top_db, blocks=blocks, codes=codes)
        clusters, far, confidence = clusterer.predict_and_rank(x)
        for j, ((i, _, _), c) in enumerate(zip(pending, clusters)):
            rows[i]["cluster"] = int(c)
            rows[i]["confidence"] = round(float(confidence[j]), 4)
            rows[i]["farther_than"] = "" if far is None else round(float(far[j]), 3)
        if progress:
            progress(sum(last for _, _, last in pending))
        pending.clear()

    for name, path in files:
        # a long file: every window (the run's segment), else one clip
        starts = spec.starts(probe_duration(path) or 0.0) if spec.segment is not None else [0.0]
        for k, start in enumerate(starts):
            rows.append({"file": name, "start": start, "end": "", "cluster": -1, "confidence": "", "farther_than": "", "reason": ""})
            try:
                # float16 blocks, as the store keeps them: a stored clip is assigned as it was clustered
                blocks, seconds, _ = clip_blocks(check_regular(path), spec, start=start)
                rows[-1]["end"] = round(start + seconds, 3)
                pending.append((len(rows) - 1, blocks, k == len(starts) - 1))
            except Rejected as exc:
                rows[-1]["reason"] = str(exc)
                if progress and k == len(starts) - 1:
                    progress(1)
            if len(pending) >= batch:
                flush()
    flush()
    return rows


@task(
    name="assign-range",
    task_run_name="assign-files-{start}-{stop}",
    **BATCH_RETRIES,
    cache_policy=NO_CACHE,  # new files each time: nothing to reuse
)
def assign_task(files: list[tuple[str, str]], run_dir: str, start: int, stop: int) -> dict:
    """Files ``start`` to ``stop`` of the listing (``(name, path)`` pairs) into the run's clusters, on a Dask
    worker (the encoder is loaded once per worker); returns ``{"start", "rows"}``."""
    rows = assign(files, run_dir)
    rejected = sum(r["cluster"] < 0 for r in rows)
    get_run_logger().info("files %d-%d: %d assigned, %d rejected", start, stop, len(rows) - rejected, rejected)
    return {"start": start, "rows": rows}
