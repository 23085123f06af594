import numpy as np
import pytest

from storage import OK, PENDING, REJECTED, REMOVED, VACANT, FileEntry, Geometry, Store, StoreError

SEED_GEOMETRY = Geometry(freq=288, frames=432, block=144, channels=3)
SMALL = Geometry(freq=64, frames=96, block=32, channels=1)


def entries(names, size=10, mtime=1):
    return [FileEntry(n, size, mtime) for n in names]


def test_report_geometry_671_clips_give_4026_blocks(tmp_path):
    store = Store.create(str(tmp_path / "s.zarr"), SEED_GEOMETRY, clips_per_chunk=32)
    store.sync_manifest(entries(f"clip{i:03d}.ogg" for i in range(671)))
    assert SEED_GEOMETRY.blocks_per_clip == 6
    assert store.n_blocks == 4026
    assert store.group["blocks"].shape == (4026, 144, 144, 3)
    assert "image" not in store.group  # images are joined from their blocks, not stored twice
    chunks = store.clip_chunks()
    assert chunks[0] == (0, 32) and chunks[-1] == (640, 671)
    assert sum(e - s for s, e in chunks) == 671


def test_layout_chunks_and_dimension_names(tmp_path):
    store = Store.create(str(tmp_path / "s.zarr"), SMALL, clips_per_chunk=2)
    store.sync_manifest(entries(["a.wav", "b.wav", "c.wav"]), {"a.wav": "x", "b.wav": "y"}.get)
    g = store.group
    assert g["blocks"].chunks == (12, 32, 32, 1)
    assert g["path"].chunks == (2,)
    assert g["blocks"].metadata.dimension_names == ("block", "row", "col", "channel")
    assert g.attrs["geometry"] == {"freq": 64, "frames": 96, "block": 32, "channels": 1, "block_width": 0}
    assert list(store.read("label")) == ["x", "y", ""]
    # nothing processed yet: every listed file is pending, and counted among the rejects
    assert [r for r in store.rejects()] == [("a.wav", "not processed"), ("b.wav", "not processed"), ("c.wav", "not processed")]


def test_manifest_appends_marks_changes_and_removals(tmp_path):
    store = Store.create(str(tmp_path / "s.zarr"), SMALL, clips_per_chunk=4)
    assert store.sync_manifest(entries(["a.wav", "b.wav", "c.wav"])) == {"listed": 3, "items": 3, "new": 3, "changed": 0, "removed": 0}
    status = store.read("status")
    status[:] = OK
    store.group["status"][:] = status
    assert store.pending_chunks() == []
    # unchanged listing: nothing to do
    assert store.sync_manifest(entries(["a.wav", "b.wav", "c.wav"]))["changed"] == 0 and store.pending_chunks() == []
    # b changed, c removed, d and e new: appended from the next chunk boundary
    sync = store.sync_manifest([FileEntry("a.wav", 10, 1), FileEntry("b.wav", 10, 2), FileEntry("d.wav", 1, 1), FileEntry("e.wav", 1, 1)])
    assert sync == {"listed": 4, "items": 4, "new": 2, "changed": 1, "removed": 1}
    assert list(store.read("status")) == [OK, PENDING, REMOVED, VACANT, PENDING, PENDING]
    assert list(store.read("path")) == ["a.wav", "b.wav", "c.wav", "", "d.wav", "e.wav"]
    assert store.pending_chunks() == [(0, 4), (4, 6)]
    # c comes back: pending again, in its old slot
    store.sync_manifest(entries(["a.wav", "b.wav", "c.wav", "d.wav", "e.wav"]))
    assert store.read("status")[2] == PENDING


def test_a_long_file_is_a_run_of_windows_and_a_changed_one_redoes_only_its_own(tmp_path):
    store = Store.create(str(tmp_path / "s.zarr"), SMALL, clips_per_chunk=4)
    windows = {"long.wav": [0.0, 5.0, 10.0], "short.wav": [0.0]}
    asked = []

    def starts_of(e):
        asked.append(e.path)
        return windows[e.path]

    sync = store.sync_manifest(entries(["long.wav", "short.wav"]), starts_of=starts_of)
    assert sync == {"listed": 2, "items": 4, "new": 2, "changed": 0, "removed": 0}
    assert list(store.read("path")) == ["long.wav"] * 3 + ["short.wav"] and list(store.read("start")) == [0, 5, 10, 0]
    store.group["status"][:] = np.full(4, OK, "int8")
    asked.clear()
    assert store.sync_manifest(entries(["long.wav", "short.wav"]), starts_of=starts_of)["changed"] == 0 and asked == []
    # the long file grows by a window: its old rows are removed, its new ones appended; the short one is untouched
    windows["long.wav"] = [0.0, 5.0, 10.0, 15.0]
    sync = store.sync_manifest([FileEntry("long.wav", 20, 2), FileEntry("short.wav", 10, 1)], starts_of=starts_of)
    assert sync == {"listed": 2, "items": 5, "new": 0, "changed": 1, "removed": 0} and asked == ["long.wav"]
    assert list(store.read("status")) == [REMOVED] * 3 + [OK] + [PENDING] * 4
    assert list(store.read("start")[4:]) == [0, 5, 10, 15] and store.pending_chunks() == [(4, 8)]
    # changed again with as many windows: the same rows, pending again
    store.sync_manifest([FileEntry("long.wav", 21, 3), FileEntry("short.wav", 10, 1)], starts_of=starts_of)
    assert list(store.read("status")) == [REMOVED] * 3 + [OK] + [PENDING] * 4 and store.n_clips == 8


