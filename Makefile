# `make demo` and `make test` each create or refresh .venv first.
# A GPU host overrides the torch pin:  make demo TORCH_SPEC='torch==2.13.0' PIP_EXTRA='--index-url ...'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
# pytest-xdist workers for `make test`; each test file runs on one worker (its module fixtures run once).
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast protos results bench reliability clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIP_EXTRA) '$(TORCH_SPEC)'
	$(BIN)/pip install -q $(PIP_EXTRA) -e '.[dev,ray]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/splitleak demo --force

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

# Regenerate the committed stubs from protos/ (tests/test_protos.py fails when they are stale).
protos: $(STAMP)
	$(BIN)/python -m splitleak.protogen

results: $(STAMP)
	$(BIN)/splitleak results --force

# Runs the crash-safety tests (kills, full disk, fuzzing, Finish) and writes their figures into
# docs/reliability.md (about 8 minutes on 2 cores: every process killed at every point).
reliability: $(STAMP)
	$(BIN)/python -m splitleak.reliability

# Rewrites docs/benchmarks.md; run it on an otherwise idle machine (about 15 minutes on 2 cores).
bench: $(STAMP)
	$(BIN)/splitleak bench transport --force
	$(BIN)/splitleak bench transport --force --config configs/mnist.yaml --section mnist
	$(BIN)/splitleak bench transport --force model.cut_dim=8192 --section wide-8192
	$(BIN)/splitleak demo --force --config configs/mnist.yaml --run-dir runs/mnist
	$(BIN)/splitleak bench attacks runs/mnist
	$(BIN)/splitleak bench attacks --synthetic 50000,8192,10
	$(BIN)/splitleak bench attacks --synthetic 1000000,128,10 --channels grad --attacks distance,kmeans_seeded

clean:
	rm -rf $(VENV) runs .pytest_cache
