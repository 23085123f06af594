"""--k auto (tasks/kauto.py) and the report's cluster browser (tasks/browser.py), as plain functions."""

import base64
import io
import json
import re

import numpy as np
import pytest

from flows.config import ConfigError, load_config
from tasks.browser import cluster_browser, encode_audio, pick_clips, script_json, thumbnail
from tasks.cluster import ClusteringSettings, FeatureSettings
from tasks.kauto import choose_k, resolve_k


def blobs(n_per=30, k=6, d=10, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, (k, d))
    y = np.repeat(np.arange(k), n_per)
    return centers[y] + rng.normal(0, 1, (len(y), d)), y


@pytest.mark.parametrize("k", [3, 6])
def test_choose_k_finds_the_number_of_well_separated_groups(k):
    x, _ = blobs(k=k, seed=k)
    z = (x - x.mean(0)) / x.std(0)
    record = choose_k(z, 2, 12, runs=10, seed=0)
    assert record["chosen"] == k, record
    assert record["k"] == list(range(2, 13)) and len(record["score"]) == len(record["rcsi"]) == len(record["silhouette"]) == 11
    assert max(record["score"]) == record["score"][record["k"].index(k)] and 0 <= min(record["score"]) <= 1


def test_resolve_k_keeps_a_number_and_picks_auto_within_the_clip_bound():
    x, y = blobs(n_per=10, k=4, seed=1)  # 40 clips: k_max 20 is cut to 13
    features = FeatureSettings(standardize=True, pca="auto", whiten=True)
    fixed = ClusteringSettings(method="consensus", k=5)
    assert resolve_k(x, features, fixed) == (fixed, None)
    chosen, record = resolve_k(x, features, ClusteringSettings(method="consensus", k="auto"))
    assert isinstance(chosen.k, int) and chosen.k == record["chosen"] == 4
    assert (record["k_min"], record["k_max"], record["k"][-1]) == (2, 13, 13)
    same, _ = resolve_k(np.zeros((30, 5)), features, ClusteringSettings(k="auto", k_min=3))  # nothing to choose from
    assert same.k == 3
    with pytest.raises(ValueError, match="cannot make 3 clusters"):
        resolve_k(x[:2], features, ClusteringSettings(k="auto", k_min=3))


def test_k_auto_settings():
    c = load_config("default", k="auto", k_min=4, k_max=12)
    assert (c.clustering.k, c.clustering.k_min, c.clustering.k_max, c.clustering.fewest) == ("auto", 4, 12, 4)
    assert c.features.pca_components(c.clustering) == 48  # room for k_max: 4 k
    assert load_config("default", k="7").clustering.k == 7 and load_config("default", k=7).clustering.fewest == 7
    assert ClusteringSettings(k="auto", k_max=20).k_range(30) == (2, 10)
    for bad, why in (({"k": "many"}, "clustering.k"), ({"k": "auto", "k_min": 6, "k_max": 5}, "k_max"), ({"k_min": 1}, "k_min")):
        with pytest.raises(ConfigError, match=why):
            load_config("default", **bad)


def test_the_browser_escapes_names_and_labels_and_plays_a_bounded_sample():
    hostile = ["</script><script>alert(1)</script>.wav", "a&b\"'<i>.wav", "caf\u00e9 \u2028.wav", "plain.wav"] * 6
    labels = ["<b>bold</b>", "", "x</SCRIPT>", "ok"] * 6
    clusters = np.repeat([0, 1, 2], 8)
    own = np.linspace(0, 1, 24)
    xy = np.random.default_rng(0).normal(size=(24, 2))
    page = cluster_browser(hostile, labels, clusters, xy, own, np.linspace(0, 1, 24), None, 3,
                           image_of=lambda i: np.random.default_rng(i).random((16, 24)),
                           audio_of=lambda i: None if i == 5 else base64.b64encode(b"OggS").decode())
    assert "<script>alert" not in page and "<b>bold</b>" not in page and "x</SCRIPT>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;.wav" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("</script>") == 2  # the data's and the code's own: nothing in the data closes one
    data = json.loads(re.search(r"id='audioclust-data'>(.*?)</script>", page, re.S).group(1))
    assert data["points"]["f"] == hostile and len(data["points"]["x"]) == 24
    assert "audio not readable" in page  # row 5 (cluster 0's least typical) could not be read
    shown, audio = pick_clips(clusters, own, 3)
    assert shown[0] == ([0, 1, 2], [7, 6, 5]) and set(audio) == set(range(24))  # small clusters: every clip
    shown, audio = pick_clips(np.repeat(np.arange(2), 100), np.arange(200.0), 2)
    assert len(audio) == 16 and {0, 1, 2, 97, 98, 99} <= set(audio)  # 8 per cluster, the shown ones among them
    assert script_json({"a": "</script>&\u2028"}) == '{"a":"\\u003c/script\\u003e\\u0026\\u2028"}'


def test_embedded_audio_is_ogg_opus_and_thumbnails_png():
    import soundfile as sf

    t = np.arange(44100 * 8) / 44100
    b64 = encode_audio(lambda: (np.sin(2 * np.pi * 440 * t)[:, None].astype(np.float32), 44100))
    y, rate = sf.read(io.BytesIO(base64.b64decode(b64)))
    assert rate == 16000 and abs(len(y) / rate - 6.0) < 0.1 and len(base64.b64decode(b64)) < 25_000  # 6 s at most, small
    assert encode_audio(lambda: (_ for _ in ()).throw(OSError("gone"))) is None
    assert base64.b64decode(thumbnail(np.random.default_rng(0).random((64, 32))))[:8] == b"\x89PNG\r\n\x1a\n"


def test_k_choice_figure(tmp_path):
    from tasks.figures import k_choice

    record = {"k": [2, 3, 4], "rcsi": [0.1, 0.5, 0.2], "silhouette": [0.2, 0.3, 0.25], "score": [0.0, 1.0, 0.3], "chosen": 3}
    assert k_choice(record, tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"