def test_writes_must_be_whole_chunks_and_roundtrip(tmp_path):
    store = Store.create(str(tmp_path / "s.zarr"), SMALL, clips_per_chunk=2)
    store.sync_manifest(entries(["0.wav", "1.wav", "2.wav"]))
    from storage import to_blocks

    img = np.random.default_rng(0).random((1, 64, 96, 1)).astype(np.float32)
    kw = dict(reasons=["silent"], hashes=["h"], durations=np.array([5.0]), blocks=to_blocks(img[0], 32))
    with pytest.raises(StoreError, match="whole chunk"):
        store.write_clips(1, status=np.array([REJECTED]), **kw)
    store.write_clips(2, status=np.array([REJECTED]), **kw)
    reopened = Store.open(str(tmp_path / "s.zarr"))
    assert reopened.rejects()[-1] == ("2.wav", "silent")
    assert reopened.counts()["rejected"] == 1 and reopened.counts()["pending"] == 2
    np.testing.assert_allclose(reopened.read("blocks", 12, 18), kw["blocks"], atol=1e-3)  # float16 storage
    store.write_clips(2, status=np.array([OK]), **kw)
    np.testing.assert_allclose(Store.open(str(tmp_path / "s.zarr")).images(2, 3), img, atol=1e-3)  # the image, joined back


def test_open_or_create_keeps_a_matching_store_and_replaces_another(tmp_path):
    url = str(tmp_path / "s.zarr")
    store, created = Store.open_or_create(url, SMALL, 2, "fp1")
    store.sync_manifest(entries(["a.wav"]))
    again, created2 = Store.open_or_create(url, SMALL, 2, "fp1")
    assert created and not created2 and again.n_clips == 1
    other, created3 = Store.open_or_create(url, SMALL, 2, "fp2")
    assert created3 and other.n_clips == 0


