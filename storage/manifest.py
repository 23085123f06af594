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

    def changes(self, entries: Iterable[FileEntry]) -> dict[str, int]:
        """What :meth:`sync_manifest` would do, without writing: counts of new, changed and removed files."""
        paths = self.read("path").tolist()
        size, mtime, status = self.read("size"), self.read("mtime"), self.read("status")
        index = {p: i for i, p in enumerate(paths) if status[i] != VACANT}
        seen = np.zeros(len(paths), bool)
        new = changed = 0
        for e in entries:
            i = index.get(e.path)
            if i is None:
                new += 1
                continue
            seen[i] = True
            changed += int(status[i] in (PENDING, REMOVED) or size[i] != e.size or mtime[i] != e.mtime)
        removed = int((~seen & (status != VACANT) & (status != REMOVED)).sum())
        return {"new": new, "changed": changed, "removed": removed}

    def sync_manifest(self, entries: Iterable[FileEntry], label_of: Callable[[str], str] | None = None) -> dict[str, int]:
        """Bring the manifest up to date with a listing of the input root.

        New files are appended, changed ones (size or mtime) and returning ones set
        PENDING, vanished ones REMOVED; labels are rewritten for every listed file.
        Returns counts: listed, new, changed, removed.
        """
        n = self.n_clips
        paths = self.read("path").tolist()
        size, mtime, status = self.read("size"), self.read("mtime"), self.read("status")
        index = {p: i for i, p in enumerate(paths) if status[i] != VACANT}
        seen = np.zeros(n, bool)
        new: list[FileEntry] = []
        changed = 0
        for e in entries:
            i = index.get(e.path)
            if i is None:
                new.append(e)
                continue
            seen[i] = True
            if status[i] == PENDING or status[i] == REMOVED or size[i] != e.size or mtime[i] != e.mtime:
                changed += int(status[i] != PENDING)
                size[i], mtime[i], status[i] = e.size, e.mtime, PENDING
        gone = ~seen & (status != VACANT) & (status != REMOVED)
        status[gone] = REMOVED
        if new:
            start = -(-n // self.clips_per_chunk) * self.clips_per_chunk  # next chunk boundary
            total = start + len(new)
            self._resize(total)
            pad = start - n
            paths += [""] * pad + [e.path for e in new]
            size = np.concatenate([size, np.full(pad, -1, "int64"), [e.size for e in new]]).astype("int64")
            mtime = np.concatenate([mtime, np.zeros(pad, "int64"), [e.mtime for e in new]]).astype("int64")
            status = np.concatenate([status, np.full(pad, VACANT, "int8"), np.full(len(new), PENDING, "int8")])
        listed = (status != VACANT) & (status != REMOVED)
        if len(paths):
            label_of = label_of or (lambda p: "")
            g = self.group
            g["path"][:] = np.asarray(paths, dtype=str)
            g["size"][:] = size
            g["mtime"][:] = mtime
            g["status"][:] = status
            g["label"][:] = np.asarray([(label_of(p) or "") if listed[i] else "" for i, p in enumerate(paths)], dtype=str)
        return {"listed": int(listed.sum()), "new": len(new), "changed": changed, "removed": int(gone.sum())}
