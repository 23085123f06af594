"""Clip features -> K-Means -> predictions, scores and a metrics file."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from storage import Store
from tasks.caching import given_key
from tasks.cluster import ClusteringSettings, Clusterer, FeatureSettings, clip_feature_rows
from tasks.kauto import resolve_k
from tasks.metrics import degenerate, evaluate


def clip_feature_matrix(store: Store, features: FeatureSettings, codes: str = "codes") -> np.ndarray:
    """Raw clip features of the stored (ok) clips, in store order: pooled block codes, or the MFCC baseline."""
    ok, geometry = store.ok(), store.geometry
    if features.source == "mfcc-stats":  # chunk by chunk: the images of a large corpus need not fit in memory
        top_db = float(store.attrs.get("audio", {}).get("top_db", 80.0))
        parts = [clip_feature_rows(features, geometry, top_db, blocks=store.blocks(*store.block_range(s, e)))[ok[s:e]]
                 for s, e in store.clip_chunks() if ok[s:e].any()]
        return np.concatenate(parts)
    return clip_feature_rows(features, geometry, 0.0, codes=store.read(codes))[ok]


def code_parts(model_dir: str | None) -> int:
    """How many networks' codes lie side by side in a trained model's code (its ``train.json``; 1 without one)."""
    summary = Path(model_dir or "", "train.json")
    return int(json.loads(summary.read_text()).get("code_parts") or 1) if model_dir and summary.is_file() else 1


def cluster_and_report(
    store_url: str,
    out_dir: str,
    features: FeatureSettings,
    clustering: ClusteringSettings,
    split_seed: int = 0,
    codes: str = "codes",
    model_dir: str | None = None,
    log=print,
) -> dict:
    """Cluster the stored clips (K-Means, or IDEC refined in the network in ``model_dir``);
    write ``predictions.csv``, ``rejects.csv``, ``metrics.json`` and ``clusterer.npz``."""
    store = Store.open(store_url)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = store.ok()
    paths = store.read("path").astype(str)
    labels = store.read("label").astype(str)
    x = clip_feature_matrix(store, features, codes)
    parts = code_parts(model_dir) if features.source == "network" and features.networks == "apart" else 1
    clustering, k_auto = resolve_k(x, features, clustering, parts)  # from here on k is a number
    if k_auto:
        log(f"k = {clustering.k} chosen in [{k_auto['k_min']}, {k_auto['k_max']}] ({k_auto.get('seconds', 0)} s)")
    clusterer = Clusterer(features, clustering, parts)
    with warnings.catch_warnings():  # identical clips (a collapsed code) are reported below, not warned about
        warnings.simplefilter("ignore", ConvergenceWarning)
        pred = clusterer.fit_predict(x, work_dir=out, log=log)
    dec = None
    if clustering.method == "idec" and not degenerate(x):
        if features.source != "network" or not model_dir:
            raise ValueError("cluster 'idec' trains inside the network: it needs features 'network' and a trained model")
        from tasks.dec import run_idec

        q, dec = run_idec(store_url, model_dir, clusterer, clustering, log=log)
        pred, confidence = q.argmax(1), q.max(1)
    else:  # (IDEC's clips go through its own encoder: no spread is kept for them)
        confidence = clusterer.remember_spread(x).max(1)
    clusterer.save(out / "clusterer.npz")

    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        # start, end: seconds of the file the item holds; confidence: the probability of its cluster
        w.writerow(["file", "start", "end", "cluster", "confidence"])
        start, seconds = store.read("start")[ok], store.read("duration")[ok]
        w.writerows(zip(paths[ok], np.round(start, 3).tolist(), np.round(start + seconds, 3).tolist(), pred.tolist(),
                        np.round(confidence, 4).tolist()))
    rejects = store.rejects()
    with open(out / "rejects.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "reason"])
        w.writerows(rejects + store.partly_read())

    labelled = labels[ok] != ""
    why = degenerate(x, pred)
    scores = evaluate(paths[ok][labelled], labels[ok][labelled], pred[labelled], split_seed) if labelled.any() and not why else {}
    sizes = np.bincount(pred, minlength=clustering.k).tolist()
    counts = store.counts()
    metrics = {
        "found": counts["ok"] + counts["rejected"] + counts["pending"],
        "stored": int(ok.sum()),
        "rejected": len(rejects),
        "labelled": int(labelled.sum()),
        "k": clustering.k,
        "k_auto": k_auto,
        "n_init": clustering.n_init,
        "features": features.model_dump(mode="json"),
        "clustering": clustering.model_dump(mode="json"),
        "dec": dec,
        "head": clusterer.head_summary,
        "confidence": {"mean": round(float(confidence.mean()), 4), "median": round(float(np.median(confidence)), 4)},
        "audio": store.attrs.get("audio"),
        "geometry": store.attrs.get("geometry"),
        "feature_dim": int(x.shape[1]),
        "cluster_dim": int(clusterer.transform(x[:1]).shape[1]),
        "cluster_sizes": sizes,
        "scores": scores,
        "degenerate": why,
        "predictions": str(out / "predictions.csv"),
        "rejects_file": str(out / "rejects.csv"),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def prediction_rows(path: str | Path) -> list[dict]:
    """The rows of a ``predictions.csv`` that :func:`cluster_and_report` wrote, as dicts of its columns."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_predictions(path: str | Path) -> list[tuple[str, int]]:
    """``(file, cluster)`` rows of a ``predictions.csv`` that :func:`cluster_and_report` wrote."""
    return [(r["file"], int(r["cluster"])) for r in prediction_rows(path)]


