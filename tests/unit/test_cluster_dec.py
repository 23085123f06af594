"""Clip features, the Clusterer, the DEC/IDEC clustering layer and the default preset's pieces."""

import numpy as np
import pytest

from flows.config import load_config
from tasks.cluster import ClusteringSettings, Clusterer, FeatureSettings, clip_features, mfcc_stats
from tasks.contrastive import augment, auto_epochs, crop_width
from tasks.dec import _affine, clustering_layer_class, target_distribution
from tasks.metrics import scores


def blobs(n=60, k=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, d))
    y = np.repeat(np.arange(k), n // k)
    return centers[y] + rng.normal(0, 1, (len(y), d)), y


def test_block_pooling_options():
    codes = np.arange(24, dtype=float).reshape(6, 4)  # 2 clips x 3 blocks x 4
    assert clip_features(codes, 3, "concat").shape == (2, 12)
    np.testing.assert_array_equal(clip_features(codes, 3, "mean")[0], codes[:3].mean(0))
    mm = clip_features(codes, 3, "meanmax")
    np.testing.assert_array_equal(mm[1], np.concatenate([codes[3:].mean(0), codes[3:].max(0)]))
    with pytest.raises(ValueError):
        clip_features(codes, 3, "median")


def test_clusterer_pca_whitening_fit_predict_and_round_trip(tmp_path):
    x, y = blobs()
    c = Clusterer(FeatureSettings(standardize=True, pca=4, whiten=True), ClusteringSettings(k=3, n_init=10))
    labels = c.fit_predict(x)
    assert scores(y, labels)["nmi"] == pytest.approx(1.0)
    z = c.transform(x)
    assert z.shape == (60, 4)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=0.05)  # whitened
    np.testing.assert_array_equal(c.predict(x), labels)  # predict = the K-Means assignment
    c.save(tmp_path / "c.npz")
    back = Clusterer.load(tmp_path / "c.npz")
    assert back.features == c.features and back.clustering == c.clustering
    np.testing.assert_array_equal(back.predict(x), labels)
    w, b = _affine(c)  # the fixed layer IDEC puts in the network is the same transform
    np.testing.assert_allclose(x @ w + b, z, rtol=1e-4, atol=1e-4)


def test_consensus_finds_the_blobs_and_is_a_centroid_model(tmp_path):
    x, y = blobs(n=90, k=3, d=8, seed=2)
    c = Clusterer(FeatureSettings(standardize=True, pca=6, whiten=True), ClusteringSettings(method="consensus", k=3, consensus_runs=20, seed=0))
    labels = c.fit_predict(x)
    assert scores(y, labels)["nmi"] == pytest.approx(1.0)
    assert c.centroids_.shape == (3, 6)
    c.save(tmp_path / "c.npz")
    np.testing.assert_array_equal(Clusterer.load(tmp_path / "c.npz").predict(x), labels)  # new clips: nearest centroid


def test_consensus_on_a_sample_assigns_every_clip():
    x, y = blobs(n=300, k=3, d=8, seed=3)
    c = Clusterer(FeatureSettings(standardize=True, pca=6, whiten=True),
                  ClusteringSettings(method="consensus", k=3, consensus_runs=10, consensus_sample=30, seed=0))
    labels = c.fit_predict(x)  # co-association of 30 clips; the other 270 go to the nearest centroid
    assert len(labels) == 300 and scores(y, labels)["nmi"] == pytest.approx(1.0)


