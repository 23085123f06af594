"""The report's figures (3-9), plus a 2-D embedding and a contingency heatmap, as PNG files;
and a self-contained HTML report that embeds them.

Every function takes plain data and a path and returns the path; nothing needs a display.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

import numpy as np

from tasks.plots import _plt, save


def spectrogram_kinds(y: np.ndarray, spec, path: str | Path, title: str = "") -> Path:
    """Figure 3: the linear, log and Mel spectrograms of one clip side by side."""
    from tasks.audio import spectrogram

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for ax, kind in zip(axes, ("linear", "log", "mel")):
        img = spectrogram(y, spec.model_copy(update={"spectrogram": kind}))
        ax.imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1)
        ax.set_title({"linear": "(c) linear power", "log": "(b) log (dB)", "mel": "(a) Mel (dB)"}[kind])
        ax.set_xlabel("frame")
        ax.set_ylabel("Mel band" if kind == "mel" else "frequency bin")
    fig.suptitle(title or "Spectrogram kinds of one clip (scaled to [0, 1])")
    return save(fig, path)


def score_by(rows: Sequence[dict], factor: str, path: str | Path, metric: str = "nmi", title: str = "") -> Path:
    """Figures 4-7: mean score per value of ``factor`` with error bars (std over seeds and the other factors)."""
    plt = _plt()
    values = sorted({r[factor] for r in rows if r.get(metric) is not None}, key=lambda v: (isinstance(v, str), v))
    means, stds, counts = [], [], []
    for v in values:
        xs = np.array([r[metric] for r in rows if r[factor] == v and r.get(metric) is not None], float)
        means.append(xs.mean())
        stds.append(xs.std(ddof=0))
        counts.append(len(xs))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    pos = np.arange(len(values))
    ax.bar(pos, means, yerr=stds, capsize=6, color="#4477aa", alpha=0.85)
    for p, m, n in zip(pos, means, counts):
        ax.text(p, m, f"{m:.3f}\n(n={n})", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(pos, [str(v) for v in values])
    ax.set_xlabel(factor.replace("_", " "))
    ax.set_ylabel(f"{metric.upper()} (mean ± std)")
    ax.set_ylim(0, max(1e-3, max(np.array(means) + np.array(stds))) * 1.25)
    ax.set_title(title or f"{metric.upper()} by {factor.replace('_', ' ')}")
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def progression(scores: Sequence[float | None], path: str | Path, metric: str = "nmi") -> Path:
    """Figure 9: the score of each experiment in run order, with the best-so-far line."""
    plt = _plt()
    xs = np.arange(1, len(scores) + 1)
    ys = np.array([np.nan if s is None else s for s in scores], float)
    best = np.fmax.accumulate(np.where(np.isnan(ys), -np.inf, ys))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(xs, ys, "o", color="#4477aa", label="experiment")
    ax.step(xs, np.where(np.isinf(best), np.nan, best), where="post", color="#cc6677", label="best so far")
    ax.set_xlabel("experiment (run order)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{metric.upper()} over the experiments")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def embed_2d(features: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Clip features in 2-D: ``(xy, "t-SNE")`` up to 5 000 clips, PCA beyond; ``(None, "")`` when every clip is alike."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.nan_to_num(np.asarray(features, np.float64)))
    if x.shape[1] == 0 or float(np.ptp(x, axis=0).max(initial=0.0)) < 1e-9:  # t-SNE's quad tree would recurse forever
        return None, ""
    if len(x) > 50:
        x = PCA(n_components=min(50, x.shape[1]), random_state=0).fit_transform(x)
    if 5 < len(x) <= 5000:
        return TSNE(n_components=2, perplexity=min(30, (len(x) - 1) / 3), random_state=0, init="pca").fit_transform(x), "t-SNE"
    return PCA(n_components=2, random_state=0).fit_transform(x), "PCA"


def embedding(features: np.ndarray, clusters: np.ndarray, path: str | Path, xy: tuple | None = None) -> Path:
    """Clip features in 2-D (:func:`embed_2d`, or ``xy``: its result), coloured by cluster."""
    plt = _plt()
    xy, how = xy or embed_2d(features)
    if xy is None:  # e.g. a collapsed code
        fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=100)
        ax.text(0.5, 0.5, "every clip has the same features:\nno embedding to show", ha="center", va="center")
        ax.set_axis_off()
        return save(fig, path)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=100)
    k = int(np.max(clusters)) + 1 if len(clusters) else 1
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20", k)  # one colour per cluster, one band each in the colour bar
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=clusters, cmap=cmap, vmin=-0.5, vmax=k - 0.5, s=14)
    ax.set_title(f"Clip features ({how}), coloured by cluster")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(sc, ax=ax, label="cluster", ticks=range(k) if k <= 20 else None)
    return save(fig, path)


def timeline(files: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], k: int, path: str | Path) -> Path:
    """Long recordings: each file (``name, starts, ends, clusters``) a strip of its windows' clusters over time."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(files) + 1.3), dpi=100)
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20", k)  # the colours of embedding.png
    for row, (_, starts, ends, clusters) in enumerate(files):
        ax.broken_barh(list(zip(starts, ends - starts)), (row - 0.4, 0.8), facecolors=[cmap(int(c)) for c in clusters])
    ax.set_yticks(range(len(files)), [name[-40:] for name, *_ in files])
    ax.invert_yaxis()
    ax.set_xlabel("time in the file (s)")
    ax.set_title("Clusters over time, one strip per file (colours as in the embedding)")
    fig.tight_layout()
    return save(fig, path)


