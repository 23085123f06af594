"""Which input makes the report's early stopping (MSE, min_delta 0.009, patience 15) run as the report's did?

Trains the report's autoencoder (the `seed` geometry: 288 x 432 images, six 144 x 144 x 3 blocks,
batch 4) on a labelled subset of esc10 for each input variant and prints the epochs run, the loss,
the share of all-zero codes and K-Means NMI. Usage (from the repository root):

    .venv/bin/python docs/research/seed_input.py --clips 60 --epochs 20
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA

VARIANTS = {  # name: (audio settings, model settings)
    "features-relu": ({"image": "features"}, {"code_activation": "relu"}),  # Mel/delta/delta-delta in [0, 1] (before)
    "picture-relu": ({"image": "picture"}, {"code_activation": "relu"}),  # colour picture, pixels 0..255
    "picture-linear": ({"image": "picture"}, {"code_activation": "linear"}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()

    from flows.corpus import label_lookup, read_labels
    from sklearn.metrics import normalized_mutual_info_score

    from storage import FileEntry, Store
    from tasks.audio import AudioSettings
    from tasks.cluster import kmeans
    from tasks.encode import encode_blocks, load_encoder
    from tasks.model import ModelSettings
    from tasks.preprocess import preprocess_range
    from tasks.train import TrainingSettings, train_autoencoder

    root = SHARED_DATA / "esc10"
    labels_csv = root / "labels.csv"
    label_of = label_lookup(read_labels(labels_csv))
    files = sorted(p for p in root.rglob("*.ogg"))
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), args.clips, replace=False))]
    work = Path(tempfile.mkdtemp(prefix="seed-input-"))
    rows = []
    for name in args.variants.split(","):
        audio_over, model_over = VARIANTS[name]
        audio = AudioSettings(**audio_over)
        url = str(work / f"{len(rows)}.zarr")
        store = Store.create(url, audio.geometry(), clips_per_chunk=len(files), attrs={"audio": audio.model_dump(mode="json")})
        store.sync_manifest([FileEntry(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files], label_of)
        preprocess_range(url, str(root), 0, store.n_clips, audio)
        summary = train_autoencoder(url, str(work / f"model{len(rows)}"), ModelSettings(**model_over),
                                    TrainingSettings(epochs=args.epochs), log=lambda m: None)
        store = Store.open(url)
        codes = encode_blocks(load_encoder(summary["encoder"]), store.blocks(0, store.n_blocks).astype(np.float32))
        x = codes.reshape(store.n_clips, -1)
        truth = store.read("label")
        pred = kmeans(x, len(set(truth)), n_init=10) if np.ptp(x, 0).max() > 0 else np.zeros(len(x), int)
        rows.append({"input": name, "epochs": summary["epochs"], "stopped_early": summary["stopped_early"],
                     "first_loss": round(json.loads(Path(summary["history"]).read_text())["loss"][0], 4),
                     "final_loss": round(summary["final_loss"], 4), "zero_codes": round(float((np.abs(x).max(1) == 0).mean()), 3),
                     "nmi": round(float(normalized_mutual_info_score(truth, pred)), 3), "s_per_epoch": round(summary["train_seconds"] / max(1, summary["epochs"]), 1)})
        print(json.dumps(rows[-1]), flush=True)
    w = csv.DictWriter(open(work / "results.csv", "w", newline=""), fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    print(f"results: {work / 'results.csv'}")
    shutil.rmtree(work / "0.zarr", ignore_errors=True)


if __name__ == "__main__":
    main()