def test_opening_something_else_fails_clearly(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        Store.open(str(tmp_path / "missing.zarr"))
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an audioclust store"):
        Store.open(str(tmp_path / "other.zarr"))


def test_store_is_readable_by_dask_and_xarray(tmp_path):
    import dask.array as da
    import xarray as xr

    store = Store.create(str(tmp_path / "s.zarr"), SMALL, clips_per_chunk=2)
    store.sync_manifest(entries(["a.wav", "b.wav", "c.wav"]))
    blocks = da.from_zarr(str(tmp_path / "s.zarr"), component="blocks")
    assert blocks.shape == (18, 32, 32, 1) and blocks.chunks[0] == (12, 6)
    ds = xr.open_zarr(str(tmp_path / "s.zarr"), consolidated=False)
    assert ds["blocks"].dims == ("block", "row", "col", "channel")
    assert list(ds["path"].values) == ["a.wav", "b.wav", "c.wav"]


def _filled_store(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = Store.create(url, SMALL, clips_per_chunk=2)
    store.sync_manifest(entries(["0.wav", "1.wav", "2.wav", "3.wav"]))
    rng = np.random.default_rng(0)
    for s, e in store.clip_chunks():
        blocks = rng.random(((e - s) * 6, 32, 32, 1)).astype(np.float32)
        store.write_clips(s, status=np.full(e - s, OK), reasons=[""] * (e - s), hashes=["h"] * (e - s), durations=np.full(e - s, 5.0), blocks=blocks)
    return url


def test_a_deleted_chunk_is_reported_not_read_as_data(tmp_path):
    url = _filled_store(tmp_path)
    assert Store.open(url).verify() == []
    (tmp_path / "s.zarr" / "blocks" / "c" / "1" / "0" / "0" / "0").unlink()
    store = Store.open(url)
    with pytest.raises(StoreError, match=r"array 'blocks' chunk 1 \(rows 12-23\) is missing"):
        store.blocks(0, 24)
    store.blocks(0, 12)  # the intact chunk still reads
    assert any("'blocks' chunk 1" in p for p in store.verify())


def test_a_garbled_chunk_fails_its_checksum(tmp_path):
    url = _filled_store(tmp_path)
    chunk = tmp_path / "s.zarr" / "blocks" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    store = Store.open(url)
    with pytest.raises(StoreError, match=r"array 'blocks' chunk 0 \(rows 0-11\) is corrupt: .*checksum"):
        store.blocks(0, 24)
    problems = store.verify()
    assert len(problems) == 1 and "'blocks' chunk 0" in problems[0]


def test_verify_command(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    url = _filled_store(tmp_path)
    ok = CliRunner().invoke(app, ["verify", url])
    assert ok.exit_code == 0 and "ok" in ok.output
    (tmp_path / "s.zarr" / "status" / "c" / "0").unlink()
    bad = CliRunner().invoke(app, ["verify", url])
    assert bad.exit_code == 1
    missing = CliRunner().invoke(app, ["verify", str(tmp_path / "nope.zarr")])
    assert missing.exit_code == 2 and "no store" in missing.output


def test_stored_hash_is_sha256_of_the_file_and_older_stores_keep_blake2b(tmp_path):
    import hashlib

    from flows.corpus import scan
    from storage import Geometry, Store
    from tasks.audio import AudioSettings
    from tasks.preprocess import preprocess_range
    from tasks.synth import make_corpus

    audio, _ = make_corpus(tmp_path, per_family=2, families=("tone", "noise_bursts"), seed=3)
    spec = AudioSettings(n_mels=64, n_frames=96, block=32, channels=1)
    for name, drop_attr in (("new.zarr", False), ("old.zarr", True)):
        url = str(tmp_path / name)
        store = Store.create(url, Geometry(freq=64, frames=96, block=32, channels=1), clips_per_chunk=4)
        if drop_attr:  # a store made before the attribute existed
            del store.group.attrs["hash"]
        store.sync_manifest(scan(audio))
        preprocess_range(url, str(audio), 0, store.n_clips, spec)
        store = Store.open(url)
        path = str(store.read("path")[0])
        data = (audio / path).read_bytes()
        expected = hashlib.blake2b(data, digest_size=16).hexdigest() if drop_attr else hashlib.sha256(data).hexdigest()
        assert store.hash_algorithm == ("blake2b-128" if drop_attr else "sha256")
        assert store.read("hash")[0] == expected


def test_files_touched_or_copied_again_with_the_same_bytes_are_not_decoded_again(tmp_path, monkeypatch):
    """A new modification time sends a file back to PENDING; if its content hash is the stored one,
    its blocks and outcome are kept without decoding, even when that is every clip of a chunk."""
    import os

    from flows.corpus import scan
    from tasks import preprocess
    from tasks.audio import AudioSettings
    from tasks.synth import make_corpus, synth_clip

    audio, _ = make_corpus(tmp_path, per_family=3, families=("tone", "noise_bursts"), seed=5)  # 6 clips
    (audio / "notes.txt").write_text("not audio")  # rejected, and stays rejected with its reason
    spec = AudioSettings(n_mels=64, n_frames=96, block=32, channels=1)
    url = str(tmp_path / "s.zarr")
    store = Store.create(url, SMALL, clips_per_chunk=4)  # 7 files: chunks of 4 and 3
    store.sync_manifest(scan(audio))
    first = preprocess.preprocess_range(url, str(audio), 0, store.n_clips, spec)
    assert (first["stored"], first["rejected"], first["unchanged"]) == (6, 1, 0)
    before = Store.open(url)
    blocks, reasons, paths = before.read("blocks"), list(before.read("reason")), list(before.read("path"))

    files = sorted(p for p in audio.iterdir())
    for p in files:  # every file touched: both chunks all PENDING
        os.utime(p, ns=(p.stat().st_mtime_ns + 10**9,) * 2)
    edited = [p for p in paths if p.endswith(".wav")][-2]  # one of them also gets new content
    import soundfile as sf

    sf.write(audio / edited, synth_clip("clicks", 22050, 5.0, np.random.default_rng(1)), 22050)
    assert store.sync_manifest(scan(audio))["changed"] == 7

    decoded = []
    real = preprocess.clip_blocks
    monkeypatch.setattr(preprocess, "clip_blocks", lambda path, s, data=None, start=0.0: decoded.append(os.path.basename(path)) or real(path, s, data, start))
    again = preprocess.preprocess_range(url, str(audio), 0, store.n_clips, spec)
    assert (again["stored"], again["rejected"], again["unchanged"]) == (1, 0, 6)
    assert decoded == [edited]
    after = Store.open(url)
    assert after.counts()["ok"] == 6 and list(after.read("reason")) == reasons and after.rejects() == before.rejects()
    bpc = SMALL.blocks_per_clip
    for i in range(7):
        same = np.array_equal(after.read("blocks")[i * bpc : (i + 1) * bpc], blocks[i * bpc : (i + 1) * bpc], equal_nan=True)
        assert same == (paths[i] != edited), paths[i]
    assert not np.isnan(after.read("blocks")).any()


def test_storage_package_exports_and_leaf_modules():
    import ast
    import pathlib

    import storage

    for name in ("Store", "StoreError", "Geometry", "FileEntry", "VACANT", "PENDING", "OK", "REJECTED", "REMOVED",
                 "to_blocks", "from_blocks", "file_hash", "hasher", "HASH"):
        assert hasattr(storage, name) and name in storage.__all__
    assert not hasattr(Store, "clip_batches") and not hasattr(Store, "pending_batches")  # no aliases
    root = pathlib.Path(storage.__file__).parent
    for leaf in ("layout.py", "hashing.py"):
        tree = ast.parse((root / leaf).read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in imported if m and m.split(".")[0] == "storage"], leaf
    for path in root.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
