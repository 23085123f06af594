import numpy as np
import pytest

from tasks.cluster import clip_features, kmeans
from tasks.metrics import clustering_accuracy, evaluate, public_mask, score_predictions, scores
from tasks.report import read_predictions


def test_perfect_clustering_under_renaming():
    s = scores(["a", "a", "b", "b", "c"], [2, 2, 0, 0, 1])
    assert s["nmi"] == pytest.approx(1) and s["acc"] == 1 and s["ari"] == pytest.approx(1)


def test_hand_checked_case():
    true, pred = [0, 0, 1, 1], [0, 0, 0, 1]
    # MI = .5 ln(4/3) + .25 ln(2/3) + .25 ln 2 = 0.2157615; H(true) = ln 2; H(pred) = 0.562335
    # arithmetic NMI = 0.2157615 / ((0.6931472 + 0.5623351) / 2) = 0.343711
    s = scores(true, pred)
    assert s["nmi"] == pytest.approx(0.343711, abs=1e-6)
    assert s["acc"] == pytest.approx(0.75)


def test_accuracy_is_one_to_one_not_majority():
    # two clusters both mostly 'a': majority purity would say 1.0, a one-to-one map says 0.5
    assert clustering_accuracy(["a", "a", "a", "b"], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert clustering_accuracy(["a", "a", "a", "a"], [0, 0, 1, 1]) == pytest.approx(0.5)


def test_public_split_is_half_and_order_independent():
    paths = [f"f{i}.wav" for i in range(11)]
    m = public_mask(paths, seed=0)
    assert m.sum() == 5
    shuffled = paths[::-1]
    m2 = public_mask(shuffled, seed=0)
    assert {p for p, k in zip(paths, m) if k} == {p for p, k in zip(shuffled, m2) if k}
    assert not np.array_equal(m, public_mask(paths, seed=1))


def test_evaluate_reports_all_and_halves():
    paths = [f"f{i}.wav" for i in range(8)]
    out = evaluate(paths, list("aabbaabb"), [0, 0, 1, 1, 0, 0, 1, 1])
    assert set(out) == {"all", "public", "private"}
    assert out["public"]["n"] + out["private"]["n"] == 8


def test_clip_features_concatenate_blocks_in_order():
    codes = np.arange(12 * 2).reshape(12, 2).astype(float)
    f = clip_features(codes, blocks_per_clip=6)
    assert f.shape == (2, 12)
    np.testing.assert_array_equal(f[1], codes[6:12].ravel())


def test_kmeans_separates_blobs():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.1, (20, 3)) for c in (0, 5, 10)])
    assert scores(np.repeat([0, 1, 2], 20), kmeans(x, 3))["nmi"] == pytest.approx(1)


def test_score_predictions_skips_unlabelled_files_and_matches_evaluate(tmp_path):
    csv_file = tmp_path / "predictions.csv"
    files = [f"d/{i}.wav" for i in range(10)]
    clusters = [i % 3 for i in range(10)]
    csv_file.write_text("file,cluster\n" + "".join(f"{f},{c}\n" for f, c in zip(files, clusters)))
    labels = {f: "abc"[c] for f, c in zip(files, clusters)}
    labels["d/0.wav"] = labels["d/5.wav"] = ""  # unlabelled: not scored
    rows = read_predictions(csv_file)
    assert rows == list(zip(files, clusters))
    result = score_predictions(rows, lambda f: labels.get(f, ""), split_seed=3)
    assert result["clips"] == 10 and result["labelled"] == 8
    kept = [i for i in range(10) if i not in (0, 5)]
    assert result["scores"] == evaluate([files[i] for i in kept], [labels[files[i]] for i in kept], [clusters[i] for i in kept], 3)
    assert result["scores"]["all"]["nmi"] == pytest.approx(1) and result["scores"]["all"]["n"] == 8
    assert score_predictions(rows, lambda f: "")["scores"] == {}


def test_degenerate_results_are_named_not_scored():
    from tasks.metrics import degenerate

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    assert degenerate(x, np.arange(30) % 3) is None
    assert degenerate(np.zeros((30, 81))).startswith("collapsed code: the clip features are all zeros")
    assert "the same for every clip" in degenerate(np.ones((30, 4)) * 0.3)
    assert degenerate(x, np.zeros(30, int)).startswith("one cluster holds every clip")
    assert "NaN" in degenerate(np.full((5, 2), np.nan))
