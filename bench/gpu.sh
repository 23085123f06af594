#!/usr/bin/env bash
# The seed preset's training on a GPU machine (PyTorch or JAX with CUDA, no TensorFlow), beside the CPU.
#   bench/gpu.sh prepare [CLIPS]   here: a seed store of CLIPS esc10 clips (default 100, to fit a 64 MiB
#                                  carry) in .gpu/, the preset's settings, and the wheels the GPU lacks in .whl/
#   bench/gpu.sh cpu [EPOCHS]      here: the same training on this CPU (KERAS_BACKEND, default torch)
#   bench/gpu.sh run [EPOCHS]      on the GPU machine (carry .gpu and .whl): installs the wheels, trains, prints
# Each prints one JSON line: device, epochs, whether EarlyStopping ended them, seconds per epoch, losses, zero codes.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND="${KERAS_BACKEND:-torch}"
what="${1:-}"
case "$what" in
  prepare)
    clips="${2:-100}"
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/esc10
    ls ../shared/data/esc10/audio | head -n "$clips" | while read -r f; do ln -s "$PWD/../shared/data/esc10/audio/$f" ".gpu/esc10/$f"; done
    .venv/bin/audioclust preprocess .gpu/esc10 --store .gpu/esc10-seed.zarr --preset seed
    .venv/bin/python -c "import json; from flows.config import load_config; c = load_config('seed'); print(json.dumps(c.model_dump(mode='json', include={'model', 'training'})))" > .gpu/seed.json
    rm -rf .gpu/esc10 .whl && mkdir -p .whl
    for name in keras namex optree zarr numcodecs donfig google-crc32c pydantic pydantic-core annotated-types typing-inspection; do
      version=$(.venv/bin/python -m pip show "$name" | sed -n 's/^Version: //p')  # the versions this venv runs
      .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$name==$version"
    done
    du -sh .gpu .whl ;;
  cpu)
    .venv/bin/python -m bench.gpu_train .gpu/esc10-seed.zarr .gpu/seed.json --epochs "${2:-3}" ;;
  run)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH="/tmp/site:$PWD" python3 -m bench.gpu_train .gpu/esc10-seed.zarr .gpu/seed.json --epochs "${2:-200}" ;;
  *)
    sed -n '2,7p' "$0"; exit 2 ;;
esac
