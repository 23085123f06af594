"""The ``default`` preset's network: a small CNN trained contrastively (SimCLR) on the corpus itself.

Why: a reconstruction loss spends the code on what is loud and large in the image; a
contrastive loss (two augmented views of a clip must be closer to each other than to any
other clip's views) spends it on what tells clips apart, which is what clustering needs.
Measured in ``docs/research/README.md`` and ``bench/quality.py``.

Encoder (the model saved as ``encoder.keras``, block image in, clip code out)::

    block (H, W, C) -> input normalization: ``band`` = per-band standardization (corpus
                       statistics, a Normalization layer), or ``clip`` = each clip's per-band
                       mean over time removed (the spectral envelope of the recording: speaker,
                       microphone, room) but the share ``envelope`` of it, scaled by one corpus-wide constant, or ``pcen`` = PCEN
                       (each band's level over its own recent level: onsets over a steady
                       background), then as ``clip``
      -> 3 x [Conv 3x3 (no bias) -> BatchNorm -> ReLU -> MaxPool 2]   (filters, e.g. 16, 32, 64)
      -> Conv 3x3 -> BatchNorm -> ReLU
      -> global average pool ++ global max pool = code (2 x last filters)

With several input normalizations, one such network per normalization (each trained on its own), the
code their codes side by side: the clustering draws its K-Means runs from each part (``code_parts``).

Training adds a projection head (Dense 256 -> ReLU -> Dense 128) and minimises NT-Xent
(temperature ``TrainingSettings.temperature``) between two views of each clip. A view is a random
``crop`` of the frames, sometimes mixed with another clip, with a frequency mask, a time
mask, a random spectral tilt and Gaussian noise, and (``freq_warp``) scaled in frequency. Everything trains from the corpus; no
outside weights.

What a view may change depends on the kind of audio (a pitch shift keeps an instrument but moves a
digit's formants), so ``"auto"`` view settings are decided from the corpus: one network per
candidate of :func:`view_recipes`, keeping the one whose codes cluster most consistently (``"both"``: all).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from storage import Store
from tasks.audio import band_frequencies
from tasks.caching import checkpoint_fingerprint
from tasks.fit import Checkpoint, fit
from tasks.keras_setup import clip_mean_removal_class, configure_keras, pcen_class


def build_trunk(height: int, channels: int, filters, name: str = "trunk") -> "object":
    """The convolutional trunk on standardized input of any width (>= 8 frames)."""
    import keras
    from keras import layers

    inp = keras.Input((height, None, channels), name="standardized")
    x = inp
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Conv2D(filters[-1], 3, padding="same", use_bias=False, name="conv_top")(x)
    x = layers.BatchNormalization(name="bn_top")(x)
    x = layers.Activation("relu", name="relu_top")(x)
    return keras.Model(inp, x, name=name)


def _pooled(trunk, x, tag: str = ""):
    from keras import layers

    fmap = trunk(x)
    return layers.Concatenate(name=f"code{tag}")([layers.GlobalAveragePooling2D(name=f"gap{tag}")(fmap),
                                                  layers.GlobalMaxPooling2D(name=f"gmp{tag}")(fmap)])


def pcen_images(x: np.ndarray, top_db: float, slice_: int = 512) -> np.ndarray:
    """:func:`tasks.keras_setup.pcen_class` of dB images ``x`` (n, H, T, C), a slice at a time: the encoder's own layer."""
    layer = pcen_class()(top_db=top_db)
    return np.concatenate([np.asarray(layer(x[i : i + slice_].astype(np.float32))) for i in range(0, len(x), slice_)])


def normalize_inputs(x: np.ndarray, input_norm: str, top_db: float = 80.0, envelope: float = 0.0) -> tuple[np.ndarray, dict]:
    """Standardized training images and the statistics the encoder's first layers need (``top_db``: the dB range of
    the images, for ``pcen``; ``envelope``: the share of each clip's band means ``clip`` and ``pcen`` leave in)."""
    if input_norm == "pcen":
        xs, stats = normalize_inputs(pcen_images(x, top_db), "clip", envelope=envelope)
        return xs, {**stats, "pcen_top_db": float(top_db)}
    if input_norm == "clip":
        means = x.mean(2, keepdims=True)
        scale = float((x - means).std()) + 1e-6  # the scale of what varies in time, whatever envelope is left in
        return ((x - (1.0 - envelope) * means) / scale).astype(np.float32), {"scale": scale, "envelope": float(envelope)}
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3)) + 1e-6
    return ((x - mean[None, :, None, None]) / np.sqrt(var)[None, :, None, None]).astype(np.float32), {"mean": mean, "variance": var}


