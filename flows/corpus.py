"""Listing a corpus folder and reading its labels."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class InputError(ValueError):
    """A missing or unusable input path; the message is one line for the user."""


def discover(root: str | Path, exclude: tuple[str | Path, ...] = ()) -> list[str]:
    """Every regular, non-hidden file under ``root``, as sorted POSIX paths relative to it.

    All files are inputs: those that are not audio end in the rejects with a reason,
    so nothing in the folder is silently ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith(".") or not path.is_file() or path.resolve() in skip:
                continue
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def read_labels(labels_csv: str | Path, column: str = "label") -> dict[str, str]:
    """``file -> label`` from a CSV with a ``file`` column and a label column."""
    path = Path(labels_csv)
    if not path.is_file():
        raise InputError(f"labels file not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "file" not in fields or column not in fields:
            raise InputError(f"{path} needs columns 'file' and '{column}' (has: {', '.join(fields) or 'none'})")
        return {row["file"].strip(): row[column].strip() for row in reader if row.get("file")}


def labels_for(paths: list[str], labels: dict[str, str]) -> list[str]:
    """Label of each path ("" when unlabelled); a CSV may name files by relative path or by name."""
    by_name = {Path(k).name: v for k, v in labels.items()}
    return [labels.get(p, by_name.get(Path(p).name, "")) for p in paths]
