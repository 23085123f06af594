"""Two-pipeline recipe with an unsupervised (label-free) pick, evaluated on saved features.
P1 = simclr_recipe.py features (padded input, per-band standardized, crop 0.6; GAP+GMP)
     -> standardize -> PCA-16 whitened.
P2 = timeshape_variants.py --input tn --norm cmn --crop 0.8 features (GAP+GMP) as one block +
     segment-CMN MFCC block (select_features.seg_cmn: 4 segments of the clip-mean-removed MFCC-20
     + MFCC std, 100 dims); each block standardized and scaled by 1/sqrt(dims) -> PCA-16 whitened.
Each: K-Means(k, n_init=10, random_state=seed). Criteria are computed in each pipeline's own
PCA-16w space; the pick rule is printed for silhouette, Calinski-Harabasz, -Davies-Bouldin,
bootstrap stability and kNN consistency.  Labels are used only to report NMI/AMI afterwards.
usage: taskset -c 1 python two_pipeline_select.py esc10:0,1,2 fsdd:0,1,2
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from select_features import *

P1 = "{Q}/bestfeat_{corp}_band_e{ep}_s{seed}.npy"
P2 = "{Q}/ts_{corp}_tn_cmn_c0.8_f0_gg_s{seed}.npy"

if __name__ == "__main__":
    for arg in sys.argv[1:] or ["esc10:0,1,2", "fsdd:0,1,2"]:
        corp, seeds = arg.split(":"); W, y = load(corp); H = np.load(f"{Q}/segcmn_{corp}.npy")
        for seed in map(int, seeds.split(",")):
            ep = 100 if corp == "esc10" else 30
            F1 = np.load(P1.format(Q=Q, corp=corp, ep=ep, seed=seed)); F2 = np.load(P2.format(Q=Q, corp=corp, seed=seed))
            Z = {"P1": space(F1, seed), "P2": space(np.concatenate([blk(F2), blk(H)], 1), seed, False)}
            rows = {}
            for n, z in Z.items():
                lab = KMeans(K, n_init=10, random_state=seed).fit_predict(z); c = criteria(z, lab, seed)
                rows[n] = (metrics.normalized_mutual_info_score(y, lab), metrics.adjusted_mutual_info_score(y, lab), c)
                print(f"{corp} s{seed} {n} nmi={rows[n][0]:.3f} ami={rows[n][1]:.3f} " + " ".join(f"{k}={v:.3f}" for k, v in c.items()), flush=True)
            for crit in ("sil", "ch", "db", "stab", "knn"):
                pick = max(rows, key=lambda n: rows[n][2][crit])
                print(f"PICK {corp} s{seed} {crit:4s} -> {pick} nmi={rows[pick][0]:.3f} ami={rows[pick][1]:.3f}")