def build_encoder(block_shape, networks: list[tuple[object, dict]]):
    """Block image -> code: the saved encoder, with each network's input normalization inside it (``networks``: its
    trunk and :func:`normalize_inputs`'s statistics); several networks' codes side by side, in order."""
    import keras
    from keras import layers

    inp = keras.Input(block_shape, name="block")
    codes = []
    for i, (trunk, stats) in enumerate(networks):
        tag = f"_{i}" if len(networks) > 1 else ""
        x = inp
        if "pcen_top_db" in stats:
            x = pcen_class()(top_db=stats["pcen_top_db"], name=f"pcen{tag}")(x)
        if "scale" in stats:
            x = clip_mean_removal_class()(envelope=stats.get("envelope", 0.0), name=f"clip_mean_removal{tag}")(x)
            x = layers.Rescaling(1.0 / stats["scale"], name=f"clip_scale{tag}")(x)
        else:
            x = layers.Normalization(axis=1, mean=stats["mean"].tolist(), variance=stats["variance"].tolist(), name=f"band_norm{tag}")(x)
        codes.append(_pooled(trunk, x, tag))
    return keras.Model(inp, codes[0] if len(codes) == 1 else layers.Concatenate(name="code")(codes), name="encoder")


def crop_width(frames: int, crop: float) -> int:
    """Frames per augmented view: ``crop`` of the image, a multiple of 8, at least 8."""
    if frames < 16:
        return frames
    return int(min(frames, max(8, round(frames * crop / 8) * 8)))


