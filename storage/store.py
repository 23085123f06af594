"""Zarr v3 layout of one preprocessed corpus.

One group per corpus; every array's first axis is either the clip or the block.
Clip ``i`` owns blocks ``i * blocks_per_clip ... (i + 1) * blocks_per_clip - 1``.

=========  =====================================  ==========  =========================
array      shape                                  dtype       written by
=========  =====================================  ==========  =========================
path       (clip,)                                str         flow, at creation
label      (clip,)                                str         flow, at creation ("" = none)
ok         (clip,)                                bool        preprocess task
reason     (clip,)                                str         preprocess task ("" if ok)
duration   (clip,)                                float32     preprocess task (seconds read)
image      (clip, freq, frame, channel)           float16     preprocess task, in [0, 1]
blocks     (block, row, col, channel)             float16     preprocess task, in [0, 1]
codes      (block, code)                          float32     encode task
=========  =====================================  ==========  =========================

Chunks along the first axis hold ``clips_per_chunk`` clips (and their blocks), so a
task that owns clips ``[start, stop)`` of one chunk writes whole chunks only and
never races another task (zarr v3 has no locks). Arrays and attributes are created
by the flow process only; tasks write array regions.

A clip that could not be used stays in the store with ``ok = False`` and a reason:
every input is either stored or rejected, and the rejects are a query, not a copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec

FORMAT = "audioclust-store"
VERSION = 1


class StoreError(Exception):
    """The store is missing, of another format, or does not match the request."""


@dataclass(frozen=True)
class Geometry:
    """Shape of one clip's image and of its blocks."""

    freq: int  # image height: Mel bands (or frequency bins)
    frames: int  # image width: time frames
    block: int  # blocks are block x block squares
    channels: int  # 1 (spectrogram) or 3 (+ delta, delta-delta)

    def __post_init__(self) -> None:
        if self.freq % self.block or self.frames % self.block:
            raise ValueError(
                f"image {self.freq}x{self.frames} does not split into {self.block}x{self.block} blocks"
            )

    @property
    def grid(self) -> tuple[int, int]:
        return self.freq // self.block, self.frames // self.block

    @property
    def blocks_per_clip(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.freq, self.frames, self.channels

    @property
    def block_shape(self) -> tuple[int, int, int]:
        return self.block, self.block, self.channels


def _compressors() -> list[BloscCodec]:
    return [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]


class Store:
    """A corpus store: open with :meth:`open`, make with :meth:`create`."""

    def __init__(self, group: zarr.Group, url: str):
        self.group = group
        self.url = url
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{url} is not an audioclust store (no '{FORMAT}' format attribute)")
        self.attrs = attrs
        self.geometry = Geometry(**attrs["geometry"])
        self.n_clips = int(attrs["n_clips"])
        self.clips_per_chunk = int(attrs["clips_per_chunk"])

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
        paths: list[str],
        labels: list[str],
        geometry: Geometry,
        clips_per_chunk: int,
        attrs: dict[str, Any] | None = None,
        storage_options: dict | None = None,
    ) -> "Store":
        """Create (or replace) a store for ``paths``; audio arrays start empty."""
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        n = len(paths)
        group = zarr.open_group(url, mode="w", storage_options=storage_options)
        group.attrs.update(
            {
                "format": FORMAT,
                "version": VERSION,
                "n_clips": n,
                "clips_per_chunk": clips_per_chunk,
                "geometry": asdict(geometry),
                "blocks_per_clip": geometry.blocks_per_clip,
                **(attrs or {}),
            }
        )
        cpc, bpc = clips_per_chunk, geometry.blocks_per_clip
        clip_arrays = {
            "path": (str, ""),
            "label": (str, ""),
            "reason": (str, ""),
            "ok": ("bool", False),
            "duration": ("float32", 0.0),
        }
        for name, (dtype, fill) in clip_arrays.items():
            group.create_array(
                name, shape=(n,), chunks=(cpc,), dtype=dtype, fill_value=fill, dimension_names=("clip",)
            )
        group.create_array(
            "image",
            shape=(n, *geometry.image_shape),
            chunks=(cpc, *geometry.image_shape),
            dtype="float16",
            fill_value=0.0,
            compressors=_compressors(),
            dimension_names=("clip", "freq", "frame", "channel"),
        )
        group.create_array(
            "blocks",
            shape=(n * bpc, *geometry.block_shape),
            chunks=(cpc * bpc, *geometry.block_shape),
            dtype="float16",
            fill_value=0.0,
            compressors=_compressors(),
            dimension_names=("block", "row", "col", "channel"),
        )
        if n:
            group["path"][:] = np.asarray(paths, dtype=str)
            group["label"][:] = np.asarray(labels, dtype=str)
        return cls(group, url)

    def create_codes(self, code_size: int) -> None:
        """(Re)create the codes array; called by the flow before encode tasks run."""
        bpc = self.geometry.blocks_per_clip
        self.group.create_array(
            "codes",
            shape=(self.n_blocks, code_size),
            chunks=(self.clips_per_chunk * bpc, code_size),
            dtype="float32",
            fill_value=0.0,
            compressors=_compressors(),
            dimension_names=("block", "code"),
            overwrite=True,
        )

    # -- geometry of the work -------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return self.n_clips * self.geometry.blocks_per_clip

    def clip_batches(self) -> list[tuple[int, int]]:
        """Chunk-aligned clip ranges ``[start, stop)``: one task each."""
        c = self.clips_per_chunk
        return [(s, min(s + c, self.n_clips)) for s in range(0, self.n_clips, c)]

    def block_range(self, start: int, stop: int) -> tuple[int, int]:
        bpc = self.geometry.blocks_per_clip
        return start * bpc, stop * bpc

    # -- writes (tasks) -------------------------------------------------------------
    def _check_aligned(self, start: int, stop: int) -> None:
        c = self.clips_per_chunk
        if start % c or not (stop - start == c or stop == self.n_clips) or stop <= start:
            raise StoreError(f"clip range [{start}, {stop}) is not one whole chunk of {c} clips")

    def write_clips(
        self,
        start: int,
        images: np.ndarray,
        ok: np.ndarray,
        reasons: list[str],
        durations: np.ndarray,
        blocks: np.ndarray,
    ) -> None:
        """Write one whole chunk of clips: images, blocks and per-clip status."""
        stop = start + len(ok)
        self._check_aligned(start, stop)
        b0, b1 = self.block_range(start, stop)
        g = self.group
        g["image"][start:stop] = images.astype("float16")
        g["blocks"][b0:b1] = blocks.astype("float16")
        g["duration"][start:stop] = np.asarray(durations, dtype="float32")
        g["reason"][start:stop] = np.asarray(reasons, dtype=str)
        # status last: a clip is ok only once its data is fully written
        g["ok"][start:stop] = np.asarray(ok, dtype=bool)

    def write_codes(self, start_block: int, codes: np.ndarray) -> None:
        self.group["codes"][start_block : start_block + len(codes)] = codes.astype("float32")

    # -- reads ----------------------------------------------------------------------
    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        if name not in self.group:
            raise StoreError(f"{self.url} has no array '{name}' (has the stage that writes it run?)")
        data = self.group[name][start:stop]
        if data.dtype.kind == "T":  # numpy StringDType from zarr's variable-length strings
            data = data.astype(object).astype(str)
        return data

    def blocks(self, start: int, stop: int) -> np.ndarray:
        """Blocks ``[start, stop)`` as float32 in [0, 1]."""
        return self.read("blocks", start, stop).astype("float32")

    def iter_block_chunks(self) -> Iterator[tuple[int, int]]:
        for s, e in self.clip_batches():
            yield self.block_range(s, e)

    def rejects(self) -> list[tuple[str, str]]:
        ok = self.read("ok")
        paths, reasons = self.read("path"), self.read("reason")
        return [(str(paths[i]), str(reasons[i]) or "not processed") for i in np.flatnonzero(~ok)]
