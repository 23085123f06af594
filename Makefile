# Two entry points, each doing all set-up on a fresh machine:
#   make demo   - create .venv, install, synthesize a labelled corpus, run the pipeline, print NMI
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/audioclust demo

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache

.PHONY: bench-train-encode
bench-train-encode: $(STAMP)   ## training and encoding cost on ../shared/data/esc10
	$(BIN)/python -m bench.train_encode

.PHONY: bench-quality
bench-quality: $(STAMP)   ## clustering quality on esc10, fsdd and three synthesized kinds of audio: baseline, seed, K-Means, default, DEC, head (about 2 h)
	$(BIN)/python -m bench.quality

.PHONY: bench-preprocess
bench-preprocess: $(STAMP)   ## preprocessing throughput: esc10 and a synthesized 2 000-clip corpus
	$(BIN)/python -m bench.preprocess
