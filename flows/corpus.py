"""Listing a corpus (a local folder or an fsspec URL such as s3://bucket/clips) and reading its labels."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path
from typing import Callable, Iterator

from storage import FileEntry


class InputError(ValueError):
    """A missing or unusable input path; the message is one line for the user."""


def is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def join(root: str, rel: str) -> str:
    return f"{str(root).rstrip('/')}/{rel}" if is_url(root) else os.path.join(root, rel)


def corpus_name(input_dir: str) -> str:
    """A short name for the corpus under ``input_dir`` (its folder, or the folder above a generic ``audio/``, ``clips/``...)."""
    folder = Path(str(input_dir).split("://", 1)[-1].rstrip("/"))
    return folder.parent.name if folder.name in ("audio", "clips", "wav", "data") and folder.parent.name else folder.name


def check_root(root: str, storage_options: dict | None = None) -> None:
    if is_url(root):
        import fsspec

        fs, base = fsspec.core.url_to_fs(root, **(storage_options or {}))
        if not fs.isdir(base):
            raise InputError(f"input folder not found: {root}")
    elif Path(root).is_file():
        raise InputError(f"input is a file, not a folder: {root} (give the folder that holds the clips)")
    elif not Path(root).is_dir():
        raise InputError(f"input folder not found: {root}")


def scan(root: str | Path, exclude: tuple[str | Path | None, ...] = (), storage_options: dict | None = None) -> Iterator[FileEntry]:
    """Every non-hidden file under ``root`` (recursively), streamed in sorted order.

    All files are inputs: those that are not audio end in the rejects with a reason, so
    nothing in the folder is silently ignored; that includes broken symbolic links, pipes,
    sockets and devices (listed with size 0, rejected unread). Names that start with a dot
    (``.DS_Store``, ``.git/``) are skipped. Symbolic links to files and to folders are
    followed (a folder reached twice, or a link back up the tree, is listed once).
    """
    root = str(root)
    check_root(root, storage_options)
    if is_url(root):
        yield from _scan_fsspec(root, exclude, storage_options)
        return
    skip = {Path(p).resolve() for p in exclude if p is not None and not is_url(p)}
    seen: set[tuple[int, int]] = set()  # folders walked, by device and inode
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            try:
                if path.resolve() in skip:
                    continue
            except (OSError, RuntimeError):  # a symbolic link loop: listed below like a broken link
                pass
            rel = path.relative_to(root).as_posix()
            try:
                st = path.stat()
            except OSError:  # a broken symbolic link: listed all the same, so that it ends in the rejects
                try:
                    yield FileEntry(rel, 0, path.lstat().st_mtime_ns)
                except OSError:  # gone since the folder was read
                    pass
                continue
            # a pipe, socket or device is listed too (with size 0) and rejected unread
            yield FileEntry(rel, st.st_size if stat.S_ISREG(st.st_mode) else 0, st.st_mtime_ns)


def _scan_fsspec(root: str, exclude, storage_options) -> Iterator[FileEntry]:
    import fsspec

    fs, base = fsspec.core.url_to_fs(root, **(storage_options or {}))
    base = base.rstrip("/")
    skip = {str(p).split("://", 1)[-1] for p in exclude if p is not None}
    for path, info in sorted(fs.find(base, detail=True).items()):
        rel = path[len(base) :].lstrip("/")
        if not rel or any(part.startswith(".") for part in rel.split("/")) or path in skip:
            continue
        mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        yield FileEntry(rel, int(info.get("size") or 0), int(float(mtime) * 1e9))


def read_labels(labels_csv: str | Path, column: str = "label", storage_options: dict | None = None) -> dict[str, str]:
    """``file -> label`` from a CSV with a ``file`` column and a label column (extra columns ignored).

    A file named twice keeps its first label.
    """
    text = _read_text(str(labels_csv), storage_options)
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    if "file" not in fields or column not in fields:
        raise InputError(f"{labels_csv} needs columns 'file' and '{column}' (has: {', '.join(fields) or 'none'})")
    labels: dict[str, str] = {}
    for row in reader:
        name = (row.get("file") or "").strip()
        if name and name not in labels:
            labels[name] = (row.get(column) or "").strip()
    return labels


def _read_text(path: str, storage_options: dict | None) -> str:
    if is_url(path):
        import fsspec

        try:
            with fsspec.open(path, "rt", encoding="utf-8", **(storage_options or {})) as fh:
                return fh.read()
        except FileNotFoundError:
            raise InputError(f"labels file not found: {path}") from None
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file not found: {path}")
    return p.read_text(encoding="utf-8")


def label_lookup(labels: dict[str, str]) -> Callable[[str], str]:
    """Label of a relative path ("" when unlabelled); a CSV may name files by relative path or by name."""
    by_name = {Path(k).name: v for k, v in labels.items()}
    return lambda p: labels.get(p, by_name.get(Path(p).name, ""))
