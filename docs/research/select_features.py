"""Experiment 1: unsupervised choice between candidate clip-feature sets (no labels used to pick).
A = SimCLR GAP+GMP (standardize -> PCA-16 whitened); B = SimCLR + segment-CMN block hybrid
(simclr_recipe.py --hand 1.0); Bs = same with the +std MFCC part of the block; C = segment-CMN MFCC (4 segments, clip-mean removed, + std) alone.
For each candidate: K-Means(k=10, n_init=10) in its PCA-16w space, then internal criteria:
silhouette, Calinski-Harabasz, -Davies-Bouldin (same whitened 16-d space for all candidates), kNN
consistency (share of 10 nearest neighbours in the same cluster), bootstrap stability = mean pairwise ARI of K-Means fits on 80 % subsamples, predicted on all clips.
usage: taskset -c 1 python select_features.py esc10 fsdd [--feat '{Q}/ts_{corp}_..._s{seed}.npy']
"""
import os, sys
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")
import numpy as np, librosa, itertools, time
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn import metrics
Q, SR, K = "/tmp/quality", 22050, 10

def load(corp):
    w = np.load(f"{Q}/{corp}_wave.npy", allow_pickle=True); lab = np.load(f"{Q}/{corp}_labels.npy")
    return list(w), np.unique(lab, return_inverse=True)[1]

def seg_cmn(waves, S=4, with_std=True):
    out = []
    for w in waves:
        t, _ = librosa.effects.trim(w, top_db=40); t = t if len(t) > 0.05 * SR else w
        m = librosa.feature.mfcc(y=t, sr=SR, n_mfcc=20, n_fft=1024, hop_length=256); c = m - m.mean(1, keepdims=True)
        f = [c[:, g].mean(1) if len(g) else np.zeros(20) for g in np.array_split(np.arange(c.shape[1]), S)]
        out.append(np.concatenate(f + ([m.std(1)] if with_std else [])))
    return np.array(out)

def std_(F): return (F - F.mean(0)) / (F.std(0) + 1e-8)
def blk(B): return std_(B) / np.sqrt(B.shape[1])

def space(F, seed, standardize=True):
    X = std_(F) if standardize else F
    return PCA(min(16, X.shape[1]), whiten=True, random_state=seed).fit_transform(X)

def stability(Z, seed, B=10, frac=0.8):
    rng = np.random.default_rng(seed); labs = []
    for b in range(B):
        idx = rng.choice(len(Z), int(frac * len(Z)), replace=False)
        labs.append(KMeans(K, n_init=3, random_state=seed * 100 + b).fit(Z[idx]).predict(Z))
    return float(np.mean([metrics.adjusted_rand_score(a, c) for a, c in itertools.combinations(labs, 2)]))

def knn_consistency(Z, lab, k=10):
    """Fraction of each clip's k nearest neighbours (in the clustering space) that share its cluster."""
    from sklearn.neighbors import NearestNeighbors
    nn = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z, return_distance=False)[:, 1:]
    return float((lab[nn] == lab[:, None]).mean())

def criteria(Z, lab, seed):
    return dict(sil=metrics.silhouette_score(Z, lab), ch=metrics.calinski_harabasz_score(Z, lab),
                db=-metrics.davies_bouldin_score(Z, lab), stab=stability(Z, seed), knn=knn_consistency(Z, lab))

FEAT = "{Q}/bestfeat_{corp}_band_e{ep}_s{seed}.npy"   # saved SimCLR GAP+GMP features (simclr_recipe.py)

def candidates(corp, seed, H, Hns):
    S = np.load(FEAT.format(Q=Q, corp=corp, seed=seed, ep=100 if corp == 'esc10' else 30))
    return {"A_simclr": space(S, seed), "B_hybrid": space(np.concatenate([blk(S), blk(Hns)], 1), seed, False),
            "Bs_hybrid": space(np.concatenate([blk(S), blk(H)], 1), seed, False), "C_segcmn": space(H, seed)}

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--feat" in args:                       # e.g. --feat '{Q}/ts_{corp}_pad_band_c0.6_f4_gg_s{seed}.npy'
        i = args.index("--feat"); FEAT = args[i + 1]; del args[i:i + 2]
    for corp in args or ["esc10", "fsdd"]:
        W, y = load(corp)
        p = f"{Q}/segcmn_{corp}.npy"
        if not os.path.exists(p): np.save(p, seg_cmn(W))
        H = np.load(p); Hns = H[:, :80]
        for seed in (0, 1, 2):
            rows = {}
            for name, Z in candidates(corp, seed, H, Hns).items():
                lab = KMeans(K, n_init=10, random_state=seed).fit_predict(Z)
                c = criteria(Z, lab, seed); rows[name] = (metrics.normalized_mutual_info_score(y, lab), c)
                print(f"{corp} s{seed} {name:9s} nmi={rows[name][0]:.3f} "
                      f"ami={metrics.adjusted_mutual_info_score(y, lab):.3f} " +
                      " ".join(f"{k}={v:.3f}" for k, v in c.items()), flush=True)
            for pool in (("A_simclr", "B_hybrid"), ("A_simclr", "B_hybrid", "Bs_hybrid"), tuple(rows)):
                for crit in ("sil", "ch", "db", "stab", "knn"):
                    pick = max(pool, key=lambda n: rows[n][1][crit])       # all criteria: larger = better
                    print(f"PICK {corp} s{seed} pool={'+'.join(p[0:2] for p in pool)} {crit:4s} -> {pick} nmi={rows[pick][0]:.3f}")
