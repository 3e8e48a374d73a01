# cremad-lit: `make help` lists the targets. Every target installs the project into .venv on first use.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DATA_DIR ?= data
DEMO_DIR ?= logs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

.DEFAULT_GOAL := help
.PHONY: help install install-pip lock check-latest doctor demo docs test test-fast lint format bench bench-data bench-train bench-faces bench-faces-av bench-balance bench-speech bench-speech8 bench-lockbox bench-cross-corpus bench-more-people bench-ge2e bench-page bench-cache-size bench-encoders clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The measured torch set (README, "Installing"): the lock holds these; pyproject.toml keeps the ranges. uv also reads
# pyproject.toml's [tool.uv] override-dependencies: the face packages' own pins (torch<2.3, TensorFlow) replaced there.
# OpenCV stays on 4.x in the lock so that face_crop=haar can still be compared (the default, lbp, runs on 5 too).
LOCK_PINS := torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1 opencv-python-headless==4.14.0.94
UV_VERSION := 0.13.9

# uv installs the lock in parallel from a linked cache; it is bootstrapped once, pinned, into .venv-uv.
UV := .venv-uv/bin/uv
# A mirror is set for uv with UV_DEFAULT_INDEX (uv does not read pip.conf); the hashes pin every file whatever its index.
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set (this machine, CI) nothing else ever writes the
# .pyc files, and every process would compile torch, Lightning and timm again (measured: imports 7.5 s -> 18.5 s).
UV_SYNC = UV_PYTHON_DOWNLOADS=never $(UV) pip sync --quiet --compile-bytecode --python $(PYTHON) --require-hashes \
	requirements.lock

$(UV):
	$(PY) -m venv .venv-uv
	.venv-uv/bin/pip install --quiet uv==$(UV_VERSION)

# A fresh venv every time the lock changes, holding exactly the lock (every hash checked): uv where it can run,
# pip where it cannot (no uv wheel for the platform, no index reachable for it).
$(INSTALLED): requirements.lock pyproject.toml
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	@if $(MAKE) --no-print-directory $(UV) && $(UV_SYNC); then echo "installed the lock with uv $(UV_VERSION)"; \
		$(UV) pip install --quiet --python $(PYTHON) --no-deps --no-build-isolation --editable . && \
		$(PYTHON) -m cremad_lit doctor --pip-check pyproject.toml; \
	else echo "uv could not install the lock: installing it with pip (slower)"; \
		$(PYTHON) -m pip install --quiet --require-hashes --no-deps -r requirements.lock && \
		$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation --editable . && $(PYTHON) -m cremad_lit doctor --pip-check pyproject.toml; fi
	$(PYTHON) -m cremad_lit doctor --quick
	@touch $@

install-pip: ## Same as install, with pip only (the fallback; for comparing install times)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation --editable .
	$(PYTHON) -m cremad_lit doctor --pip-check pyproject.toml
	$(PYTHON) -m cremad_lit doctor --quick
	@touch $(INSTALLED)

install: $(INSTALLED) ## Create .venv and install cremad-lit with its dev tools

lock: $(UV) ## Re-resolve requirements.lock from pyproject.toml (uv, every platform, hashes); then make install and make test
	mkdir -p .venv-lock
	printf '%s\n' $(LOCK_PINS) > .venv-lock/pins.txt
	printf 'setuptools>=77\n' > .venv-lock/build.txt
	UV_PYTHON_DOWNLOADS=never $(UV) pip compile pyproject.toml .venv-lock/build.txt --extra dev \
		--universal --python-version 3.10 --generate-hashes --constraint .venv-lock/pins.txt \
		--custom-compile-command "make lock" --quiet --output-file requirements.lock
	rm -rf .venv-lock

check-latest: ## Throwaway venv with the newest versions pyproject.toml allows, then the fast tests (upstream breaks)
	rm -rf .venv-latest
	$(PY) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --upgrade --upgrade-strategy eager --editable '.[dev]'
	.venv-latest/bin/python -m cremad_lit doctor --against-lock requirements.lock
	CREMAD_LIT_UNLOCKED=1 .venv-latest/bin/python -m pytest -m "not slow" -p no:cacheprovider

demo: $(INSTALLED) ## Synthetic dataset (once, into DATA_DIR), its EDA, train+test audio-visual vs audio vs video on CPU (2 jobs at a time, 1 thread each)
	$(PYTHON) -m cremad_lit eda data=synthetic paths.data_dir=$(DATA_DIR)
	OMP_NUM_THREADS=1 $(PYTHON) train.py --multirun hydra/launcher=parallel experiment=demo paths.data_dir=$(DATA_DIR) 'data.modalities=[audio,video],[audio],[video]' seed=0,1,2 hydra.sweep.dir=$(DEMO_DIR)
	$(PYTHON) -m cremad_lit report $(DEMO_DIR)
	@echo "Demo done. Report: $(DEMO_DIR)/report.md (mean ± std over seeds 0-1-2, each with its own actor split)."
	@echo "  Per run: $(DEMO_DIR)/<n>/metrics.json, confusion.png, curves.png (runs.csv maps n to its settings); EDA: newest logs/eda/runs/*/report.md"

