"""Clip features from block codes (or the handcrafted baseline), and K-Means.

A clip's feature vector is built in three steps, each a :class:`FeatureSettings` field:

1. combine its blocks' codes (``block_pool``): concatenated in block order (the report),
   or their mean, or mean and max;
2. ``standardize``: z-score each feature with corpus statistics;
3. ``pca``: project onto that many principal components, ``whiten``-ed to unit variance.

The centroids come from K-Means (best of ``n_init`` k-means++ restarts), or from a
``consensus`` of many K-Means partitions (:func:`consensus_labels`), which is steadier
and, on the contrastive codes, better. Either way every clip, of the corpus or new, goes
to its nearest centroid: :class:`Clusterer` holds the fitted transform and the centroids,
so new clips can be assigned later (``audioclust assign``) exactly as the corpus was; it
saves to one ``.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from storage import Geometry, from_blocks

class FeatureSettings(BaseModel):
    """``[features]``: what clustering sees per clip."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["network", "mfcc-stats"] = "network"  # the trained encoder's codes, or the handcrafted baseline
    block_pool: Literal["concat", "mean", "meanmax"] = "concat"  # how a clip's block codes combine
    standardize: bool = False  # z-score each feature over the corpus
    pca: int | Literal["auto"] = 0  # > 0: project onto this many principal components; auto: see pca_components
    whiten: bool = False  # scale the components to unit variance
    # several networks' codes side by side (model.input_norm lists several): standardized and reduced as one code,
    # or each on its own with the consensus drawing its runs from each
    networks: Literal["joint", "apart"] = "apart"

    def pca_components(self, clustering: "ClusteringSettings") -> int:
        """``pca`` as a number. ``"auto"``: for K-Means, about 1.6 components per cluster; for
        ``consensus``, 4 per cluster, in [2, 64].

        Whitening gives every kept component equal weight, so one K-Means on many more than the
        k - 1 directions that separate k cluster means fits noise dimensions; the consensus draws
        each of its runs from the first 4 to all components, so it can be given more
        (docs/research/consensus.md)."""
        if self.pca != "auto":
            return self.pca
        if clustering.k == "auto":  # before k is chosen: room for the largest k of the range
            clustering = clustering.model_copy(update={"k": clustering.k_max})
        wide = clustering.method in ("consensus", "head")  # the head's neighbours come from a consensus
        return int(np.clip(round((4.0 if wide else 1.6) * clustering.k), 2, 64 if wide else 32))


