import os, sys, time, numpy as np
os.environ.setdefault("OMP_NUM_THREADS","1")
import librosa
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
sys.path.insert(0, "/work/main")
from tasks.metrics import scores
SR = 22050
Q = "/tmp/quality"

def load(corp):
    w = np.load(f"{Q}/{corp}_wave.npy", allow_pickle=True)
    lab = np.load(f"{Q}/{corp}_labels.npy")
    _, y = np.unique(lab, return_inverse=True)
    return list(w), y

def trim(waves, top_db=40):
    out = []
    for y in waves:
        t, _ = librosa.effects.trim(y, top_db=top_db)
        out.append(t if len(t) > 0.05 * SR else y)
    return out

def auto_duration(waves, q=95, lo=0.5, hi=10.0):
    return float(np.clip(np.percentile([len(y) / SR for y in waves], q), lo, hi))

def fix(waves, dur, tile=False):
    n = int(round(dur * SR))
    out = np.zeros((len(waves), n), np.float32)
    for i, y in enumerate(waves):
        if tile and len(y) < n:
            y = np.tile(y, int(np.ceil(n / len(y))))
        y = y[:n]
        out[i, :len(y)] = y
    return out

def logmel(Y, n_mels=64, n_fft=1024, frames=128, top_db=80.0):
    hop = max(1, Y.shape[1] // frames)
    out = np.zeros((len(Y), n_mels, frames), np.float32)
    for i, y in enumerate(Y):
        p = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        p = librosa.util.fix_length(p, size=frames, axis=1)
        out[i] = librosa.power_to_db(p, ref=np.max, top_db=top_db)
    return out

def std_(F):
    return (F - F.mean(0)) / (F.std(0) + 1e-8)

def cluster_eval(F, y, k=None, seeds=(0, 1, 2), pca=None, whiten=True, n_init=10, standardize=True):
    k = k or len(np.unique(y))
    X = std_(F) if standardize else F
    res = []
    for s in seeds:
        Z = X
        if pca:
            Z = PCA(min(pca, X.shape[1], X.shape[0]-1), whiten=whiten, random_state=s).fit_transform(X)
        lab = KMeans(k, n_init=n_init, random_state=s).fit_predict(Z)
        res.append(scores(y, lab))
    return summarize(res)

def summarize(res):
    d = {}
    for key in ("nmi", "ami", "acc"):
        v = np.array([r[key] for r in res]); d[key] = (v.mean(), v.std())
    return d

def fmt(d):
    return " ".join(f"{k}={m:.3f}+-{s:.3f}" for k, (m, s) in d.items())
