# modularity: every target bootstraps what it needs (venv from the lock file, datasets) on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
PROFILE ?= default
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` / `make test-fast`: one per core, at most 4 (TEST_JOBS=0: one process)
TEST_JOBS ?= auto
XDIST = $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --maxprocesses 4 --dist worksteal)
CLUSTER ?=
WORKERS ?=
# Trained networks for `make bench`: yours under data/checkpoints when there, else the committed smoke networks.
CHECKPOINTS ?= $(if $(wildcard data/checkpoints/MNIST/seed0/pruned.pt),data/checkpoints,benchmark/expected/smoke/networks)
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

.PHONY: help setup test test-fast reproduce pull push data bench lint clean clean-data update-expected tox

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(STAMPS)/venv $(STAMPS)/data ## create .venv from requirements.lock and prepare the datasets

$(STAMPS)/venv: requirements.lock pyproject.toml
	@mkdir -p $(STAMPS)
	@echo ">> creating $(VENV) from requirements.lock (torch + torchvision: about 2-3 minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

data: $(STAMPS)/data ## prepare MNIST, Fashion-MNIST and digits under data/ (offline sources first)

$(STAMPS)/data: $(STAMPS)/venv modularity/data.py
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo ">> installing Debian's dataset-fashion-mnist (offline Fashion-MNIST source)"; \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo ">> could not install dataset-fashion-mnist; falling back to the torchvision download"; \
	fi
	$(PY) -m modularity data prepare mnist fashion digits
	@if [ -d .dvc ] && [ -e .git ]; then $(PY) -m dvc commit --force --quiet data.dvc && \
	  echo ">> data/datasets is in the DVC cache (make push sends it to the remote)"; fi
	@touch $@

test: setup ## everything: unit tests, training tests, the smoke run and its regression check (CI)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup ## unit tests only (no training, no smoke run): `-m "not slow"`, a few minutes
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

reproduce: setup ## regenerate every paper table under paper/ (PROFILE=default|smoke|cnn-short|full|paper, CLUSTER=tcp://host:8786, WORKERS=n)
	$(PY) -m benchmark.reproduce --profile $(PROFILE) --push $(if $(CLUSTER),--cluster $(CLUSTER)) $(if $(WORKERS),--workers $(WORKERS))

pull: $(STAMPS)/venv ## restore trained networks and results from the DVC remote (say what to do when there is none)
	$(PY) -m benchmark.reproduce --pull

push: $(STAMPS)/venv ## send the DVC cache (datasets, checkpoints, results) to the default DVC remote
	$(PY) -m dvc push

update-expected: setup ## retrain the smoke networks and rewrite their expected values (on purpose only; NETWORKS=keep: values only)
	$(PY) -m benchmark.reproduce --profile smoke --no-dvc --root $(or $(TMPDIR),/tmp)/modularity-update-expected --update-expected \
	  $(if $(filter keep,$(NETWORKS)),--networks benchmark/expected/smoke/networks)

bench: setup $(STAMPS)/bench ## performance benchmarks: ratios measured side by side, written to paper/performance.json (CHECKPOINTS=dir)
	$(PY) -m benchmark.bench_clustering --mlp-checkpoint $(CHECKPOINTS)/MNIST/seed0/pruned.pt
	$(PY) -m benchmark.bench_lesion --checkpoints $(CHECKPOINTS)
	$(PY) -m benchmark.bench_visualize --checkpoints $(CHECKPOINTS)
	$(PY) -m benchmark.bench_training
	$(PY) -m benchmark.bench_numerics

$(STAMPS)/bench: $(STAMPS)/venv pyproject.toml
	@echo ">> installing the benchmark peers (Captum, torch-lucent: the [bench] extra)"
	$(PY) -m pip install --quiet -c requirements.lock captum==0.9.0 torch-lucent==0.1.8
	@touch $@

lint: $(STAMPS)/venv ## ruff
	$(VENV)/bin/ruff check modularity benchmark tests

tox: $(STAMPS)/venv ## run the tox environments (test, lint) with the locked versions
	$(VENV)/bin/tox

clean: ## remove the venv, stamps and caches (keeps data/ and paper/)
	rm -rf $(VENV) $(STAMPS) .pytest_cache .ruff_cache .tox
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-data: ## remove prepared datasets and downloads (checkpoints under data/ too)
	rm -rf data/datasets data/raw $(STAMPS)/data
