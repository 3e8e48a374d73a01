# cremad-lit: `make help` lists the targets. Every target installs the project into .venv on first use.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DATA_DIR ?= data
DEMO_DIR ?= logs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint format bench bench-data bench-train bench-speech clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet --editable '.[dev]'
	@touch $@

install: $(INSTALLED) ## Create .venv and install cremad-lit with its dev tools

demo: $(INSTALLED) ## Synthetic dataset (once, into DATA_DIR), its EDA, train+test audio-visual vs audio vs video on CPU (2 jobs at a time, 1 thread each)
	$(PYTHON) -m cremad_lit.eda data=synthetic paths.data_dir=$(DATA_DIR)
	OMP_NUM_THREADS=1 $(PYTHON) train.py --multirun hydra/launcher=parallel experiment=demo paths.data_dir=$(DATA_DIR) 'data.modalities=[audio,video],[audio],[video]' seed=0,1,2 hydra.sweep.dir=$(DEMO_DIR)
	$(PYTHON) -m cremad_lit.report $(DEMO_DIR)
	@echo "Demo done. Report: $(DEMO_DIR)/report.md (mean ± std over seeds 0-1-2, each with its own actor split)."
	@echo "  Per run: $(DEMO_DIR)/<n>/metrics.json, confusion.png, curves.png (runs.csv maps n to its settings); EDA: newest logs/eda/runs/*/report.md"

test: $(INSTALLED) ## Run the whole test suite (slow tests included, as CI does)
	$(PYTHON) -m pytest

test-fast: $(INSTALLED) ## Run the tests without the slow ones
	$(PYTHON) -m pytest -m "not slow"

lint: $(INSTALLED) ## Ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(INSTALLED) ## Ruff autofix and format
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

bench: bench-data bench-train ## All benchmarks (results in docs/benchmarks.md)

bench-data: $(INSTALLED) ## Clips/s: on-the-fly decoding (decord vs PyAV) vs the prepared cache
	$(PYTHON) benchmarks/bench_data.py

bench-train: $(INSTALLED) ## Training samples/s, peak memory, inference latency of both paper models
	$(PYTHON) benchmarks/bench_train.py

bench-speech: $(INSTALLED) ## Real speech (RAVDESS, 6 actor folds): baselines, paper branches, experiment=speech; both protocols
	$(PYTHON) benchmarks/bench_speech.py

clean: ## Remove runs, generated data, caches and .venv
	rm -rf logs data .pytest_cache .ruff_cache $(VENV) *.egg-info