def metrics_markdown(metrics: dict, extra: dict | None = None) -> str:
    lines = [
        "# audioclust run",
        "",
        f"clips found {metrics['found']}, stored {metrics['stored']}, rejected {metrics['rejected']}, "
        f"labelled {metrics['labelled']}; k = {metrics['k']}" + (f" ({k_picked(metrics)})" if metrics.get("k_auto") else ""),
        "",
    ]
    if metrics["scores"]:
        lines += ["| split | clips | NMI | AMI | ARI | ACC |", "|---|---|---|---|---|---|"]
        for split, s in metrics["scores"].items():
            lines.append(f"| {split} | {s['n']} | {s['nmi']:.4f} | {s['ami']:.4f} | {s['ari']:.4f} | {s['acc']:.4f} |")
    elif metrics.get("degenerate"):
        lines.append(f"**No usable clustering**: {metrics['degenerate']}")
    else:
        lines.append("No labels: no scores.")
    lines += ["", f"cluster sizes: {metrics['cluster_sizes']}"]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


@task(name="cluster-and-report", task_run_name="cluster-and-report", cache_key_fn=given_key, persist_result=True, retries=1, retry_delay_seconds=5)
def cluster_and_report_task(
    store_url: str, out_dir: str, features: FeatureSettings, clustering: ClusteringSettings, split_seed: int,
    cache_key: str, codes: str = "codes", model_dir: str | None = None,
) -> dict:
    """Clustering and scores; cached on ``cache_key`` (:func:`tasks.caching.report_key`), which ``metrics.json`` records."""
    metrics = cluster_and_report(store_url, out_dir, features, clustering, split_seed, codes, model_dir, log=get_run_logger().info)
    metrics["cache_key"] = cache_key
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if "all" in metrics["scores"]:
        get_run_logger().info("NMI %.4f on %d labelled clips", metrics["scores"]["all"]["nmi"], metrics["labelled"])
    return metrics


def run_report(store_url: str, out_dir: str | Path, metrics: dict, codes: str = "codes") -> Path:
    """``report.html`` beside the predictions: scores, configuration, rejects and the run's figures, embedded."""
    import html as _html

    from tasks.figures import contingency, embed_2d, embedding, html_report, html_table, k_choice, timeline
    from tasks.browser import browser_section

    out = Path(out_dir)
    store = Store.open(store_url)
    ok = store.ok()
    clusterer = Clusterer.load(out / "clusterer.npz")
    raw = clip_feature_matrix(store, clusterer.features, codes)
    features = clusterer.transform(raw)
    rows = prediction_rows(out / "predictions.csv")
    clusters = np.array([int(r["cluster"]) for r in rows])  # in store order, one row per item
    figures = [out / "loss.png"] if (out / "loss.png").is_file() else []
    xy = embed_2d(features)
    figures.append(embedding(features, clusters, out / "embedding.png", xy))
    if (metrics.get("k_auto") or {}).get("k"):
        figures.append(k_choice(metrics["k_auto"], out / "k_auto.png"))
    if (store.attrs.get("audio") or {}).get("segment") is not None:  # long recordings: where each cluster lies in time
        paths, starts = store.read("path")[ok], store.read("start")[ok]
        ends = starts + store.read("duration")[ok]
        files = [(n, starts[paths == n], ends[paths == n], clusters[paths == n]) for n in list(dict.fromkeys(paths))[:30]]
        figures.append(timeline(files, int(metrics["k"]), out / "timeline.png"))
    labels = store.read("label")[ok]
    listen = browser_section(store, metrics, clusterer, raw, features, clusters, xy[0])
    if (labels != "").any():
        figures.append(contingency(labels[labels != ""], clusters[labels != ""], out / "contingency.png"))
    scores = [{"split": k, **v} for k, v in metrics.get("scores", {}).items()]
    summary = {k: metrics.get(k) for k in ("found", "stored", "rejected", "labelled", "k", "epochs", "device", "preset")}
    config = metrics.get("config", {})
    method = (config.get("clustering") or {}).get("method")
    summary["clustering"] = method if (config.get("features") or {}).get("source", "network") == "network" else f"{method} on mfcc-stats"
    summary = {"input": metrics.get("input_dir"), **summary}
    if metrics.get("labels_file"):  # which labels were scored: the same run may be scored on several columns
        summary["labels"] = labels_scored(metrics)
    timings = {k.removesuffix("_s"): f"{v:.1f}" for k, v in (metrics.get("timings") or {}).items() if k.endswith("_s")}
    split_note = ("<p><i>all</i>: every labelled clip. <i>public</i> and <i>private</i>: the two halves of a fixed, "
                  f"seeded split of the clips (seed {config.get('split_seed', 0)}), scored apart as the "
                  "report's leaderboard did. NMI and AMI: 1 when clusters and labels match, AMI and ARI 0 by chance; "
                  "ACC: the share of clips whose cluster maps to their label (one-to-one, Hungarian).</p>")
    sections = [
        ("Summary", html_table([summary]) + (f"<p>k = {metrics['k']}, {_html.escape(k_picked(metrics))} (figure below).</p>"
                                             if (metrics.get("k_auto") or {}).get("k") else "")),
        ("Scores", html_table(scores) + split_note if scores else
         f"<p><b>No usable clustering</b>: {_html.escape(metrics['degenerate'])}</p>" if metrics.get("degenerate") else "<p>No labels: no scores.</p>"),
        ("Listen: the clusters and a map of every clip", listen),
        ("Least confident clips", "<p>The clips whose cluster is least certain (confidence: the probability of "
                                  "their cluster, in predictions.csv): the first to listen to.</p>" + html_table(least_confident(rows))),
        ("Cluster sizes", html_table([{"cluster": i, "clips": n} for i, n in enumerate(metrics.get("cluster_sizes", []))])),
        ("Rejected files", html_table([{"file": f, "reason": r} for f, r in store.rejects() + store.partly_read()])),
        ("Stage times (seconds)", html_table([timings]) if timings else "<p>none recorded</p>"),
        ("Configuration", "<details><summary>the run's settings, as recorded in metrics.json</summary>"
                          f"<pre>{_html.escape(json.dumps(metrics.get('config', {}), indent=1))}</pre></details>"),
    ]
    captions = {
        "timeline": "Each long recording (the first 30) as a strip of its windows, coloured by cluster: where each kind of sound lies in time.",
        "loss": "Training loss per epoch (the report's Figure 8).",
        "embedding": "The clips' features in two dimensions, coloured by cluster: clusters that overlap here are hard to tell apart.",
        "k_auto": "Choosing k: each criterion against k, scaled to [0, 1] over the range, and their mean; the star marks the pick.",
        "contingency": "Clips per label (rows) and cluster (columns), clusters ordered by their matched label: "
                       "a strong diagonal means the clusters follow the labels.",
    }
    return html_report(f"audioclust run: {out.resolve().name}", sections, figures, out / "report.html", captions)


