"""The same code on a second Keras backend: the `fast` preset end to end with KERAS_BACKEND=torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.synth import make_corpus

pytestmark = pytest.mark.integration


def test_fast_preset_end_to_end_on_the_torch_backend(tmp_path, prefect_api):
    pytest.importorskip("torch", reason="the torch extra is not installed (make test installs it)")
    audio, labels = make_corpus(tmp_path / "corpus", per_family=8, families=("tone", "clicks", "noise_bursts", "chirp_up"), seed=4)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    exe = Path(sys.executable).with_name("audioclust")
    out = tmp_path / "run"
    result = subprocess.run(
        [str(exe), "run", str(audio), "--labels", str(labels), "--k", "4", "--preset", "fast", "--epochs", "10",
         "--n-workers", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    train = json.loads((out / "model" / "train.json").read_text())
    assert train["device"].startswith("torch on CPU") and metrics["device"] == train["device"]
    assert metrics["stored"] == 32 and metrics["epochs"] >= 1
    assert metrics["scores"]["all"]["nmi"] >= 0.5  # 4 families, 32 clips: chance is about 0.1
