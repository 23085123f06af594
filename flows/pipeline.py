"""The whole pipeline as one Prefect flow: preprocess -> train -> encode -> cluster and report.

Fan-out stages (preprocess, encode) run one task per store chunk on the flow's Dask
task runner; training and clustering run in the flow process. Call through
:func:`flows.runtime.run_on_dask` (the CLI does) so tasks run on Dask and report to one API.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run

from flows.config import Config
from flows.corpus import discover, labels_for, read_labels
from storage import Store
from tasks.encode import encode_range_task
from tasks.plots import plot_loss
from tasks.preprocess import preprocess_batch_task
from tasks.report import cluster_and_report_task
from tasks.train import train_autoencoder_task


def _wait_all(futures, stage: str) -> list:
    """Wait for every future, logging progress; raise if any failed."""
    logger = get_run_logger()
    results, total = [], len(futures)
    for i, fut in enumerate(as_completed(futures), 1):
        results.append(fut.result())
        if i == total or i % max(1, total // 10) == 0:
            logger.info("%s: %d/%d batches done", stage, i, total)
    return results


def preprocess_stage(input_dir: str, store_url: str, config: Config, labels: str | None, label_column: str) -> dict:
    """List the corpus, create the store, and fan one task per chunk of clips over Dask."""
    paths = discover(input_dir, exclude=(labels,) if labels else ())
    if not paths:
        raise ValueError(f"no files under {input_dir}")
    clip_labels = labels_for(paths, read_labels(labels, label_column)) if labels else [""] * len(paths)
    store = Store.create(
        store_url,
        paths,
        clip_labels,
        config.geometry(),
        config.clips_per_chunk,
        attrs={"input_dir": str(Path(input_dir).resolve()), "audio": config.audio_spec().__dict__, "preset": config.preset},
    )
    spec = config.audio_spec()
    futures = [preprocess_batch_task.submit(store_url, str(input_dir), s, e, spec) for s, e in store.clip_batches()]
    results = _wait_all(futures, "preprocess")
    stored = sum(r["stored"] for r in results)
    return {"found": len(paths), "stored": stored, "rejected": len(paths) - stored}


def encode_stage(store_url: str, encoder_path: str, code_size: int) -> int:
    """Encode every block chunk on Dask; returns the number of blocks encoded."""
    store = Store.open(store_url, mode="r+")
    store.create_codes(code_size)
    futures = [encode_range_task.submit(store_url, encoder_path, b0, b1) for b0, b1 in store.iter_block_chunks()]
    return sum(_wait_all(futures, "encode"))


@flow(name="audioclust-encode", flow_run_name="encode")
def encode_flow(store: str, encoder: str, config: Config) -> dict:
    """Re-encode every block of ``store`` with the encoder at path ``encoder``."""
    from tasks.encode import load_encoder

    code_size = int(np.prod(load_encoder(encoder).output_shape[1:]))
    t = time.perf_counter()
    blocks = encode_stage(store, encoder, code_size)
    return {"blocks": blocks, "encode_s": time.perf_counter() - t}


def _run_name() -> str:
    params = flow_run.parameters
    folder = Path(str(params.get("input_dir", "corpus"))).resolve()
    corpus = folder.parent.name if folder.name in ("audio", "clips", "wav", "data") else folder.name
    cfg = params.get("config")
    preset = getattr(cfg, "preset", None) or (cfg or {}).get("preset", "default")
    return f"{corpus}-{preset}"


@flow(name="audioclust-pipeline", flow_run_name=_run_name)
def pipeline(
    input_dir: str,
    config: Config,
    labels: str | None = None,
    out: str = "runs/latest",
    store: str | None = None,
    label_column: str = "label",
) -> dict:
    """Cluster every clip under ``input_dir``; write the store, model, predictions and metrics under ``out``."""
    logger = get_run_logger()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_url = store or str(out_dir / "store.zarr")
    timings = {}

    t = time.perf_counter()
    counts = preprocess_stage(input_dir, store_url, config, labels, label_column)
    timings["preprocess_s"] = round(time.perf_counter() - t, 1)
    logger.info("preprocess: %(found)d files, %(stored)d stored, %(rejected)d rejected", counts)

    t = time.perf_counter()
    trained = train_autoencoder_task(store_url, str(out_dir / "model"), config.model_spec(), config.train_spec())
    history = json.loads(Path(trained["history"]).read_text())
    plot_loss(history, out_dir / "loss.png")
    timings["train_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    encode_stage(store_url, trained["encoder"], config.model_spec().code_size)
    timings["encode_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    metrics = cluster_and_report_task(store_url, str(out_dir), config.k, config.n_init, config.seed, config.split_seed)
    timings["cluster_s"] = round(time.perf_counter() - t, 1)

    metrics.update(
        store=store_url,
        loss_plot=str(out_dir / "loss.png"),
        model=trained["encoder"],
        epochs=trained["epochs"],
        final_loss=trained["final_loss"],
        device=trained["device"],
        preset=config.preset,
        input_dir=str(input_dir),
        labels_file=labels,
        timings=timings,
        config=config.model_dump(),
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
