"""The manifest of a store: which input files it holds, and which of them need (re)processing.

The manifest makes preprocessing incremental: new files are appended (from the next chunk
boundary; slots in between stay VACANT), files whose size or modification time changed
go back to PENDING, vanished files become REMOVED, and only chunks holding PENDING clips
are processed. A task sets its chunk's status last, so a chunk interrupted mid-write
stays PENDING and is redone by the next run.

Written by the flow process only, before the tasks that read it start.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from storage.layout import CLIP_ARRAYS, PENDING, REMOVED, VACANT, FileEntry


class ManifestMixin:
    """Manifest sync for :class:`storage.store.Store` (uses its ``group``, ``geometry``,
    ``clips_per_chunk``, ``n_clips`` and ``read``)."""

    def _resize(self, n: int) -> None:
        bpc = self.geometry.blocks_per_clip
        for name in CLIP_ARRAYS:
            self.group[name].resize((n,))
        self.group["blocks"].resize((n * bpc, *self.geometry.block_shape))

    def _live_rows(self, paths: list[str], status: np.ndarray) -> dict[str, list[int]]:
        """Path -> its rows (items), in order: the rows not REMOVED where a file has both (a re-windowed file)."""
        rows: dict[str, list[int]] = {}
        for i, p in enumerate(paths):
            if status[i] != VACANT:
                rows.setdefault(p, []).append(i)
        return {p: [i for i in r if status[i] != REMOVED] or r for p, r in rows.items()}

    def changes(self, entries: Iterable[FileEntry]) -> dict[str, int]:
        """What :meth:`sync_manifest` would do, without writing: counts of new, changed and removed files."""
        paths = self.read("path").tolist()
        size, mtime, status = self.read("size"), self.read("mtime"), self.read("status")
        index = self._live_rows(paths, status)
        seen = np.zeros(len(paths), bool)
        new = changed = 0
        for e in entries:
            rows = index.get(e.path)
            if rows is None:
                new += 1
                continue
            seen[rows] = True
            i = rows[0]
            changed += int(status[i] in (PENDING, REMOVED) or size[i] != e.size or mtime[i] != e.mtime)
        gone = ~seen & (status != VACANT) & (status != REMOVED)
        return {"new": new, "changed": changed, "removed": len({paths[i] for i in np.flatnonzero(gone)})}

    def sync_manifest(self, entries: Iterable[FileEntry], label_of: Callable[[str], str] | None = None,
                      starts_of: Callable[[FileEntry], list[float]] | None = None) -> dict[str, int]:
        """Bring the manifest up to date with a listing of the input root.

        A file is one row (a clip), or one row per window with ``starts_of(entry)``: the window
        starts (s), asked for new and changed files only. New files are appended, changed ones
        (size or mtime) and returning ones set PENDING (a file whose windows changed in number
        gets new rows, its old ones REMOVED), vanished ones REMOVED; labels are rewritten for
        every listed file. Returns counts of files: listed, new, changed, removed; and ``items``,
        the rows listed.
        """
        n = self.n_clips
        paths = self.read("path").tolist()
        size, mtime, status, start = self.read("size"), self.read("mtime"), self.read("status"), self.read("start")
        index = self._live_rows(paths, status)
        seen = np.zeros(n, bool)
        new: list[tuple[FileEntry, list[float]]] = []
        changed = listed = added = 0
        for e in entries:
            listed += 1
            rows = index.get(e.path)
            if rows is None:
                added += 1
                new.append((e, starts_of(e) if starts_of else [0.0]))
                continue
            seen[rows] = True
            i = rows[0]
            if size[i] == e.size and mtime[i] == e.mtime:  # the same file: only rows not done (or back after a removal) are redone
                back = [r for r in rows if status[r] == REMOVED]
                changed += int(bool(back))
                status[back] = PENDING
                continue
            changed += 1
            starts = starts_of(e) if starts_of else [0.0]
            if len(starts) == len(rows):
                size[rows], mtime[rows], status[rows], start[rows] = e.size, e.mtime, PENDING, starts
                continue
            status[rows] = REMOVED  # its windows changed in number: new rows below
            new.append((e, starts))
        gone = ~seen & (status != VACANT) & (status != REMOVED)
        removed = len({paths[i] for i in np.flatnonzero(gone)})
        status[gone] = REMOVED
        if new:
            first = -(-n // self.clips_per_chunk) * self.clips_per_chunk  # next chunk boundary
            rows_new = [(e, s) for e, starts in new for s in starts]
            self._resize(first + len(rows_new))
            pad = first - n
            paths += [""] * pad + [e.path for e, _ in rows_new]
            size = np.concatenate([size, np.full(pad, -1, "int64"), [e.size for e, _ in rows_new]]).astype("int64")
            mtime = np.concatenate([mtime, np.zeros(pad, "int64"), [e.mtime for e, _ in rows_new]]).astype("int64")
            status = np.concatenate([status, np.full(pad, VACANT, "int8"), np.full(len(rows_new), PENDING, "int8")])
            start = np.concatenate([start, np.zeros(pad, "float32"), [s for _, s in rows_new]]).astype("float32")
        live = (status != VACANT) & (status != REMOVED)
        if len(paths):
            label_of = label_of or (lambda p: "")
            g = self.group
            g["path"][:] = np.asarray(paths, dtype=str)
            g["size"][:] = size
            g["mtime"][:] = mtime
            g["status"][:] = status
            g["start"][:] = start
            g["label"][:] = np.asarray([(label_of(p) or "") if live[i] else "" for i, p in enumerate(paths)], dtype=str)
        return {"listed": listed, "items": int(live.sum()), "new": added, "changed": changed, "removed": removed}
