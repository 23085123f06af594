import numpy as np
import pytest

from storage import Geometry, Store, StoreError

SEED_GEOMETRY = Geometry(freq=288, frames=432, block=144, channels=3)


def test_report_geometry_671_clips_give_4026_blocks(tmp_path):
    paths = [f"clip{i:03d}.ogg" for i in range(671)]
    store = Store.create(str(tmp_path / "s.zarr"), paths, [""] * 671, SEED_GEOMETRY, clips_per_chunk=32)
    assert SEED_GEOMETRY.blocks_per_clip == 6
    assert store.n_blocks == 4026
    assert store.group["blocks"].shape == (4026, 144, 144, 3)
    assert store.group["image"].shape == (671, 288, 432, 3)
    batches = store.clip_batches()
    assert batches[0] == (0, 32) and batches[-1] == (640, 671)
    assert sum(e - s for s, e in batches) == 671


def test_layout_chunks_and_dimension_names(tmp_path):
    geo = Geometry(freq=64, frames=96, block=32, channels=1)
    store = Store.create(str(tmp_path / "s.zarr"), ["a.wav", "b.wav", "c.wav"], ["x", "y", ""], geo, clips_per_chunk=2)
    g = store.group
    assert g["blocks"].chunks == (12, 32, 32, 1)
    assert g["image"].chunks == (2, 64, 96, 1)
    assert g["image"].metadata.dimension_names == ("clip", "freq", "frame", "channel")
    assert g.attrs["geometry"] == {"freq": 64, "frames": 96, "block": 32, "channels": 1}
    assert list(store.read("label")) == ["x", "y", ""]
    # nothing written yet: every clip counts as a reject
    assert [p for p, _ in store.rejects()] == ["a.wav", "b.wav", "c.wav"]


def test_writes_must_be_whole_chunks_and_roundtrip(tmp_path):
    geo = Geometry(freq=64, frames=96, block=32, channels=1)
    store = Store.create(str(tmp_path / "s.zarr"), [f"{i}.wav" for i in range(3)], [""] * 3, geo, clips_per_chunk=2)
    img = np.random.default_rng(0).random((1, 64, 96, 1)).astype(np.float32)
    blocks = np.zeros((6, 32, 32, 1), np.float32)
    with pytest.raises(StoreError, match="whole chunk"):
        store.write_clips(1, img, np.array([True]), [""], np.array([5.0]), blocks)
    store.write_clips(2, img, np.array([False]), ["silent"], np.array([5.0]), blocks)
    reopened = Store.open(str(tmp_path / "s.zarr"))
    assert reopened.rejects()[-1] == ("2.wav", "silent")
    np.testing.assert_allclose(reopened.read("image", 2, 3), img, atol=1e-3)  # float16 storage


def test_opening_something_else_fails_clearly(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        Store.open(str(tmp_path / "missing.zarr"))
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an audioclust store"):
        Store.open(str(tmp_path / "other.zarr"))
