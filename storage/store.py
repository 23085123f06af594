"""A corpus store: open or create one, read and write its arrays, verify it.

The arrays, their chunking and the status codes are described in :mod:`storage.layout`;
the manifest sync (which files need processing) is in :mod:`storage.manifest`. Tasks write
whole chunks only (``clips_per_chunk`` consecutive clips, see :meth:`Store.clip_chunks`),
so no two tasks ever write the same Zarr chunk.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterator

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from storage.hashing import HASH
from storage.layout import (
    CLIP_ARRAYS,
    FORMAT,
    OK,
    PENDING,
    REJECTED,
    STATUS_NAMES,
    VACANT,
    VERSION,
    Geometry,
    compressors,
    from_blocks,
    is_data,
)
from storage.manifest import ManifestMixin


class StoreError(Exception):
    """The store is missing, of another format, or does not match the request."""


class Store(ManifestMixin):
    """A corpus store: :meth:`open` one, :meth:`create` an empty one, or :meth:`open_or_create`."""

    def __init__(self, group: zarr.Group, url: str):
        self.group = group
        self.url = url
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{url} is not an audioclust store (no '{FORMAT}' format attribute)")
        if attrs.get("version") != VERSION:
            raise StoreError(f"{url} is store version {attrs.get('version')}, this tool reads version {VERSION}")
        self.attrs = attrs
        self.geometry = Geometry(**attrs["geometry"])
        self.clips_per_chunk = int(attrs["clips_per_chunk"])
        self.hash_algorithm = attrs.get("hash", "blake2b-128")  # the manifest's content hashes stay comparable

    # -- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, url: str, mode: str = "r", storage_options: dict | None = None) -> "Store":
        try:
            group = zarr.open_group(url, mode=mode, storage_options=storage_options)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreError(f"no store at {url}") from exc
        return cls(group, url)

    @classmethod
    def create(
        cls,
        url: str,
        geometry: Geometry,
        clips_per_chunk: int,
        attrs: dict[str, Any] | None = None,
        storage_options: dict | None = None,
    ) -> "Store":
        """Create (or replace) an empty store; :meth:`sync_manifest` adds the clips."""
        group = zarr.open_group(url, mode="w", storage_options=storage_options)
        group.attrs.update(
            {
                "format": FORMAT,
                "version": VERSION,
                "clips_per_chunk": clips_per_chunk,
                "geometry": asdict(geometry),
                "blocks_per_clip": geometry.blocks_per_clip,
                "status_codes": {str(k): v for k, v in STATUS_NAMES.items()},
                "hash": HASH,
                **(attrs or {}),
            }
        )
        cpc, bpc = clips_per_chunk, geometry.blocks_per_clip
        for name, (dtype, fill) in CLIP_ARRAYS.items():
            group.create_array(
                name, shape=(0,), chunks=(cpc,), dtype=dtype, fill_value=fill, compressors=[Crc32cCodec()], dimension_names=("clip",)
            )
        group.create_array(
            "blocks",
            shape=(0, *geometry.block_shape),
            chunks=(cpc * bpc, *geometry.block_shape),
            dtype="float16",
            fill_value=np.nan,
            compressors=compressors(),
            dimension_names=("block", "row", "col", "channel"),
        )
        return cls(group, url)

    @classmethod
    def open_or_create(
        cls,
        url: str,
        geometry: Geometry,
        clips_per_chunk: int,
        fingerprint: str,
        attrs: dict[str, Any] | None = None,
        storage_options: dict | None = None,
    ) -> tuple["Store", bool]:
        """The store at ``url`` if it was made with the same ``fingerprint``, else a new empty one.

        Returns ``(store, created)``.
        """
        try:
            store = cls.open(url, mode="r+", storage_options=storage_options)
            if store.attrs.get("fingerprint") == fingerprint:
                return store, False
        except StoreError:
            pass
        return cls.create(url, geometry, clips_per_chunk, {**(attrs or {}), "fingerprint": fingerprint}, storage_options), True

    # -- geometry of the work -------------------------------------------------------
    @property
    def n_clips(self) -> int:
        return int(self.group["path"].shape[0])

    @property
    def n_blocks(self) -> int:
        return self.n_clips * self.geometry.blocks_per_clip

    def clip_chunks(self) -> list[tuple[int, int]]:
        """Chunk-aligned clip ranges ``[start, stop)``: one task each."""
        c, n = self.clips_per_chunk, self.n_clips
        return [(s, min(s + c, n)) for s in range(0, n, c)]

    def pending_chunks(self) -> list[tuple[int, int]]:
        """The chunks of :meth:`clip_chunks` that hold PENDING clips: what preprocessing has left to do."""
        status = self.read("status")
        return [(s, e) for s, e in self.clip_chunks() if (status[s:e] == PENDING).any()]

    def block_range(self, start: int, stop: int) -> tuple[int, int]:
        bpc = self.geometry.blocks_per_clip
        return start * bpc, stop * bpc

    def iter_block_chunks(self) -> Iterator[tuple[int, int]]:
        for s, e in self.clip_chunks():
            yield self.block_range(s, e)

    # -- writes (tasks) -------------------------------------------------------------
    def _check_aligned(self, start: int, stop: int) -> None:
        c = self.clips_per_chunk
        if start % c or not (stop - start == c or stop == self.n_clips) or stop <= start:
            raise StoreError(f"clip range [{start}, {stop}) is not one whole chunk of {c} clips")

    def write_clips(
        self,
        start: int,
        *,
        status: np.ndarray,
        reasons: list[str],
        hashes: list[str],
        durations: np.ndarray,
        blocks: np.ndarray,
        ignored: np.ndarray | None = None,
    ) -> None:
        """Write one whole chunk of clips: their blocks and manifest fields; the status goes last.
        ``ignored``: seconds of each clip's file beyond what it holds (a long file read as one clip)."""
        stop = start + len(status)
        self._check_aligned(start, stop)
        b0, b1 = self.block_range(start, stop)
        g = self.group
        self._whole_chunks("blocks")[b0:b1] = np.asarray(blocks, dtype="float16")
        g["duration"][start:stop] = np.asarray(durations, dtype="float32")
        if ignored is not None:
            g["ignored"][start:stop] = np.asarray(ignored, dtype="float32")
        g["reason"][start:stop] = np.asarray(reasons, dtype=str)
        g["hash"][start:stop] = np.asarray(hashes, dtype=str)
        g["status"][start:stop] = np.asarray(status, dtype="int8")

    def ensure_codes(self, code_size: int, encoder_digest: str, name: str = "codes") -> bool:
        """Keep the codes array ``name`` if the same encoder wrote it for this many blocks, else recreate it.

        Called by the flow before encode tasks run. Returns True when it was (re)created.
        Experiments of a sweep each use their own ``codes_<experiment>`` array.
        """
        if name in self.group:
            codes = self.group[name]
            if codes.shape == (self.n_blocks, code_size) and codes.attrs.get("encoder") == encoder_digest:
                return False
        self.create_codes(code_size, {"encoder": encoder_digest}, name)
        return True

    def codes_present(self, start_block: int, stop_block: int, name: str = "codes") -> bool:
        """True when the codes of every stored clip in the block range are written."""
        try:
            self.read(name, start_block, stop_block)
            return True
        except StoreError:
            return False

    def create_codes(self, code_size: int, attrs: dict | None = None, name: str = "codes") -> None:
        """(Re)create a codes array (all NaN until the encode tasks write it)."""
        if name != "codes" and not name.startswith("codes_"):
            raise ValueError(f"codes array names are 'codes' or 'codes_<name>', not {name!r}")
        bpc = self.geometry.blocks_per_clip
        self.group.create_array(
            name,
            shape=(self.n_blocks, code_size),
            chunks=(self.clips_per_chunk * bpc, code_size),
            dtype="float32",
            fill_value=np.nan,
            compressors=compressors(),
            dimension_names=("block", "code"),
            attributes=attrs or {},
            overwrite=True,
        )

    def write_codes(self, start_block: int, codes: np.ndarray, name: str = "codes") -> None:
        self._whole_chunks(name)[start_block : start_block + len(codes)] = np.asarray(codes, dtype="float32")

    def _whole_chunks(self, name: str):
        """The data array ``name`` for a task's whole-chunk write: every chunk it writes holds data, so
        zarr's check that a chunk equals the fill value (to skip storing it) is skipped. That check
        cost 2.1 of 4.6 ms per clip of writing the seed geometry's blocks."""
        return self.group[name].with_config({"write_empty_chunks": True})

    # -- reads ----------------------------------------------------------------------
    def _array(self, name: str):
        if name not in self.group:
            raise StoreError(f"{self.url} has no array '{name}' (has the stage that writes it run?)")
        return self.group[name]

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of an array; a corrupt chunk raises :class:`StoreError` naming it.

        For the data arrays (blocks, codes) the rows of stored clips are checked:
        a missing chunk reads as NaN and is reported, never returned as data.
        """
        arr = self._array(name)
        try:
            data = arr[start:stop]
        except Exception as exc:
            raise StoreError(self._locate_corruption(name, start, stop, exc)) from exc
        if data.dtype.kind == "T":  # numpy StringDType from zarr's variable-length strings
            data = data.astype(object).astype(str)
        if is_data(name):
            self._check_finite(name, data, 0 if start is None else start)
        return data

    def _locate_corruption(self, name: str, start, stop, exc: Exception) -> str:
        arr = self.group[name]
        step = arr.chunks[0]
        first = (start or 0) // step
        last = -(-(arr.shape[0] if stop is None else stop) // step)
        for c in range(first, last):
            try:
                arr[c * step : (c + 1) * step]
            except Exception as inner:
                return f"{self.url}: array '{name}' chunk {c} (rows {c * step}-{min((c + 1) * step, arr.shape[0]) - 1}) is corrupt: {inner}"
        return f"{self.url}: array '{name}' could not be read: {exc}"

    def _check_finite(self, name: str, data: np.ndarray, start: int) -> None:
        per = self.geometry.blocks_per_clip
        clip0, clip1 = start // per, -(-(start + len(data)) // per)
        ok = np.repeat(self.group["status"][clip0:clip1] == OK, per)[start - clip0 * per :][: len(data)]
        if not ok.any():
            return
        bad_rows = np.flatnonzero(ok & ~np.isfinite(data.reshape(len(data), -1)).all(axis=1))
        if len(bad_rows):
            row = start + int(bad_rows[0])
            step = self.group[name].chunks[0]
            raise StoreError(
                f"{self.url}: array '{name}' chunk {row // step} (rows {row // step * step}-"
                f"{min((row // step + 1) * step, self.group[name].shape[0]) - 1}) is missing or incomplete: "
                f"{len(bad_rows)} rows of stored clips hold no data; run `audioclust verify` and re-run the stage that writes it"
            )

    def ok(self) -> np.ndarray:
        """Boolean mask of stored clips (status OK)."""
        return self.read("status") == OK

    def blocks(self, start: int, stop: int) -> np.ndarray:
        """Blocks ``[start, stop)`` as float32 in [0, 1] (checked: see :meth:`read`)."""
        return self.read("blocks", start, stop).astype("float32")

    def images(self, start: int, stop: int) -> np.ndarray:
        """Spectrogram images of clips ``[start, stop)``, (clip, freq, frame, channel), joined from their blocks."""
        rows, cols = self.geometry.grid
        bpc = self.geometry.blocks_per_clip
        blocks = self.blocks(*self.block_range(start, stop))
        return np.stack([from_blocks(blocks[i * bpc : (i + 1) * bpc], rows, cols) for i in range(stop - start)])

    def rejects(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every listed file that could not be used."""
        status = self.read("status")
        paths, reasons = self.read("path"), self.read("reason")
        idx = np.flatnonzero((status == REJECTED) | (status == PENDING))
        where = [""] * len(status)
        if (self.attrs.get("audio") or {}).get("segment") is not None:  # a window: which one
            where = [f" (window at {s:.1f} s)" for s in self.read("start")]
        return [(str(paths[i]), (str(reasons[i]) if status[i] == REJECTED else "not processed") + where[i]) for i in idx]

    def partly_read(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every stored clip whose file is longer than what it holds (a long file read
        as one clip): stored, but only in part, so it is listed beside the rejects, never left out in silence."""
        if "ignored" not in self.group:
            return []
        status, paths = self.read("status"), self.read("path")
        ignored, duration = self.read("ignored"), self.read("duration")
        # ignored counts from the clip's length (the decoder reads up to a second more, for leading silence to trim)
        clip = (self.attrs.get("audio") or {}).get("duration")
        held = np.full(len(duration), clip, np.float32) if isinstance(clip, (int, float)) else duration
        return [(str(paths[i]), f"partly read: the first {held[i]:.1f} s of {held[i] + ignored[i]:.{1 if ignored[i] >= 0.1 else 2}f} s "
                 "(--segment clusters every window)") for i in np.flatnonzero((status == OK) & (ignored > 0))]  # 5.05, not 5.0 of 5.0

    def ignored(self) -> dict[str, float]:
        """How much audio the stored clips left out: files longer than the clip, read up to it."""
        ok = self.read("status") == OK
        seconds = self.read("ignored")[ok] if "ignored" in self.group else np.zeros(0)
        return {"ignored_files": int((seconds > 0).sum()), "ignored_s": round(float(seconds.sum()), 1)}

    def counts(self) -> dict[str, int]:
        status = self.read("status")
        return {name: int((status == code).sum()) for code, name in STATUS_NAMES.items()}

    def verify(self) -> list[str]:
        """Read every chunk of every array; return the problems found (empty: the store is sound)."""
        problems = []
        for name in sorted(self.group.array_keys()):
            arr = self.group[name]
            step = arr.chunks[0]
            for c in range(-(-arr.shape[0] // step)):
                try:
                    self.read(name, c * step, (c + 1) * step)
                except StoreError as exc:
                    problems.append(str(exc))
        try:
            status = self.read("status")
            unknown = sorted(set(np.unique(status).tolist()) - set(STATUS_NAMES))
            if unknown:
                problems.append(f"{self.url}: array 'status' holds unknown codes {unknown}")
            paths = self.read("path")
            mismatch = np.flatnonzero((status == VACANT) != (paths == ""))
            if len(mismatch):
                step = self.clips_per_chunk
                chunks = sorted({int(i) // step for i in mismatch})
                problems.append(
                    f"{self.url}: manifest inconsistent in clip chunks {chunks}: {len(mismatch)} slots have a path "
                    "but no status, or a status but no path (a 'path' or 'status' chunk is missing?)"
                )
            n = self.n_clips
            for name in CLIP_ARRAYS:
                if self.group[name].shape[0] != n:
                    problems.append(f"{self.url}: array '{name}' has {self.group[name].shape[0]} rows, 'path' has {n}")
        except StoreError:
            pass  # already reported above
        return problems
