"""``audioclust score``: a finished run's clusters scored against labels, without running anything again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from flows.runs import CommandError, check_writable


class ScoreError(CommandError):
    """A run folder or labels file that cannot be scored; one line, with the exit status as ``code``."""


def score_run(run_dir: Path | str, labels: str, label_column: str = "label", split_seed: Optional[int] = None) -> dict:
    """Score the run in ``run_dir`` (its ``predictions.csv``) against column ``label_column`` of the
    CSV ``labels`` (files named by relative path or by name), on the run's own split unless
    ``split_seed`` is given; write ``RUN/scores-COLUMN.json`` (replacing an earlier scoring of that
    column) and return what it holds, with ``"file"``: its path. The run's metrics.json and
    report.html stay as they are.

    Raises :class:`ScoreError`: not a run folder, a folder that cannot be written, an unreadable
    labels file, predictions or metrics.json (code 2); no clips, or fewer than 2 labelled (code 1).
    """
    from flows.corpus import InputError, label_lookup, read_labels
    from tasks.metrics import score_predictions
    from tasks.report import read_predictions

    run_dir = Path(run_dir)
    predictions = run_dir / "predictions.csv"
    if not predictions.is_file():
        raise ScoreError(f"{run_dir} is not a finished run folder: no predictions.csv")
    try:
        check_writable(run_dir, "run folder")
    except CommandError as exc:
        raise ScoreError(str(exc)) from None
    try:
        label_of = label_lookup(read_labels(labels, label_column))
    except InputError as exc:
        raise ScoreError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScoreError(f"cannot read labels file {labels}: {exc}") from None
    if split_seed is None:
        split_seed = run_split_seed(run_dir)
    try:
        result = score_predictions(read_predictions(predictions), label_of, split_seed)
    except (KeyError, ValueError, TypeError, OSError) as exc:  # a predictions.csv not written by a run
        raise ScoreError(f"cannot read {predictions} (columns file,cluster expected): {exc!r}") from None
    if not result["clips"]:
        raise ScoreError(f"{predictions} lists no clips", code=1)
    if result["labelled"] < 2:
        raise ScoreError(f"{result['labelled']} of the {result['clips']} clustered files has a label in column '{label_column}' "
                         f"of {labels}: nothing to score", code=1)
    result.update(run=str(run_dir), labels_file=labels, label_column=label_column, split_seed=split_seed)
    out = run_dir / f"scores-{file_name_part(label_column)}.json"
    out.write_text(json.dumps(result, indent=1))
    return {**result, "file": str(out)}


def run_split_seed(run_dir: Path) -> int:
    """The seed of the run's public/private split, from its metrics.json (runs from before the
    configuration was recorded there used 0)."""
    metrics = run_dir / "metrics.json"
    try:
        recorded = json.loads(metrics.read_text()) if metrics.is_file() else {}
        return int(((recorded or {}).get("config") or {}).get("split_seed", 0))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ScoreError(f"cannot read the run's split seed from {metrics} ({exc}); give --split-seed") from None


def file_name_part(text: str) -> str:
    """``text`` as part of a file name: itself when it is made of letters, digits, - and _; otherwise
    those characters with a short hash of the whole, so that "x y" and "x_y" do not share a file."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)
    return safe if safe == text and text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