def test_clustering_layer_soft_assignments_sum_to_one():
    import keras

    layer = clustering_layer_class()(4)
    layer.build((None, 3))
    centroids = np.eye(4, 3, dtype=np.float32) * 5
    layer.centroids.assign(centroids)
    z = np.random.default_rng(0).normal(0, 3, (50, 3)).astype(np.float32)
    q = keras.ops.convert_to_numpy(layer(z))
    assert q.shape == (50, 4) and np.all(q > 0)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    nearest = ((z[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(q.argmax(1), nearest)  # Student's t decreases with distance


def test_target_distribution_sharpens():
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.ones(5), size=200)
    p = target_distribution(q)
    np.testing.assert_allclose(p.sum(1), 1.0)
    entropy = lambda a: -(a * np.log(a)).sum(1)  # noqa: E731
    assert np.all(entropy(p) < entropy(q))
    assert np.all(p.max(1) >= q.max(1))
    np.testing.assert_array_equal(p.argmax(1), (q**2 / q.sum(0)).argmax(1))


def test_mfcc_stats_baseline_features():
    img = np.random.default_rng(0).random((3, 64, 40, 1)).astype(np.float32)
    f = mfcc_stats(img)
    assert f.shape == (3, 2 * 20 + 2 * 64) and np.all(np.isfinite(f))


def test_default_preset_resolves_auto_audio_settings():
    cfg = load_config("default").audio
    assert cfg.duration == "auto" and cfg.n_frames == "auto" and not cfg.resolved
    with pytest.raises(ValueError):
        cfg.geometry()
    r = cfg.resolve([0.4] * 50 + [0.6] * 50)
    assert r.resolved and r.duration == pytest.approx(0.6, abs=0.01)
    assert r.n_frames == 24  # ~0.6 s * 22050 / 512 = 25.8 -> a multiple of 8
    assert r.geometry().block_shape == (64, 24, 1) and r.geometry().blocks_per_clip == 1
    assert r.configured()["duration"] == "auto" and r.configured()["n_mels"] == 64
    long = cfg.resolve([30.0] * 10)
    assert long.duration == 10.0 and long.n_frames == 128  # clamped


def test_contrastive_views():
    assert crop_width(128, 0.6) == 80 and crop_width(24, 0.6) == 16 and crop_width(12, 0.6) == 12
    assert auto_epochs(400) == 100 and auto_epochs(3000) == 30
    x = np.random.default_rng(0).normal(size=(4, 64, 32, 1)).astype(np.float32)
    v1 = augment(x, x, 24, np.random.default_rng(0))
    v2 = augment(x, x, 24, np.random.default_rng(1))
    assert v1.shape == (4, 64, 24, 1) and not np.allclose(v1, v2)


def test_farther_than_ranks_a_clip_s_distance_among_the_fitted_clips():
    """0 at a centroid, about the rank of a fitted clip's own distance, 1 beyond every fitted clip; None
    for a clusterer that kept no spread (older runs)."""
    from tasks.cluster import Clusterer, ClusteringSettings, FeatureSettings

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(20, 1, (200, 2))])
    c = Clusterer(FeatureSettings(standardize=False, pca=0), ClusteringSettings(method="kmeans", k=2))
    c.fit_predict(x)
    assert c.farther_than(x[:1]) is None
    c.remember_spread(x)
    far = c.farther_than(np.concatenate([c.centroids_, [[10.0, 10.0]]]))
    assert far[0] == far[1] == 0.0 and far[2] == 1.0
    ranks = c.farther_than(x)
    assert abs(np.median(ranks) - 0.5) < 0.02  # the fitted clips themselves spread evenly over [0, 1]


def test_a_code_of_two_parts_is_reduced_and_clustered_part_by_part(tmp_path):
    from tasks.cluster import partitions

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 30)
    a = rng.normal(0, 6, (4, 12))[truth] + rng.normal(0, 1, (120, 12))  # part 1: four groups
    b = rng.normal(0, 1, (120, 12)) * 50  # part 2: loud noise, which one PCA over both parts would lead with
    x = np.concatenate([a, b], 1)
    features = FeatureSettings(standardize=False, pca=3, whiten=True)
    spec = ClusteringSettings(method="consensus", k=4, consensus_runs=20)
    c = Clusterer(features, spec, parts=2)
    labels = c.fit_predict(x)
    assert c.part_dims_.tolist() == [3, 3] and c.components_.shape == (6, 24)
    assert not c.components_[:3, 12:].any() and not c.components_[3:, :12].any()  # each part's components from that part alone
    np.testing.assert_allclose(np.abs(c.transform(x)[:, :3]), np.abs(Clusterer(features, spec).fit_transform(a)), rtol=1e-4, atol=1e-4)
    assert scores(truth, labels)["nmi"] > 0.9  # part 1's runs find the groups
    assert scores(truth, Clusterer(features, spec).fit_predict(x))["nmi"] < 0.3  # one PCA of both parts sees the loud noise
    assert partitions(c.transform(x), 4, 5, rng, parts=[3, 3]).shape == (10, 120)  # 5 runs per part
    with pytest.raises(ValueError, match="not 2 equal parts"):
        Clusterer(features, spec, parts=2).fit_transform(x[:, :23])
    c.save(tmp_path / "c.npz")
    assert (Clusterer.load(tmp_path / "c.npz").predict(x) == c.predict(x)).all()  # assign goes through the same parts