class ClusteringSettings(BaseModel):
    """``[clustering]``: how clips become clusters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["kmeans", "consensus", "head", "idec"] = "kmeans"  # consensus: of many K-Means runs; head, idec: inside the network
    k: int | Literal["auto"] = 20  # auto: chosen from the data in [k_min, k_max] (tasks/kauto.py)
    k_min: int = 2
    k_max: int = 20  # (at run time also at most a third of the clips)
    n_init: int = 10
    seed: int = 0
    consensus_runs: int = 100  # K-Means partitions combined
    consensus_sample: int = 4000  # clips the co-association is computed on (a sample x sample matrix)
    dec_gamma: float = 0.1  # IDEC: weight of the clustering (KL) loss against the reconstruction loss
    dec_tol: float = 0.001  # IDEC: stop when fewer than this fraction of assignments change
    dec_epochs: int = 30  # IDEC: at most this many passes over the clips
    dec_learning_rate: float = 1e-4
    dec_batch_size: int = 16
    head_neighbours: int = 10  # head (SCAN, tasks/head.py): neighbours per clip, by co-association
    head_count: int = 5  # heads trained side by side; the lowest SCAN loss is kept
    head_hidden: int = 128
    head_entropy_weight: float = 5.0  # keeps the clusters from collapsing into one
    head_noise: float = 0.3  # std of the Gaussian noise on the (whitened) features of a view
    head_epochs: int = 40
    head_self_label_epochs: int = 10  # 0: no self-labeling
    head_threshold: float = 0.99  # self-labeling: the probability above which a clip is its own target

    @field_validator("k", "k_min", "k_max")
    @classmethod
    def _k(cls, v: int | str, info) -> int | str:
        if v != "auto" and v < 2:
            raise ValueError(f"{info.field_name} (the number of clusters) must be at least 2, got {v}")
        return v

    @model_validator(mode="after")
    def _range(self) -> "ClusteringSettings":
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be at least k_min ({self.k_min})")
        return self

    def k_range(self, clips: int) -> tuple[int, int]:
        """``[k_min, k_max]`` for ``clips`` clips: k_max at most a third of them (clusters of 3 clips on average)."""
        return self.k_min, max(self.k_min, min(self.k_max, clips // 3))

    @property
    def fewest(self) -> int:
        """The fewest clusters this setting makes: k, or k_min when k is chosen."""
        return self.k_min if self.k == "auto" else self.k

    @field_validator("consensus_runs")
    @classmethod
    def _runs(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"consensus_runs must be at least 1, got {v}")
        return v


def clip_features(codes: np.ndarray, blocks_per_clip: int, pool: str = "concat") -> np.ndarray:
    """One row per clip from its blocks' codes: concatenated in block order (as in the report), mean, or mean+max."""
    n_blocks, size = codes.shape
    if n_blocks % blocks_per_clip:
        raise ValueError(f"{n_blocks} codes are not a whole number of clips of {blocks_per_clip} blocks")
    per_clip = codes.reshape(n_blocks // blocks_per_clip, blocks_per_clip, size)
    if pool == "concat":
        return per_clip.reshape(len(per_clip), -1)
    if pool == "mean":
        return per_clip.mean(1)
    if pool == "meanmax":
        return np.concatenate([per_clip.mean(1), per_clip.max(1)], 1)
    raise ValueError(f"block_pool must be concat, mean or meanmax, not {pool!r}")


def clip_feature_rows(features: FeatureSettings, geometry: Geometry, top_db: float, blocks: np.ndarray | None = None,
                      codes: np.ndarray | None = None) -> np.ndarray:
    """One row of clip features per clip, the same way for the corpus and for ``assign``: the network's
    block ``codes`` pooled per clip, or the handcrafted baseline from the clips' ``blocks`` (clip-major)."""
    if features.source == "mfcc-stats":
        bpc = geometry.blocks_per_clip
        images = np.stack([from_blocks(blocks[i : i + bpc], *geometry.grid) for i in range(0, len(blocks), bpc)])
        return mfcc_stats(images, top_db)
    return clip_features(codes, geometry.blocks_per_clip, features.block_pool)


def mfcc_stats(images: np.ndarray, top_db: float = 80.0, n_mfcc: int = 20) -> np.ndarray:
    """The handcrafted baseline: MFCC and log-Mel band mean and std over time, per clip.

    ``images`` are stored (clip, band, frame, channel) images in [0, 1]; channel 0 is the
    dB spectrogram scaled by ``top_db`` (so MFCC = DCT of the log-Mel, as librosa computes it).
    """
    import librosa

    out = []
    for img in images:
        db = img[..., 0].astype(np.float64) * top_db - top_db
        mfcc = librosa.feature.mfcc(S=db, n_mfcc=min(n_mfcc, db.shape[0]))
        out.append(np.concatenate([mfcc.mean(1), mfcc.std(1), db.mean(1), db.std(1)]))
    return np.asarray(out, np.float32)


class Clusterer:
    """Feature transform (standardize, PCA, whitening) + K-Means centroids; ``fit`` / ``predict`` / ``save`` / ``load``."""

    def __init__(self, features: FeatureSettings, clustering: ClusteringSettings, parts: int = 1):
        """``parts``: the feature columns are that many equal parts (several networks' codes side by side): each is
        standardized and reduced on its own, and a consensus draws its K-Means runs from each part."""
        self.features, self.clustering, self.parts = features, clustering, int(parts)
        self.mean_ = self.scale_ = self.components_ = self.pca_mean_ = self.pca_scale_ = self.centroids_ = None
        self.part_dims_ = None  # the transformed columns of each part, in order
        self.distance_quantiles_ = None  # of the fitted clips' distances to their centroids (see farther_than)
        self.variance_ = None  # of the fitted clips around their centroids, per dimension (see predict_proba)
        self.head_ = None  # method "head": the kept head's weights [W1, b1, W2, b2] (tasks/head.py)
        self.head_summary = None  # method "head": how its training went (metrics.json "head"); not saved

    # -- the feature transform ----------------------------------------------------------
    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        d = x.shape[1]
        self.mean_, self.scale_ = np.zeros(d), np.ones(d)
        if self.features.standardize:
            self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-8
        z = (x - self.mean_) / self.scale_
        if d % self.parts:
            raise ValueError(f"{d} feature columns are not {self.parts} equal parts")
        size = d // self.parts
        self.part_dims_ = np.full(self.parts, size)
        if components := self.features.pca_components(self.clustering):
            from scipy.linalg import block_diag
            from sklearn.decomposition import PCA

            n = min(components, size, len(z) - 1)
            fits = [PCA(n, whiten=False, random_state=self.clustering.seed).fit(z[:, p * size : (p + 1) * size]) for p in range(self.parts)]
            # one projection for all parts: block-diagonal, so each part's components come from that part alone
            self.pca_mean_, self.components_ = np.concatenate([f.mean_ for f in fits]), block_diag(*[f.components_ for f in fits])
            self.pca_scale_ = np.concatenate([np.sqrt(f.explained_variance_) + 1e-12 if self.features.whiten else np.ones(n) for f in fits])
            self.part_dims_ = np.full(self.parts, n)
        return self.transform(x)

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean_) / self.scale_
        if self.components_ is not None:
            z = (z - self.pca_mean_) @ self.components_.T / self.pca_scale_
        return z.astype(np.float32)

    # -- clustering ------------------------------------------------------------------------
    def fit_predict(self, x: np.ndarray, work_dir: str | Path | None = None, log=print) -> np.ndarray:
        """Fit the transform and the clusters (K-Means, a consensus of K-Means runs, or a head trained on
        the consensus's neighbours, checkpointed under ``work_dir``); cluster per row."""
        z = self.fit_transform(x)
        spec = self.clustering
        if spec.method in ("consensus", "head"):
            n = spec.consensus_sample
            rows = np.random.default_rng(spec.seed).permutation(len(z))[:n] if len(z) > n else np.arange(len(z))
            sample = z[rows]
            labels, together = consensus_labels(sample, spec.k, spec.consensus_runs, spec.seed, return_matrix=True, parts=self.part_dims_)
            self.centroids_ = np.stack([sample[labels == c].mean(0) for c in range(spec.k)])
            if spec.method == "head":
                from tasks.head import train_head

                self.head_, self.head_summary = train_head(sample, together, spec, Path(work_dir or ".") / "head_checkpoint", log)
                labels = self._assign(z)
                # a head cluster's centre is the mean of its clips (a cluster the head left empty keeps the consensus's)
                self.centroids_ = np.stack([z[labels == c].mean(0) if (labels == c).any() else self.centroids_[c] for c in range(spec.k)])
                return labels
            return self._nearest(z)  # the corpus goes through the same rule as new clips
        labels, self.centroids_ = kmeans(z, spec.k, spec.n_init, spec.seed, return_centroids=True)
        return labels

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Each row's probability of each cluster; its maximum is the clip's confidence. The head's softmax;
        for centroid methods, the posterior of a mixture of equal spherical Gaussians at the centroids, their
        variance that of the fitted clips around their centroids (:meth:`remember_spread`); without it
        (IDEC), the Student's-t soft assignment DEC trains, ``(1 + d^2)^-1`` normalized."""
        return self._proba(self.transform(x))

    def _proba(self, z: np.ndarray) -> np.ndarray:
        if self.head_ is not None:
            from tasks.head import probabilities

            return probabilities(z, list(self.head_))
        from sklearn.metrics.pairwise import euclidean_distances

        d2 = euclidean_distances(z.astype(np.float64), np.asarray(self.centroids_, np.float64), squared=True)
        if self.variance_ is None:
            q = 1.0 / (1.0 + d2)
        else:
            q = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * float(self.variance_)))
        return q / q.sum(1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The head's argmax, else the nearest centroid in the fitted feature space (for IDEC: the refined centroids)."""
        return self._assign(self.transform(x))

    def _assign(self, z: np.ndarray) -> np.ndarray:
        return self._proba(z).argmax(1) if self.head_ is not None else self._nearest(z)

    def _nearest(self, z: np.ndarray) -> np.ndarray:
        return self._nearest_and_distance(z)[0]

    def _nearest_and_distance(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each row of ``z`` and the Euclidean distance to it (scikit-learn works in slices)."""
        from sklearn.metrics import pairwise_distances_argmin_min

        near, dist = pairwise_distances_argmin_min(np.asarray(z, np.float32), self.centroids_.astype(np.float32))
        return near.astype(np.int64), dist.astype(np.float32)

    # -- how typical a clip is ------------------------------------------------------------------
    def remember_spread(self, x: np.ndarray) -> np.ndarray:
        """Keep the percentiles of the fitted clips' distances to their nearest centroid, so that
        :meth:`farther_than` can rank a new clip's distance among them; return :meth:`predict_proba`
        of ``x`` (with the spread just kept), from the same transformed rows."""
        z = self.transform(x)
        distance = np.linalg.norm(z - self.centroids_[self._assign(z)], axis=1)
        self.distance_quantiles_ = np.quantile(distance, np.linspace(0, 1, 101))
        self.variance_ = np.float64((distance**2).mean() / z.shape[1] + 1e-12)  # per dimension, for predict_proba
        return self._proba(z)

    def farther_than(self, x: np.ndarray) -> np.ndarray | None:
        """Per row: the share of the fitted clips that lie closer to their centroid than this row lies to
        its own (0.5: a typical clip; 1.0: farther out than all of them, a likely outlier). None when
        the spread was not kept (IDEC runs, older runs)."""
        return self.predict_and_rank(x)[1]

    def predict_and_rank(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:meth:`predict`, :meth:`farther_than` (a row's distance to its cluster's centre, ranked) and the
        confidence (the largest of :meth:`predict_proba`)."""
        z = self.transform(x)
        proba = self._proba(z)
        near = proba.argmax(1) if self.head_ is not None else self._nearest(z)
        dist = np.linalg.norm(z - self.centroids_[near], axis=1)
        far = None
        if self.distance_quantiles_ is not None:
            q = np.asarray(self.distance_quantiles_)
            far = np.interp(dist, q, np.linspace(0, 1, len(q)))
        return near, far, proba.max(1)

    def save(self, path: str | Path) -> None:
        arrays = {k: v for k, v in vars(self).items() if k.endswith("_") and v is not None and k != "head_"}
        arrays.update({f"head{i}_": w for i, w in enumerate(self.head_ or [])})
        spec = np.array(json.dumps({"features": self.features.model_dump(mode="json"), "clustering": self.clustering.model_dump(mode="json")}))
        np.savez(path, spec=spec, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Clusterer":
        with np.load(path, allow_pickle=False) as z:
            spec = json.loads(str(z["spec"]))
            self = cls(FeatureSettings(**spec["features"]), ClusteringSettings(**spec["clustering"]))
            for name in z.files:
                if name != "spec" and not name.startswith("head"):
                    setattr(self, name, z[name])
            if "head0_" in z.files:
                self.head_ = [z[f"head{i}_"] for i in range(4)]
        return self


def kmeans(features: np.ndarray, k: int, n_init: int = 10, seed: int = 0, return_centroids: bool = False):
    """K-Means (k-means++ init, ``n_init`` restarts, best inertia kept): cluster per row."""
    from sklearn.cluster import KMeans

    if len(features) < k:
        raise ValueError(f"cannot make {k} clusters from {len(features)} clips")
    km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed).fit(features)
    return (km.labels_, km.cluster_centers_) if return_centroids else km.labels_


def partitions(z: np.ndarray, k: int, runs: int, rng: np.random.Generator, unit: bool = True, min_dims: int = 4,
               parts=None) -> np.ndarray:
    """``runs`` K-Means labelings of ``z``'s rows, each on the first d columns (d drawn from ``min_dims`` to all);
    ``parts`` (the column counts of consecutive parts of ``z``): ``runs`` labelings of each part."""
    from sklearn.cluster import KMeans

    if parts is not None and len(parts) > 1:
        edges = np.cumsum([0, *parts])
        return np.concatenate([partitions(z[:, a:b], k, runs, rng, unit, min_dims) for a, b in zip(edges[:-1], edges[1:])])
    dims = z.shape[1]
    out = np.empty((runs, len(z)), np.int32)
    for r in range(runs):
        d = int(rng.integers(min(min_dims, dims), dims + 1))
        u = z[:, :d] / (np.linalg.norm(z[:, :d], axis=1, keepdims=True) + 1e-12) if unit else z[:, :d]
        out[r] = KMeans(k, init="k-means++", n_init=1, random_state=int(rng.integers(2**31))).fit_predict(u)
    return out


def leading(z: np.ndarray, parts, d: int) -> tuple[np.ndarray, list[int] | None]:
    """The first ``d`` columns of each part of ``z`` (``parts``: their column counts; None: one part), and their counts."""
    if parts is None or len(parts) < 2:
        return z[:, :d], None
    edges = np.cumsum([0, *parts])
    keep = [min(d, int(p)) for p in parts]
    return np.concatenate([z[:, a : a + m] for a, m in zip(edges[:-1], keep)], 1), keep


def consensus_matrix(labels: np.ndarray, k: int) -> np.ndarray:
    """Share of the labelings (rows of ``labels``) that put each pair of columns in one cluster."""
    runs, n = labels.shape
    onehot = np.zeros((n, runs * k), np.float32)
    for r, lab in enumerate(labels):
        onehot[np.arange(n), r * k + lab] = 1.0
    return onehot @ onehot.T / runs


def consensus_labels(z: np.ndarray, k: int, runs: int = 100, seed: int = 0, min_dims: int = 4, return_matrix: bool = False, parts=None):
    """Evidence accumulation (Fred and Jain, 2005) over K-Means partitions of random sub-spaces.

    ``z`` holds whitened principal components, strongest first. Each of ``runs`` partitions is
    one k-means++ K-Means on the first ``d`` components (``d`` drawn from ``min_dims`` to all of
    them), each row scaled to unit length (cosine geometry, as the contrastive codes were
    trained in); with ``parts`` (several networks' codes), ``runs`` partitions of each part. Two
    clips' co-association is the fraction of partitions that put them together; average linkage
    on ``1 - co-association`` cuts the result into ``k`` clusters.
    Measured on the default preset's esc10 codes (3 networks, 32 components): one K-Means
    (best of 10 restarts) NMI 0.585 +- 0.055, this 0.677 +- 0.014 (docs/research/consensus.md).
    """
    from sklearn.cluster import AgglomerativeClustering

    if len(z) < k:
        raise ValueError(f"cannot make {k} clusters from {len(z)} clips")
    together = consensus_matrix(partitions(z, k, runs, np.random.default_rng(seed), min_dims=min_dims, parts=parts), k)
    distance = 1.0 - together
    np.fill_diagonal(distance, 0.0)
    labels = AgglomerativeClustering(k, metric="precomputed", linkage="average").fit_predict(distance)
    return (labels, together) if return_matrix else labels


def consensus_agreement(x: np.ndarray, k: int, seed: int = 0, runs: int = 50, sample: int = 2000) -> float:
    """How consistently K-Means runs cluster the rows of ``x`` into ``k``, in [0, 1]: over (a sample of) the
    rows, the mean share of runs that put a row with each other row of its consensus cluster. ``x`` is
    standardized and whitened to ``4 k`` components, as the ``default`` preset clusters it, whatever the run's
    ``[features]``: the network a training keeps (and its cache) must not depend on the clustering settings."""
    rows = np.random.default_rng(seed).permutation(len(x))[:sample]
    spec = ClusteringSettings(method="consensus", k=k, consensus_runs=runs, seed=seed)
    z = Clusterer(FeatureSettings(standardize=True, pca="auto", whiten=True), spec).fit_transform(np.asarray(x)[rows])
    labels, together = consensus_labels(z, k, runs, seed, return_matrix=True)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    return float(((together * same).sum(1) / np.maximum(same.sum(1), 1)).mean())
