"""Experiment 2: SimCLR variants that keep temporal shape (reuses simclr_recipe.py's trainer).
Input options: --input pad (recipe: trimmed clip zero-padded/cut to the 95th-pct duration) or
tn (time-normalized: trimmed clip's log-Mel linearly resampled in time to the same frame count).
--norm band | band+cmn (second channel = per-clip band-mean removed) | cmn (that channel only).  --crop: time-crop fraction.
Readouts evaluated from the same trained encoder (all: standardize -> PCA-16 whitened -> K-Means k):
  gg    = GAP+GMP (recipe);  seg = freq-mean of the encoder map in S=4 equal time segments;
  ggseg = [GAP+GMP block, seg block], each block standardized and scaled by 1/sqrt(dim) (equal weight).
usage: taskset -c 1 python timeshape_variants.py fsdd --input tn --norm band+cmn --crop 0.8 --seeds 0
"""
import os, sys, time, argparse
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simclr_recipe as R            # sets single-thread env + TF threads
import numpy as np, librosa
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn import metrics

def trimmed(waves):
    out = []
    for w in waves:
        t, _ = librosa.effects.trim(w, top_db=R.TRIM_DB); out.append(t if len(t) > 0.05 * R.SR else w)
    return out

def images_tn(waves):
    """Time-normalized log-Mel: each trimmed clip -> exactly `frames` frames (linear resampling in time)."""
    tr = trimmed(waves)
    dur = float(np.clip(np.percentile([len(t) / R.SR for t in tr], R.DUR_Q), 0.5, 10.0))
    frames = int(min(R.MAX_FRAMES, max(16, 8 * round(dur * R.SR / R.HOP_TARGET / 8))))
    M = np.zeros((len(tr), R.N_MELS, frames), np.float32)
    for i, t in enumerate(tr):
        hop = int(np.clip(len(t) // (2 * frames), 32, 512))          # >= 2 source frames per output frame
        p = librosa.feature.melspectrogram(y=t, sr=R.SR, n_fft=R.N_FFT, hop_length=hop, n_mels=R.N_MELS)
        src = np.linspace(0, 1, p.shape[1]); dst = np.linspace(0, 1, frames)
        p = np.stack([np.interp(dst, src, row) for row in p])
        M[i] = librosa.power_to_db(p, ref=np.max, top_db=80.0)
    return M, dur, frames

def readouts(enc, X, S=4):
    Fm = enc.predict(X, batch_size=64, verbose=0)                     # (N, H/8, T/8, C)
    gg = np.concatenate([Fm.mean((1, 2)), Fm.max((1, 2))], 1)
    f = Fm.mean(1)                                                    # (N, T/8, C)
    seg = np.concatenate([f[:, g].mean(1) for g in np.array_split(np.arange(f.shape[1]), min(S, f.shape[1]))], 1)
    blk = lambda B: (B - B.mean(0)) / (B.std(0) + 1e-8) / np.sqrt(B.shape[1])
    return {"gg": gg, "seg": seg, "ggseg": np.concatenate([blk(gg), blk(seg)], 1)}

def evaluate(F, y, k, seed, standardize=True):
    lab = R.cluster(F, k, seed, standardize=standardize)
    return metrics.normalized_mutual_info_score(y, lab), metrics.adjusted_mutual_info_score(y, lab)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("corp"); ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--input", default="tn"); ap.add_argument("--norm", default="band")
    ap.add_argument("--crop", type=float, default=R.CROP); ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--fshift", type=int, default=0); ap.add_argument("--tag", default="")
    a = ap.parse_args()
    t0 = time.time(); waves, y = R.decode(a.corp); k = len(np.unique(y))
    if a.input == "tn": M, dur, frames = images_tn(waves)
    else: M, dur, frames, _ = R.images(waves)
    if a.norm == "cmn":                                   # only the per-clip band-mean-removed channel
        C = M - M.mean(2, keepdims=True); X = (C / C.std())[..., None].astype(np.float32)
    else:
        X = R.normalize(M, a.norm)
    epochs = a.epochs or int(np.clip(round(40000 / len(X)), 30, 100))
    name = f"{a.corp} in={a.input} norm={a.norm} crop={a.crop} fshift={a.fshift} ep={epochs}{a.tag}"
    print(f"{name}: N={len(X)} frames={frames} dur={dur:.2f} prep {time.time()-t0:.0f}s", flush=True)
    res = {}
    for seed in [int(s) for s in a.seeds.split(",")]:
        t1 = time.time(); enc = R.train_simclr(X, seed, epochs, a.crop, a.fshift); tt = time.time() - t1
        for rn, F in readouts(enc, X).items():
            np.save(f"/tmp/quality/ts_{a.corp}_{a.input}_{a.norm}_c{a.crop}_f{a.fshift}{a.tag}_{rn}_s{seed}.npy", F)
            nmi, ami = evaluate(F, y, k, seed, standardize=(rn != "ggseg"))
            res.setdefault(rn, []).append((nmi, ami, tt))
            print(f"  seed {seed} {rn:6s} nmi={nmi:.3f} ami={ami:.3f} train={tt:.0f}s", flush=True)
    for rn, v in res.items():
        v = np.array(v)
        print(f"RESULT {name} {rn:6s} nmi={v[:,0].mean():.3f}+-{v[:,0].std():.3f} ami={v[:,1].mean():.3f} train={v[:,2].mean():.0f}s n={len(v)}", flush=True)
