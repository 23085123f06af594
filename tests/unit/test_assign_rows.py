"""The streamed writer of `assign --dask`: rows in listing order whatever order the batches come back in."""

import csv

from flows.assign import OrderedRows, listing_batches


def rows(start, n, reject=()):
    return [{"file": f"f{i:03d}.wav", "start": 0.0, "end": "" if i in reject else 5.0, "cluster": -1 if i in reject else i % 3,
             "farther_than": "" if i in reject else 0.5,
             "reason": "empty file" if i in reject else ""}
            for i in range(start, start + n)]


def test_batches_arriving_out_of_order_are_written_in_listing_order_and_a_failed_one_is_skipped(tmp_path):
    out = tmp_path / "a.csv"
    w = OrderedRows(out)
    w.add(4, 4, rows(4, 4, reject={5}))  # early: waits for 0-3
    assert w.rows == 0
    w.add(12, 2, rows(12, 2))
    w.add(0, 4, rows(0, 4))  # 0-3 then the waiting 4-7 go out
    assert w.rows == 8 and w.rejected == 1
    w.add(8, 4, None)  # a failed batch: its files get no row, the ones after it are not held back
    assert w.rows == 10
    w.close()
    got = list(csv.DictReader(open(out)))
    assert [r["file"] for r in got] == [f"f{i:03d}.wav" for i in (*range(8), 12, 13)]
    assert got[5] == {"file": "f005.wav", "start": "0.0", "end": "", "cluster": "-1", "confidence": "", "farther_than": "",
                      "reason": "empty file"}
    assert got[4]["farther_than"] == "0.5"
    assert open(out).readline().strip() == "file,start,end,cluster,confidence,farther_than,reason"


def test_the_listing_is_cut_into_consecutive_batches_with_their_start(tmp_path):
    for i in range(7):
        (tmp_path / f"c{i}.wav").write_bytes(b"x")
    got = list(listing_batches(str(tmp_path), 3))
    assert [(s, [name for name, _ in files]) for s, files in got] == [
        (0, ["c0.wav", "c1.wav", "c2.wav"]), (3, ["c3.wav", "c4.wav", "c5.wav"]), (6, ["c6.wav"])]
    assert got[0][1][0][1] == str(tmp_path / "c0.wav")
