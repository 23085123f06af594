"""The clustering head (tasks/head.py): its losses on toy batches, its numpy forward pass, and the head as a clusterer."""

import numpy as np
import pytest

from tasks.cluster import ClusteringSettings, Clusterer, FeatureSettings
from tasks.head import head_model, neighbours, probabilities, scan_loss, self_label_loss


def loss_value(fn, y_pred):
    from keras import ops

    return ops.convert_to_numpy(fn(np.zeros(len(y_pred), np.float32), np.asarray(y_pred, np.float32)))


def test_scan_loss_rewards_neighbours_that_agree_and_an_even_spread():
    k = 2
    agree = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], np.float32)  # clip, neighbour: same cluster; the batch uses both
    disagree = np.array([[0.9, 0.1, 0.1, 0.9], [0.1, 0.9, 0.9, 0.1]], np.float32)
    no_entropy = scan_loss(k, 1, 0.0)
    assert loss_value(no_entropy, agree) == pytest.approx([0, 0], abs=1e-5)  # -log <p, q> = -log 1
    assert loss_value(no_entropy, disagree) == pytest.approx([-np.log(0.18)] * 2, rel=1e-4)
    # the entropy term: -w * H(mean p), the same for every clip of the batch
    with_entropy = scan_loss(k, 1, 5.0)
    assert loss_value(with_entropy, agree) == pytest.approx([-5 * np.log(2)] * 2, rel=1e-4)
    collapsed = np.array([[1, 0, 1, 0], [1, 0, 1, 0]], np.float32)  # every clip in cluster 0: no spread, no reward
    assert loss_value(with_entropy, collapsed) == pytest.approx([0, 0], abs=1e-5)


def test_scan_loss_sums_over_heads():
    k = 2
    one = np.array([[0.9, 0.1, 0.1, 0.9]], np.float32)
    two = np.array([[0.9, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.9]], np.float32)  # head 0 and head 1, clip then neighbour
    assert loss_value(scan_loss(k, 2, 0.0), two) == pytest.approx(2 * loss_value(scan_loss(k, 1, 0.0), one), rel=1e-5)


def test_self_labeling_counts_only_confident_clips_and_weights_clusters_evenly():
    k, threshold = 2, 0.9
    clean = np.array([[0.95, 0.05], [0.97, 0.03], [0.02, 0.98], [0.6, 0.4]], np.float32)  # three confident, one not
    noisy = np.array([[0.8, 0.2], [0.5, 0.5], [0.3, 0.7], [0.1, 0.9]], np.float32)
    got = loss_value(self_label_loss(k, threshold), np.concatenate([clean, noisy], 1))
    # cluster 0 has two confident clips, cluster 1 one: weights 3 / (2 * 2) and 3 / (2 * 1)
    assert got == pytest.approx([-np.log(0.8) * 0.75, -np.log(0.5) * 0.75, -np.log(0.7) * 1.5, 0.0], rel=1e-4)
    assert loss_value(self_label_loss(k, 0.99), np.concatenate([clean, noisy], 1)) == pytest.approx([0, 0, 0, 0])


def test_neighbours_follow_the_co_association_and_never_the_clip_itself():
    together = np.array([[1, 0.9, 0.1, 0.1], [0.9, 1, 0.2, 0.1], [0.1, 0.2, 1, 0.8], [0.1, 0.1, 0.8, 1]])
    z = np.eye(4)
    assert neighbours(together, z, 1)[:, 0].tolist() == [1, 0, 3, 2]
    # equal co-association: the nearer by cosine wins
    tie = np.ones((3, 3))
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    assert neighbours(tie, z, 1)[0, 0] == 2


def test_the_numpy_head_matches_the_keras_head():
    import keras

    keras.utils.set_random_seed(0)
    model = head_model(6, 3, 1, 8)
    z = np.random.default_rng(0).normal(size=(20, 9)).astype(np.float32)  # extra columns are ignored
    want = model.predict(z[:, :6], verbose=0)
    got = probabilities(z, model.get_weights())
    assert got == pytest.approx(want, abs=1e-5)
    assert got.sum(1) == pytest.approx(np.ones(20))


def test_the_head_clusters_separated_blobs_and_survives_save_and_load(tmp_path):
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (4, 12))
    truth = np.repeat(np.arange(4), 30)
    x = centres[truth] + rng.normal(0, 1, (120, 12))
    spec = ClusteringSettings(method="head", k=4, consensus_runs=20, head_epochs=8, head_self_label_epochs=3)
    c = Clusterer(FeatureSettings(standardize=True, pca="auto", whiten=True), spec)
    labels = c.fit_predict(x, work_dir=tmp_path)
    assert normalized_mutual_info_score(truth, labels) >= 0.9
    assert c.head_summary["heads"] == 5 and 0 <= c.head_summary["kept"] < 5
    assert not (tmp_path / "head_checkpoint" / "scan").exists()  # finished: the checkpoint is gone
    proba = c.predict_proba(x)
    assert proba.argmax(1).tolist() == labels.tolist() and proba.sum(1) == pytest.approx(np.ones(120))
    c.remember_spread(x)
    c.save(tmp_path / "c.npz")
    back = Clusterer.load(tmp_path / "c.npz")
    near, far, confidence = back.predict_and_rank(x)
    assert near.tolist() == labels.tolist() and confidence == pytest.approx(proba.max(1), abs=1e-6)
    assert far is not None and ((0 <= far) & (far <= 1)).all()


def test_centroid_methods_give_a_mixture_posterior_as_confidence():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1.0, (200, 2)), rng.normal([3, 0], 1.0, (200, 2))])
    c = Clusterer(FeatureSettings(), ClusteringSettings(k=2))
    labels = c.fit_predict(x)
    dec = c.predict_proba(x)  # before the spread is known (IDEC runs): DEC's Student's-t assignment
    assert dec.argmax(1).tolist() == labels.tolist()
    c.remember_spread(x)
    # unit variance across the split, a truncated one (about 0.75) along it: about 0.875 per dimension
    assert float(c.variance_) == pytest.approx(0.875, abs=0.08)
    proba = c.predict_proba(x)
    assert proba.argmax(1).tolist() == labels.tolist() and proba.sum(1) == pytest.approx(np.ones(400))
    centre = c.centroids_.mean(0, keepdims=True)
    assert c.predict_proba(centre).max() == pytest.approx(0.5, abs=1e-6)  # half-way between the two: a coin toss
    far_side = c.centroids_[[0]] + 2 * (c.centroids_[[0]] - centre)
    assert c.predict_proba(far_side).max() > 0.999  # beyond a centre, away from the other: sure
    assert 0.6 < np.median(proba.max(1)) < 0.999
