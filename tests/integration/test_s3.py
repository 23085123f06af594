"""Input folder, labels and store on an S3-protocol server (moto, on 127.0.0.1) started by the test."""

import pytest

from flows.config import load_config
from flows.pipeline import preprocess_flow
from flows.runtime import run_on_dask
from storage import Store
from tests.conftest import free_port

pytestmark = pytest.mark.integration
moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
pytest.importorskip("s3fs", reason="s3fs is in the test extra")


@pytest.fixture
def s3(monkeypatch):
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # picked up by s3fs/botocore here and inherited by the LocalCluster's worker processes
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("corpus-bucket")
    yield fs
    server.stop()


def test_preprocess_from_and_to_s3(prefect_api, small_corpus, s3):
    audio, labels = small_corpus
    files = sorted(audio.iterdir())[::3]  # 14 clips, all families
    for f in files:
        s3.put(str(f), f"corpus-bucket/clips/{f.name}")
    s3.put(str(labels), "corpus-bucket/labels.csv")
    s3.pipe("corpus-bucket/clips/broken.wav", b"not audio")

    cfg = load_config("fast", clips_per_chunk=8, n_workers=2, dashboard_address="127.0.0.1:0")
    url = "s3://corpus-bucket/store.zarr"
    result = run_on_dask(preprocess_flow, cfg, input_dir="s3://corpus-bucket/clips", store=url, labels="s3://corpus-bucket/labels.csv")
    assert (result["found"], result["stored"], result["rejected"]) == (15, 14, 1)
    store = Store.open(url)
    assert store.rejects()[0][0] == "broken.wav" and store.rejects()[0][1].startswith("undecodable")
    assert set(store.read("label")[store.ok()]) == {"tone", "noise_bursts", "clicks", "chirps_high"}
    first = int(store.ok().argmax())
    assert store.blocks(first * 6, first * 6 + 6).max() > 0.5
    assert s3.find("corpus-bucket/store.zarr/blocks")  # chunks really are objects in the bucket

    again = run_on_dask(preprocess_flow, cfg, input_dir="s3://corpus-bucket/clips", store=url, labels="s3://corpus-bucket/labels.csv")
    assert again["processed_chunks"] == 0
