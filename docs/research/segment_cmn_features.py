# handcrafted with time structure: trimmed MFCC resampled to S segments (digits check)
from qlib import *
for corp in ["fsdd", "esc10"]:
    W, y = load(corp); WW = trim(W)
    for S in (1, 4, 8):
        for cmn in (False, True):
            F = []
            for w in WW:
                m = librosa.feature.mfcc(y=w, sr=SR, n_mfcc=20, n_fft=1024, hop_length=256)
                if cmn: m = m - m.mean(1, keepdims=True)
                seg = np.array_split(np.arange(m.shape[1]), S)
                F.append(np.concatenate([m[:, g].mean(1) if len(g) else np.zeros(20) for g in seg] + [m.std(1)]))
            F = np.array(F)
            print(corp, f"mfcc segments={S} cmn={cmn}", fmt(cluster_eval(F, y, pca=32, whiten=False)), "| pca16w", fmt(cluster_eval(F, y, pca=16)), flush=True)