def least_confident(rows: list[dict], n: int = 10) -> list[dict]:
    """The ``n`` rows of ``predictions.csv`` with the lowest confidence (none for a run that recorded none)."""
    return sorted((r for r in rows if r.get("confidence")), key=lambda r: float(r["confidence"]))[:n]


def k_picked(metrics: dict) -> str:
    """How k was chosen, in words: ``chosen from 2-20 by ...``."""
    auto = metrics["k_auto"]
    return f"chosen from {auto['k_min']}-{auto['k_max']} by the {auto['criterion']}"


def labels_scored(metrics: dict) -> str:
    """Which labels a run was scored against: ``labels.csv (column 'digit')``."""
    return f"{metrics['labels_file']} (column '{metrics.get('label_column') or 'label'}')"


def publish_artifacts(metrics: dict, out_dir: Path) -> None:
    """The run's Prefect artifacts: summary, scores, cluster sizes, rejects and links to the files."""
    extra = {"rejected": metrics["rejected"], "epochs": metrics.get("epochs"), "device": metrics.get("device"),
             "timings": metrics.get("timings")}
    if metrics.get("labels_file"):
        extra["labels"] = labels_scored(metrics)
    create_markdown_artifact(markdown=metrics_markdown(metrics, extra), key="audioclust-summary", description="Run summary")
    if metrics["scores"]:
        create_table_artifact(
            table=[{"split": split, **{m: round(v, 4) for m, v in s.items()}} for split, s in metrics["scores"].items()],
            key="audioclust-scores",
            description="Clustering scores against labels",
        )
    if (metrics.get("k_auto") or {}).get("k"):
        auto = metrics["k_auto"]
        create_table_artifact(
            table=[{"k": k, "score": s, "relative PAC stability": r, "silhouette": v, "chosen": k == auto["chosen"]}
                   for k, s, r, v in zip(auto["k"], auto["score"], auto["rcsi"], auto["silhouette"])],
            key="audioclust-k-auto", description=f"k = {auto['chosen']}, {k_picked(metrics)}")
    create_table_artifact(
        table=[{"cluster": i, "clips": n} for i, n in enumerate(metrics["cluster_sizes"])],
        key="audioclust-cluster-sizes",
        description="Clips per cluster",
    )
    for key, name in (("audioclust-report", "report.html"), ("audioclust-loss-plot", "loss.png"),
                      ("audioclust-predictions", "predictions.csv"), ("audioclust-rejects", "rejects.csv")):
        path = Path(out_dir) / name
        if path.is_file():
            create_link_artifact(key=key, link=path.resolve().as_uri(), link_text=name, description=f"{name} of this run")
