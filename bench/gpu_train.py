"""Train the `seed` preset's autoencoder on a preprocessed store and print what a GPU buys.

The same code path as the pipeline's training task (tasks.model, tasks.blocks, tasks.fit), on
whichever Keras backend ``KERAS_BACKEND`` names, without Prefect or Dask, so that it runs on a
machine that has only a backend and a few carried wheels (bench/gpu.sh)::

    KERAS_BACKEND=torch python -m bench.gpu_train .gpu/esc10-seed.zarr .gpu/seed.json --epochs 200

``seed.json`` holds the preset's ``model`` and ``training`` settings (written by ``bench/gpu.sh
prepare`` from flows.config, which needs Prefect). Prints one JSON line: device, epochs run,
whether EarlyStopping ended them, seconds per epoch, first and final loss, the share of all-zero codes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="a store made with the seed preset")
    parser.add_argument("settings", help="the seed preset's model and training settings (JSON)")
    parser.add_argument("--epochs", type=int, default=0, help="at most this many epochs [default: the preset's]")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    args = parser.parse_args()

    import numpy as np

    from storage import Store
    from tasks.audio import value_scale
    from tasks.blocks import BlockStream, autoencoder_batches
    from tasks.fit import Checkpoint, fit
    from tasks.keras_setup import configure_keras
    from tasks.model import ModelSettings, build_autoencoder, encoder_of

    settings = json.loads(Path(args.settings).read_text())
    train = settings["training"]
    epochs = args.epochs or train["epochs"]
    device = configure_keras(args.threads, seed=train["seed"])
    import keras

    store = Store.open(args.store)
    stream = BlockStream(store, store.ok(), shuffle=True, shuffle_chunks=train["shuffle_chunks"], seed=train["seed"])
    model = ModelSettings(**settings["model"])
    autoencoder, _ = build_autoencoder(model, store.geometry.block_shape, value_scale(store.attrs.get("audio")))
    autoencoder.compile(optimizer=keras.optimizers.Adam(train["learning_rate"]), loss="mse")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(autoencoder, autoencoder_batches(stream, train["batch_size"]), epochs, Checkpoint(Path(tmp), "bench"),
                     log=lambda m: None, early_stopping={"monitor": "loss", "min_delta": train["min_delta"], "patience": train["patience"]})
    seconds = time.perf_counter() - t0
    loss = result["history"]["loss"]
    blocks = store.blocks(0, min(store.n_blocks, 600)).astype(np.float32)
    codes = encoder_of(autoencoder).predict(blocks, batch_size=64, verbose=0).reshape(len(blocks), -1)
    print(json.dumps({
        "device": device, "blocks": stream.n_blocks, "batch_size": train["batch_size"], "epochs": len(loss),
        "stopped_early": result["stopped_early"], "s_per_epoch": round(seconds / max(1, len(loss)), 2),
        "first_loss": round(loss[0], 4), "final_loss": round(loss[-1], 4), "zero_codes": round(float((np.abs(codes).max(1) == 0).mean()), 3),
    }), flush=True)


if __name__ == "__main__":
    main()
