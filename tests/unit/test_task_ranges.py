"""How the preprocess flow groups store chunks into Prefect tasks."""

from flows.pipeline import task_ranges


def chunks(n, size=32, start=0):
    return [(start + i * size, start + (i + 1) * size) for i in range(n)]


def test_small_chunks_are_grouped_but_every_worker_keeps_about_two_tasks():
    # 63 chunks of 32 clips (the seed preset on 2 000 clips), 2 workers: 4 tasks of about 500 clips
    ranges = task_ranges(chunks(62) + [(1984, 2000)], 1024, 2)
    assert len(ranges) == 4 and ranges[0] == (0, 512) and ranges[-1][1] == 2000
    assert all(b[0] == a[1] for a, b in zip(ranges, ranges[1:]))  # consecutive, nothing left out
    # 400 clips: the 2-tasks-per-worker floor wins over clips_per_task, and the ranges are even
    # (cutting every 128 clips would leave 16 for the last and one worker 256 clips to the other's 144)
    assert task_ranges(chunks(12) + [(384, 400)], 1024, 2) == [(0, 96), (96, 192), (192, 288), (288, 400)]
    # 20 000 clips: clips_per_task bounds the tasks
    big = task_ranges(chunks(625), 1024, 2)
    assert len(big) == 20 and all(990 <= e - s <= 1024 for s, e in big) and big[-1][1] == 20000


def test_large_chunks_stay_one_task_each_and_gaps_are_spanned():
    assert task_ranges(chunks(5, 256), 256, 2) == chunks(5, 256)
    assert task_ranges([(0, 32), (32, 64), (160, 192)], 256, 0) == [(0, 64), (160, 192)]  # no workers known: as for 1
    assert task_ranges([], 256, 2) == []
    # every other chunk pending (a re-run after changes): a range spans the finished chunks between, which the task skips
    pending = [(s, s + 8) for s in range(0, 640, 16)]
    ranges = task_ranges(pending, 256, 2)
    assert ranges == [(0, 152), (160, 312), (320, 472), (480, 632)]


def test_one_task_processes_several_chunks_and_skips_finished_ones(tmp_path):
    import numpy as np

    from flows.corpus import scan
    from storage import Geometry, Store
    from tasks.audio import AudioSettings
    from tasks.preprocess import preprocess_range
    from tasks.synth import make_corpus

    audio, _ = make_corpus(tmp_path, per_family=4, families=("tone", "clicks", "noise_bursts"), seed=2)
    url = str(tmp_path / "store.zarr")
    store = Store.create(url, Geometry(freq=64, frames=96, block=32, channels=1), clips_per_chunk=4)
    store.sync_manifest(scan(audio))
    assert preprocess_range(url, str(audio), 0, 4, AudioSettings(n_mels=64, n_frames=96, block=32, channels=1))["stored"] == 4
    first = store.read("blocks", 0, 24)
    mtime = (tmp_path / "store.zarr" / "blocks" / "c" / "0" / "0" / "0" / "0").stat().st_mtime_ns
    result = preprocess_range(url, str(audio), 0, 12, AudioSettings(n_mels=64, n_frames=96, block=32, channels=1))
    assert (result["stored"], result["rejected"]) == (8, 0)  # chunks 1 and 2; chunk 0 had nothing pending
    assert Store.open(url).ok().all()
    np.testing.assert_array_equal(Store.open(url).read("blocks", 0, 24), first)
    assert (tmp_path / "store.zarr" / "blocks" / "c" / "0" / "0" / "0" / "0").stat().st_mtime_ns == mtime  # not rewritten



def test_a_file_a_few_ms_longer_than_the_clip_is_not_reported_as_partly_read(tmp_path):
    import numpy as np
    import soundfile as sf

    from flows.corpus import scan
    from storage import Geometry, Store
    from tasks.audio import AudioSettings
    from tasks.preprocess import preprocess_range

    audio = tmp_path / "audio"
    audio.mkdir()
    sr = 22050
    rng = np.random.default_rng(0)
    for name, seconds in (("exact.wav", 2.0), ("over_1ms.wav", 2.001), ("over_half.wav", 2.5)):
        sf.write(audio / name, 0.1 * rng.standard_normal(int(sr * seconds)), sr)
    for trim_db in (0.0, 40.0):  # trimming silence: the decoder reads up to a second more, the clip still holds 2 s
        spec = AudioSettings(duration=2.0, n_mels=64, n_frames=96, block=32, channels=1, trim_db=trim_db)  # a column: 2 s / 96 = 21 ms
        url = str(tmp_path / f"store{trim_db}.zarr")
        store = Store.create(url, Geometry(freq=64, frames=96, block=32, channels=1), clips_per_chunk=4,
                             attrs={"audio": spec.model_dump(mode="json")})  # as the flow records it
        store.sync_manifest(scan(audio))
        assert preprocess_range(url, str(audio), 0, 4, spec)["stored"] == 3
        store = Store.open(url)
        assert store.ignored() == {"ignored_files": 1, "ignored_s": 0.5}
        assert store.partly_read() == [("over_half.wav", "partly read: the first 2.0 s of 2.5 s (--segment clusters every window)")]