def k_choice(record: dict, path: str | Path) -> Path:
    """``--k auto``: each criterion against k (scaled to [0, 1] over the range), their mean, the pick marked."""
    plt = _plt()
    ks, chosen = np.array(record["k"]), record["chosen"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, name, style in (("rcsi", "relative PAC stability (vs. null)", "--"), ("silhouette", "evidence-accumulation silhouette", ":")):
        v = np.array(record[key], float)
        ax.plot(ks, (v - v.min()) / (np.ptp(v) or 1), style, marker=".", label=name)
    ax.plot(ks, record["score"], "-", marker="o", color="#222", label="mean: the criterion")
    ax.axvline(chosen, color="#cc3311", alpha=0.6)
    ax.plot([chosen], [max(record["score"])], "*", ms=16, color="#cc3311", label=f"chosen k = {chosen}")
    ax.set_xticks(ks if len(ks) <= 30 else ks[:: max(1, len(ks) // 15)])
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("scaled to [0, 1] over the range")
    ax.set_title(f"Choosing k: {chosen} of {ks[0]}-{ks[-1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def contingency(labels: Sequence[str], clusters: Sequence[int], path: str | Path) -> Path:
    """Heatmap of clip counts, labels x clusters (clusters ordered by their majority label)."""
    from sklearn.metrics.cluster import contingency_matrix

    plt = _plt()
    names = sorted(set(labels))
    c = contingency_matrix(labels, clusters)
    order = np.lexsort((-c.max(axis=0), c.argmax(axis=0)))
    c = c[:, order]
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * c.shape[1] + 3), max(4, 0.35 * c.shape[0] + 2)), dpi=100)
    im = ax.imshow(c, cmap="Blues", aspect="auto")
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            if c[i, j]:
                ax.text(j, i, c[i, j], ha="center", va="center", fontsize=7, color="white" if c[i, j] > c.max() / 2 else "black")
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(c.shape[1]), [str(k) for k in np.unique(clusters)[order]])
    ax.set_xlabel("cluster")
    ax.set_ylabel("label")
    ax.set_title("Labels x clusters")
    fig.colorbar(im, ax=ax, label="clips")
    return save(fig, path)


def html_report(title: str, sections: Sequence[tuple[str, str]], figures: Sequence[Path], path: str | Path,
                captions: dict[str, str] | None = None) -> Path:
    """One self-contained HTML file: ``sections`` are (heading, HTML body); figures are embedded as base64 PNG,
    each captioned by ``captions[file stem]`` where given, else by its file name."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#eee}img{max-width:100%;margin:1em 0}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if figures:
        parts.append("<h2>Figures</h2>")
    for fig in figures:
        data = base64.b64encode(Path(fig).read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(Path(fig).stem)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape((captions or {}).get(Path(fig).stem, Path(fig).name))}</figcaption></figure>")
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts), encoding="utf-8")
    return Path(path)


def html_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    columns = list(columns or rows[0].keys())

    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
