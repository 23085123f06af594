"""Clustering quality on the real corpora (run: python -m bench.quality, or make bench-quality).

One table per corpus; rows: the handcrafted baseline (``--features mfcc-stats``, K-Means), the
``seed`` preset (the report's system, with its epochs capped by ``--seed-epochs`` so it
finishes), the ``default`` preset's network clustered by plain K-Means, the ``default`` preset
(its consensus clustering), and the ``default`` network with IDEC/DEC clustering inside it;
``kauto``: ``--k auto`` on the ``default`` row's network, its chosen k and NMI beside the true-k
run's, and its NMI against every label column (fsdd: digit and speaker: which structure the pick
found). Corpora: esc10 and fsdd from ../shared/data, and ``synth6`` / ``synth12``, synthesized
sound families of known k (tasks/synth.py).
Columns: NMI / AMI / ARI / ACC as mean ± std over ``--seeds`` (network and K-Means seed), and
wall seconds per run (mean). Every run is the real pipeline flow (Prefect + Dask + Zarr);
each corpus is preprocessed once per audio setting first (its time is printed separately),
so the per-row times are training + encoding + clustering. Results also go to
``WORK/quality.json`` and ``WORK/quality.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import numpy as np  # noqa: E402

from bench.common import SHARED_DATA, print_table  # noqa: E402

METRICS = ("nmi", "ami", "ari", "acc")


def one_run(audio: Path, labels: Path, out: Path, store: Path, preset: str, **overrides) -> tuple[dict, float]:
    from flows.config import load_config
    from flows.pipeline import pipeline
    from flows.runtime import run_on_dask

    config = load_config(preset, **overrides)
    t = time.perf_counter()
    metrics = run_on_dask(pipeline, config, input_dir=str(audio), labels=str(labels), out=str(out), store=str(store))
    return metrics, time.perf_counter() - t


def preprocess(audio: Path, labels: Path, store: Path, preset: str, **overrides) -> float:
    from flows.config import load_config
    from flows.pipeline import preprocess_flow
    from flows.runtime import run_on_dask

    t = time.perf_counter()
    run_on_dask(preprocess_flow, load_config(preset, **overrides), input_dir=str(audio), store=str(store), labels=str(labels))
    return time.perf_counter() - t


def summarize(runs: list[tuple[dict, float]]) -> dict:
    row = {}
    for m in METRICS:
        v = np.array([r[0]["scores"]["all"][m] for r in runs])
        row[m] = (float(v.mean()), float(v.std()))
    row["seconds"] = float(np.mean([r[1] for r in runs]))
    row["public_nmi"] = float(np.mean([r[0]["scores"]["public"]["nmi"] for r in runs]))
    return row


SYNTH = {"synth6": 6, "synth12": 12}  # synthesized corpora of known k: 20 clips per family (tasks/synth.py)


def corpus(name: str, work: Path, k: int) -> tuple[Path, Path, int]:
    """``(audio folder, labels file, true k)``: a corpus under ../shared/data, or one synthesized into ``work``."""
    from tasks.synth_kinds import KINDS, LABELS, make_kind_corpus

    if name in KINDS:  # a kind of audio the shared corpora lack: timbre across pitches, temporal shape, events in noise
        if not (work / "labels.csv").is_file():
            make_kind_corpus(work, name, per_class=30, seed=0)
        return work / "audio", work / "labels.csv", len(LABELS[name])
    if name not in SYNTH:
        return SHARED_DATA / name / "audio", SHARED_DATA / name / "labels.csv", k
    from tasks.synth import FAMILIES, MORE_FAMILIES, make_corpus

    families = MORE_FAMILIES[: SYNTH[name]] if SYNTH[name] <= len(MORE_FAMILIES) else (FAMILIES + MORE_FAMILIES)[: SYNTH[name]]
    if not (work / "labels.csv").is_file():
        make_corpus(work, per_family=20, families=families, seed=SYNTH[name])
    return work / "audio", work / "labels.csv", SYNTH[name]


def other_structures(metrics: dict) -> dict:
    """NMI of a run's clusters against every label column of its labels file (fsdd: digit and speaker)."""
    import csv

    from sklearn.metrics import normalized_mutual_info_score

    from tasks.report import read_predictions

    with open(metrics["labels_file"], newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    pred = [(rows.get(Path(f).name), c) for f, c in read_predictions(metrics["predictions"])]
    columns = [c for c in next(iter(rows.values())) if c != "file" and len({r[c] for r in rows.values()}) <= 50]
    return {c: float(normalized_mutual_info_score([r[c] for r, _ in pred if r], [k for r, k in pred if r])) for c in columns}


def bench_corpus(name: str, seeds: list[int], seed_epochs: int, rows: list[str], work: Path, k: int) -> dict:
    work = work / name
    work.mkdir(parents=True, exist_ok=True)
    audio, labels, k = corpus(name, work, k)
    common = dict(k=k)
    result: dict = {"corpus": name, "k": k, "seeds": seeds, "rows": {}, "preprocess_s": {}}
    default_store, seed_store = work / "default.zarr", work / "seed.zarr"
    if {"baseline", "kmeans", "default", "dec", "kauto", "head", "scan"} & set(rows):
        result["preprocess_s"]["default"] = preprocess(audio, labels, default_store, "default", **common)
    if "seed" in rows:
        result["preprocess_s"]["seed"] = preprocess(audio, labels, seed_store, "seed", **common)

    def record(key: str, runs: list) -> None:
        result["rows"][key] = summarize(runs)
        print(f"[{name}] {key}: " + " ".join(f"{m} {result['rows'][key][m][0]:.4f}" for m in METRICS), flush=True)

    if "baseline" in rows:
        record("baseline (mfcc-stats)", [one_run(audio, labels, work / f"baseline-s{s}", default_store, "default",
                                                 features="mfcc-stats", standardize=True, pca=0, whiten=False, cluster="kmeans", seed=s,
                                                 **common)
                                         for s in seeds])
    if "seed" in rows:
        record(f"seed ({seed_epochs} epochs)", [one_run(audio, labels, work / f"seed-s{s}", seed_store, "seed",
                                                        epochs=seed_epochs, seed=s, **common) for s in seeds])
    if {"default", "kmeans", "dec", "kauto", "head", "scan"} & set(rows):
        plain, other, auto = [], {"kmeans": [], "dec": [], "scan": [], "head": []}, []
        variants = {"kmeans": dict(cluster="kmeans"), "dec": dict(cluster="idec"), "scan": dict(cluster="head", head_self_label_epochs=0),
                    "head": dict(cluster="head")}
        for s in seeds:
            out = work / f"default-s{s}"
            plain.append(one_run(audio, labels, out, default_store, "default", seed=s, **common))
            for row, settings in variants.items():
                if row in rows:  # same run folder: the trained network comes from cache, then only the clustering differs
                    m, extra = one_run(audio, labels, out, default_store, "default", seed=s, **settings, **common)
                    other[row].append((m, plain[-1][1] + extra))
            if "kauto" in rows:  # the same network (cached), k chosen from the data
                m, extra = one_run(audio, labels, out, default_store, "default", seed=s, k="auto")
                auto.append({"seed": s, "k": m["k"], "nmi": m["scores"]["all"]["nmi"], "true_k_nmi": plain[-1][0]["scores"]["all"]["nmi"],
                             "k_auto_s": m["k_auto"]["seconds"], "wall_s": extra, "structures": other_structures(m)})
                print(f"[{name}] k auto, seed {s}: k = {m['k']} (true {k}), NMI {auto[-1]['nmi']:.4f} "
                      f"(true k: {auto[-1]['true_k_nmi']:.4f}); NMI by label column {auto[-1]['structures']}", flush=True)
        result["k_auto"] = auto
        if other["kmeans"]:
            record("default network, K-Means", other["kmeans"])
        if "default" in rows:
            record("default (consensus)", plain)
        if other["dec"]:
            record("default network + DEC", other["dec"])
        if other["scan"]:
            record("default network + head (SCAN only)", other["scan"])
        if other["head"]:
            record("default network + head (SCAN, self-labeled)", other["head"])
    return result


def markdown(results: list[dict], seed_epochs: int) -> str:
    lines = []
    for r in results:
        pre = ", ".join(f"{k} {v:.0f} s" for k, v in r["preprocess_s"].items())
        lines += [f"### {r['corpus']} (k = {r['k']}, seeds {r['seeds']}; preprocessing once: {pre})", "",
                  "| row | NMI | AMI | ARI | ACC | public NMI | wall s / run |", "|---|---|---|---|---|---|---|"]
        for key, row in r["rows"].items():
            cells = " | ".join(f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS)
            lines.append(f"| {key} | {cells} | {row['public_nmi']:.3f} | {row['seconds']:.0f} |")
        if r.get("k_auto"):
            lines += ["", f"`--k auto` (true k = {r['k']}):", "",
                      "| seed | chosen k | NMI | true-k NMI | ratio | within ±30 % | NMI by label column |", "|---|---|---|---|---|---|---|"]
            for a in r["k_auto"]:
                cols = ", ".join(f"{c} {v:.3f}" for c, v in a["structures"].items())
                lines.append(f"| {a['seed']} | {a['k']} | {a['nmi']:.3f} | {a['true_k_nmi']:.3f} | {a['nmi'] / a['true_k_nmi']:.2f} | "
                             f"{'yes' if abs(a['k'] - r['k']) <= 0.3 * r['k'] else 'no'} | {cols} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="esc10,fsdd,timbre,temporal,events",
                    help="comma-separated corpora under ../shared/data, or synthesized: synth6, synth12 (sound families), "
                         "timbre, temporal, events (tasks/synth_kinds.py) [esc10,fsdd,timbre,temporal,events]")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [0,1,2]")
    ap.add_argument("--seed-epochs", type=int, default=2, help="epoch cap for the seed preset row (the report's 200 take hours) [2]")
    ap.add_argument("--rows", default="baseline,seed,kmeans,default,dec,scan,head,kauto",
                    help="which rows; scan, head: the clustering head without and with self-labeling; kauto: --k auto on the "
                         "default row's network [baseline,seed,kmeans,default,dec,scan,head,kauto]")
    ap.add_argument("--k", type=int, default=10, help="clusters of the shared corpora [10: both have 10 classes]; synthesized: their families")
    ap.add_argument("--work", default="/tmp/audioclust-bench-quality", help="stores and run folders [/tmp/audioclust-bench-quality]")
    a = ap.parse_args()
    from tasks.synth_kinds import KINDS
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = a.rows.split(",")
    work = Path(a.work)
    results = []
    for name in a.corpora.split(","):
        if name not in SYNTH and name not in KINDS and not (SHARED_DATA / name / "labels.csv").is_file():
            print(f"skipping {name}: {SHARED_DATA / name} not found")
            continue
        results.append(bench_corpus(name, seeds, a.seed_epochs, rows, work, a.k))
        (work / "quality.json").write_text(json.dumps(results, indent=1))
    for r in results:
        table = [[key, *(f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS), f"{row['seconds']:.0f}"]
                 for key, row in r["rows"].items()]
        print_table(f"{r['corpus']}: mean ± std over seeds {r['seeds']}", ["row", "NMI", "AMI", "ARI", "ACC", "wall s"], table)
    (work / "quality.md").write_text(markdown(results, a.seed_epochs))
    print(f"written: {work / 'quality.json'}, {work / 'quality.md'}")


if __name__ == "__main__":
    main()