def augment(batch: np.ndarray, pool: np.ndarray, width: int, rng: np.random.Generator, shift: int = 0, mix: str = "add",
            warp: float = 0.0, bands: np.ndarray | None = None) -> np.ndarray:
    """One random view of each standardized image in ``batch`` (n, H, T, C); ``pool`` supplies mix-ins;
    ``shift`` > 0: each view also moved up or down by up to that many bands (a pitch change);
    ``mix``: another clip's image ``add``-ed at 0.1-0.3 of its level, or its ``power`` added to the
    view's, as BYOL-A mixes: ``log((1 - l) e^v + l e^w)``, l up to 0.4;
    ``warp`` > 0: each view's frequencies also scaled by ``2**u``, ``|u| <= warp`` octaves (:func:`warp_bands`;
    ``bands``: the rows' centre frequencies)."""
    n, h, t, c = batch.shape
    out = np.empty((n, h, width, c), np.float32)
    tilt = np.linspace(-1, 1, h, dtype=np.float32)[:, None, None]
    for j in range(n):
        s = rng.integers(0, t - width + 1)
        v = batch[j, :, s : s + width].copy()  # random crop in time
        if rng.random() < 0.5:  # mix in another clip, quieter
            s2 = rng.integers(0, t - width + 1)
            weight = rng.uniform(0.1, 0.3) if mix == "add" else rng.uniform(0.0, 0.4)
            other = pool[rng.integers(len(pool)), :, s2 : s2 + width]
            if mix == "power":  # a sound under the view, as in a real mixture, rather than an image on top
                v = np.logaddexp(v + np.log1p(-weight), other + np.log(max(weight, 1e-6))).astype(np.float32)
            else:
                v += weight * other
        f0 = rng.integers(0, max(1, h - 8))
        v[f0 : f0 + rng.integers(0, 9)] = 0  # frequency mask, up to 8 bands
        t0 = rng.integers(0, max(1, width - width // 8))
        v[:, t0 : t0 + rng.integers(0, width // 8 + 1)] = 0  # time mask, up to 1/8 of the view
        v += rng.normal(0, 0.3) * tilt + rng.normal(0, 0.2, v.shape).astype(np.float32)  # tilt + noise
        if shift and (b := int(rng.integers(-shift, shift + 1))):  # the same sound at another pitch
            v = np.roll(v, b, axis=0)
            if b > 0:  # the bands rolled in from the other edge are blanked
                v[:b] = 0
            else:
                v[b:] = 0
        if warp:  # the same sound from a larger or smaller source: a longer throat, a bigger dog
            v = warp_bands(v, bands, 2.0 ** rng.uniform(-warp, warp))
        out[j] = v
    return out


def warp_bands(view: np.ndarray, bands: np.ndarray, ratio: float) -> np.ndarray:
    """``view`` (H, T, C) with every frequency multiplied by ``ratio`` (vocal tract length perturbation, Jaitly and
    Hinton 2013): each row reads the view at its own frequency / ``ratio`` (``bands``: the rows' centre frequencies,
    Hz), between rows linearly; rows that would read beyond the lowest or highest band are blanked."""
    idx = np.arange(len(bands), dtype=np.float64)
    xp, fp = (bands, idx) if bands[-1] > bands[0] else (bands[::-1], idx[::-1])  # pictures have the top row first
    pos = np.interp(bands / ratio, xp, fp, left=np.nan, right=np.nan)
    inside = ~np.isnan(pos)
    pos = np.where(inside, pos, 0.0)
    i0 = np.minimum(np.floor(pos).astype(int), len(bands) - 2)
    w = (pos - i0)[:, None, None]
    out = view[i0] * (1 - w) + view[i0 + 1] * w
    out[~inside] = 0
    return out.astype(np.float32)


AUTO_SHIFT = 4  # freq_shift "auto" or "both": the candidate whose views move by up to 4 of the 64 bands


def view_recipes(train) -> list[dict]:
    """The view settings a training tries: the base (no shift, where ``freq_shift`` is ``"auto"`` or ``"both"``), then
    the pitch-shift candidate, whose frequency change is the shift alone: with the warp on top its codes looked more
    consistent where they were worse (fsdd, esc10), and timbre and events did not gain (docs/research/head_and_shift.md)."""
    two = train.freq_shift in ("auto", "both")
    base = {"freq_shift": 0 if two else int(train.freq_shift), "mix": train.mix, "freq_warp": float(train.freq_warp)}
    return [base] + ([{**base, "freq_shift": AUTO_SHIFT, "freq_warp": 0.0}] if two else [])


def recipe_name(recipe: dict) -> str:
    return f"shift {recipe['freq_shift']}, {recipe['mix']} mixing" + (f", warp {recipe['freq_warp']:g} oct" if recipe["freq_warp"] else "")


def pooled_codes(trunk, xs: np.ndarray, slice_: int = 2048) -> np.ndarray:
    """The encoder's codes of standardized images ``xs`` (the encoder after its input normalization), a slice at a time."""
    import keras

    inp = keras.Input(trunk.input_shape[1:])
    codes = keras.Model(inp, _pooled(trunk, inp))
    return np.concatenate([codes.predict(xs[i : i + slice_], batch_size=256, verbose=0) for i in range(0, len(xs), slice_)])


def agreement_over_k(codes: np.ndarray, seed: int, ks=(5, 10, 20)) -> float:
    """How consistently codes cluster, whatever k: :func:`tasks.cluster.consensus_agreement` averaged over
    ``ks`` (those that leave at least 3 clips per cluster)."""
    from tasks.cluster import consensus_agreement

    ks = [k for k in ks if k <= len(codes) // 3] or [2]
    return float(np.mean([consensus_agreement(codes, k, seed) for k in ks]))


def auto_epochs(n_clips: int) -> int:
    """About 40 000 clip-views: 100 epochs for 400 clips, 30 for 1 333 or more."""
    return int(np.clip(round(40000 / max(1, n_clips)), 30, 100))


def load_training_blocks(store: Store, max_clips: int, seed: int) -> np.ndarray:
    """The blocks of (a seeded sample of at most ``max_clips``) stored clips, float32."""
    from tasks.blocks import BlockStream

    ok = store.ok()
    idx = np.flatnonzero(ok)
    if len(idx) > max_clips:
        ok = np.zeros(len(ok), bool)
        ok[np.random.default_rng(seed).choice(idx, max_clips, replace=False)] = True
    return BlockStream(store, ok, shuffle=False).read_all()


def contrastive_views(xs: np.ndarray, batch_size: int, width: int, seed: int, recipe: dict, bands: np.ndarray | None = None):
    """Two augmented views of each clip of a minibatch, for ``fit`` (:class:`tasks.fit.StepData`), made as ``recipe``
    (one of :func:`view_recipes`) says: the clips of epoch ``e`` in an order drawn from ``(seed, e)``, a batch's views
    from ``(seed, e, step)``."""
    how = (recipe["freq_shift"], recipe["mix"], recipe["freq_warp"], bands)
    from tasks.fit import step_data_class

    class ContrastiveViews(step_data_class()):
        steps = len(xs) // batch_size  # the last partial batch is dropped: NT-Xent wants full batches
        _order: tuple[int, np.ndarray] = (-1, np.empty(0, int))

        def batch(self, epoch: int, step: int):
            if self._order[0] != epoch:
                self._order = (epoch, np.random.default_rng((seed, epoch)).permutation(len(xs)))
            clips = xs[self._order[1][step * batch_size : (step + 1) * batch_size]]
            rng = np.random.default_rng((seed, epoch, step))
            views = augment(clips, xs, width, rng, *how), augment(clips, xs, width, rng, *how)
            return views, np.zeros(len(clips), np.float32)

    return ContrastiveViews()


def nt_xent(temperature: float):
    """NT-Xent (SimCLR) on ``y_pred`` = the two views' unit projections side by side: each view must pick
    its partner out of the batch's other views. Per clip, the mean over its two views (``y_true`` unused)."""
    from keras import ops

    def loss(y_true, y_pred):
        z1, z2 = ops.split(y_pred, 2, axis=1)
        zz = ops.concatenate([z1, z2], axis=0)
        b = ops.shape(z1)[0]
        sim = ops.matmul(zz, ops.transpose(zz)) / temperature - 1e9 * ops.eye(2 * b)
        partner = ops.concatenate([ops.arange(b, 2 * b), ops.arange(0, b)], axis=0)
        ce = ops.sparse_categorical_crossentropy(partner, sim, from_logits=True)
        return (ce[:b] + ce[b:]) / 2

    return loss


def two_view_model(trunk, height: int, width: int, channels: int):
    """The training model: both views through the trunk and projection head (Dense 256 -> ReLU -> Dense 128), unit length."""
    import keras
    from keras import layers

    view = keras.Input((height, None, channels))
    z = layers.Dense(128, name="proj2")(layers.Dense(256, activation="relu", name="proj1")(_pooled(trunk, view)))
    projector = keras.Model(view, z, name="projector")
    v1, v2 = keras.Input((height, width, channels), name="view1"), keras.Input((height, width, channels), name="view2")
    unit = layers.UnitNormalization(axis=-1)
    return keras.Model([v1, v2], layers.Concatenate(name="views")([unit(projector(v1)), unit(projector(v2))]), name="contrastive")


def train_contrastive(
    store_url: str,
    run_dir: str,
    filters,
    train,
    log: Callable[[str], None] = print,
    input_norm: str | tuple[str, ...] = "band",
    on_epoch_end: Callable[[int, float], None] | None = None,
    envelope: float = 0.0,
) -> dict:
    """Fit the encoder with NT-Xent; write ``encoder.keras``, ``history.json``, ``train.json``.

    Several ``input_norm``: the view recipes are tried with the first (one network kept, or all with ``"both"``);
    each further one trains a network with the kept recipe; the encoder puts the networks' codes side by side.
    The state after every epoch is kept in ``run_dir/checkpoint*`` (:class:`tasks.fit.Checkpoint`,
    about 1 MB each): a retry, or the next run after a killed one, resumes from the last finished epoch
    when the data and settings are the same. ``on_epoch_end(epoch, loss)`` runs after the
    checkpoint is written. ``envelope``: the share of each clip's band means a ``clip`` or ``pcen`` input keeps.
    """
    device = configure_keras(train.threads, train.seed)
    import keras

    norms = (input_norm,) if isinstance(input_norm, str) else tuple(input_norm)
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Store.open(store_url)
    if not store.ok().any():
        raise ValueError("no stored clips to train on: every input was rejected")
    x = load_training_blocks(store, train.max_clips, train.seed)
    n, h, t, c = x.shape
    top_db = float((store.attrs.get("audio") or {}).get("top_db", 80.0))
    epochs = auto_epochs(n) if train.epochs == "auto" else train.epochs
    width = crop_width(t, train.crop)
    bands = None
    if train.freq_warp:
        if not store.attrs.get("audio"):
            raise ValueError("training.freq_warp needs the store's audio settings (a store the preprocess flow made)")
        bands = band_frequencies(store.attrs["audio"])
        if len(bands) != h:
            raise ValueError(f"training.freq_warp needs blocks as tall as the image ({len(bands)} bands), not {h}: set audio.block = 'image'")

    recipes = view_recipes(train)
    several = len(recipes) > 1
    log(f"contrastive training on {n} blocks of {(h, t, c)} ({width}-frame views), {epochs} epochs"
        f"{', one network per view recipe (' + '; '.join(map(recipe_name, recipes)) + ')' if several else ''}"
        f"{', then one per further input normalization (' + ', '.join(norms[1:]) + ')' if len(norms) > 1 else ''}, on {device}")
    t0 = time.perf_counter()

    def train_one(xs, recipe, norm, folder, label, name=""):
        keras.utils.set_random_seed(train.seed)  # every network starts from the same weights: only the views differ
        trunk = build_trunk(h, c, tuple(filters), name=name or f"trunk_{norm}")
        model = two_view_model(trunk, h, width, c)
        model.compile(optimizer=keras.optimizers.Adam(train.learning_rate), loss=nt_xent(float(train.temperature)))
        checkpoint = Checkpoint(out / folder, checkpoint_fingerprint(store_url, (n, h, t, c), tuple(filters), norm, envelope, epochs, train, recipe))

        def epoch_end(epoch, logs):
            if epoch % 10 == 9 or epoch + 1 == epochs:
                log(f"epoch {epoch + 1}/{epochs}{f' ({label})' if label else ''}: loss {logs['loss']:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs["loss"])

        views = contrastive_views(xs, min(train.batch_size, n), width, train.seed, recipe, bands)
        result = fit(model, views, epochs, checkpoint, log, callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=epoch_end)])
        return {**recipe, "input_norm": norm, "trunk": trunk, "checkpoint": checkpoint, **result}

    xs, stats = normalize_inputs(x, norms[0], top_db, envelope)
    candidates = [train_one(xs, recipe, norms[0], f"checkpoint-{i}" if several else "checkpoint", recipe_name(recipe) if several else "",
                            f"trunk_{norms[0]}" + (f"_{i}" if i else "")) for i, recipe in enumerate(recipes)]
    if several:  # the network whose codes K-Means runs cluster most consistently: kept, or (both) its views train the further networks
        for cand in candidates:
            cand["agreement"] = agreement_over_k(pooled_codes(cand["trunk"], xs), train.seed)
        log("view recipes: " + "; ".join(f"{recipe_name(cand)} -> consensus agreement {cand['agreement']:.3f}" for cand in candidates))
    kept = max(candidates, key=lambda cand: cand.get("agreement", 0.0))
    first_networks = candidates if train.freq_shift == "both" else [kept]  # both: every candidate's network in the code
    if several:
        log(f"kept the network of {recipe_name(kept)}" if len(first_networks) == 1 else "kept every view recipe's network, the codes side by "
            "side" + (f"; the further networks' views: {recipe_name(kept)}" if len(norms) > 1 else ""))
    del xs
    networks, extra = [(cand["trunk"], stats) for cand in first_networks], []
    for norm in norms[1:]:  # the kept views, on another input normalization: a second look at the same clips
        xs, more = normalize_inputs(x, norm, top_db, envelope)
        extra.append(train_one(xs, {k: kept[k] for k in recipes[0]}, norm, f"checkpoint-{norm}", norm))
        networks.append((extra[-1]["trunk"], more))
        del xs
    seconds = time.perf_counter() - t0
    history, first = kept["history"], kept["resumed_from_epoch"]

    encoder = build_encoder((h, t, c), networks)
    encoder.save(out / "encoder.keras")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {
        "encoder": str(out / "encoder.keras"),
        "autoencoder": None,
        "history": str(out / "history.json"),
        "objective": "contrastive",
        "epochs": epochs,
        "resumed_from_epoch": first,
        "final_loss": history["loss"][-1],
        "train_seconds": round(seconds, 1),
        "device": device,
        "blocks": n,
        "filters": list(filters),
        "input_norm": list(norms),
        "envelope": envelope,
        "code_parts": len(networks),  # equal parts of the code, one per network (clustered apart when features.networks says so)
        "freq_shift": kept["freq_shift"],
        "mix": kept["mix"],
        "freq_warp": kept["freq_warp"],
        "candidates": [{k: cand[k] for k in ("freq_shift", "mix", "freq_warp", "agreement") if k in cand} | {"final_loss": cand["history"]["loss"][-1]}
                       for cand in candidates] if several else None,
        "networks": [{"input_norm": net["input_norm"], "freq_shift": net["freq_shift"], "final_loss": net["history"]["loss"][-1]}
                     for net in [*first_networks, *extra]],
        "train": {**train.model_dump(mode="json"), "epochs": epochs},  # the epochs run, where the setting said "auto"
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    for cand in candidates + extra:
        cand["checkpoint"].clear()  # finished: a new run starts fresh
    return summary