doctor: $(INSTALLED) ## Check the environment: versions, native libraries, decoders, accelerator, cache space
	$(PYTHON) -m cremad_lit doctor

# pytest-xdist: one worker more than cores (3 on the reference machine; the same suite took 878 s of pytest with 3
# workers and 907 s with 4: its tests also wait on servers, timeouts and process starts), tests handed out as workers
# free up (worksteal), so the long end-to-end tests overlap; TEST_WORKERS=0 runs them in this process, in turn.
TEST_WORKERS ?= $(shell $(PY) -c "import os; print(min(len(os.sched_getaffinity(0)) + 1, 4))")

docs: $(INSTALLED) ## Build the documentation site into site/ (mkdocs-material; --strict: a broken link or page fails)
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --site-dir site

test: $(INSTALLED) ## Run the whole test suite (slow tests included, as CI does), the slowest listed
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=30

test-fast: $(INSTALLED) ## Run the tests without the slow ones (unit and command tests, no training)
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow" --durations=15

lint: $(INSTALLED) ## Ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(INSTALLED) ## Ruff autofix and format
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

bench: bench-data bench-train bench-faces bench-encoders ## All benchmarks (results in docs/benchmarks.md)

bench-data: $(INSTALLED) ## Clips/s: on-the-fly decoding (decord vs PyAV) vs the prepared cache
	$(PYTHON) benchmarks/bench_data.py

bench-encoders: $(INSTALLED) ## Frozen speech encoder: head training from the feature cache vs end to end, fill cost, size
	$(PYTHON) benchmarks/bench_encoders.py

bench-faces: $(INSTALLED) ## Face detectors on the shared real clips: detection rate, ms/frame, where the crops put the eyes, zero-shot expressions
	$(PYTHON) benchmarks/bench_faces.py

bench-balance: $(INSTALLED) ## Modality balance: each balance= method on the imbalanced synthetic set, 3 seeds (~15 min)
	$(PYTHON) benchmarks/bench_balance.py

bench-faces-av: $(INSTALLED) ## Does a face add to a voice? RAVDESS actor 05: the speech recipe, the zero-shot face model, both (~6 min)
	$(PYTHON) benchmarks/bench_faces_av.py

bench-train: $(INSTALLED) ## Training samples/s, peak memory, inference latency of both paper models
	$(PYTHON) benchmarks/bench_train.py

bench-speech8: $(INSTALLED) ## Real speech in eight classes (RAVDESS, 6 blocks of 3 actors): WAR, UAR, paired with ComParE
	$(PYTHON) benchmarks/bench_speech8.py

bench-lockbox: $(INSTALLED) ## Real speech, choosing on RAVDESS 01-15 (5 folds); `python benchmarks/bench_lockbox.py --open RELEASE` opens 16-18
	$(PYTHON) benchmarks/bench_lockbox.py

bench-cross-corpus: $(INSTALLED) ## Train on one corpus, test on another: RAVDESS, ASED and both, every direction (5 folds); then the lockbox opening's models on ASED
	$(PYTHON) benchmarks/bench_corpus_table.py
	$(PYTHON) benchmarks/bench_cross_corpus.py

bench-more-people: $(INSTALLED) ## Does more people help? RAVDESS 01-15 (5 folds) alone vs with ASED 01-30 added to training (data=mix), the linear model
	$(PYTHON) benchmarks/bench_more_people.py

bench-ge2e: $(INSTALLED) ## The GE2E speaker encoder on this CPU: ms per clip (decode, features, branch), cache bytes per clip
	$(PYTHON) benchmarks/bench_ge2e.py

bench-page: $(INSTALLED) ## The demo page under load: 10 concurrent clients, 50 judgements with bad uploads mixed in; latency, answers, peak memory
	$(PYTHON) benchmarks/bench_page.py

bench-cache-size: $(INSTALLED) ## The prepared cache of the full CREMA-D: bytes per clip at 224 and 112 px, the total, the read cost
	$(PYTHON) benchmarks/bench_cache_size.py

bench-speech: $(INSTALLED) ## Real speech (RAVDESS, 6 actor folds): baselines, paper branches, experiment=speech; both protocols
	$(PYTHON) benchmarks/bench_speech.py

clean: ## Remove runs, generated data, caches and .venv
	rm -rf logs data site .pytest_cache .ruff_cache $(VENV) .venv-latest .venv-lock .venv-uv *.egg-info
