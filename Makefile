# fairforget: `make run` and `make test` do all the set-up on a fresh machine (Debian, Python 3.11, root).
#
# The Python environment is built once into a cache outside the clone, keyed by the hash of requirements.txt,
# so every clone and CI on the machine reuse it. Override the cache with FAIRFORGET_CACHE=...

SHELL := /bin/bash
PYTHON_BASE ?= python3.11
FAIRFORGET_CACHE ?= $(HOME)/.cache/fairforget
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
VENV := $(FAIRFORGET_CACHE)/venv-$(REQ_HASH)
PY := $(VENV)/bin/python
LINT_VENV := $(FAIRFORGET_CACHE)/lint-$(shell sha256sum requirements-dev.txt | cut -c1-16)
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
EXPERIMENT ?= fairforget-fashion_mnist
MLFLOW_ARGS ?= -P forget_rate=0.1

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PYTHONUNBUFFERED := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export RAY_USAGE_STATS_ENABLED := 0
export PATH := $(VENV)/bin:$(PATH)

.PHONY: env install fashion-mnist postgres setup run test test-integration test-all test-slow lint results docs ui dvc-push clean-env

env: $(VENV)/.complete

# Built in place; the marker is written last, so an interrupted build is rebuilt from scratch next time.
# No prerequisite: the folder name already carries the hash of requirements.txt, and a fresh clone's newer file
# time must not trigger a rebuild of a cached environment.
$(VENV)/.complete:
	@command -v $(PYTHON_BASE) >/dev/null || { echo "error: $(PYTHON_BASE) not found: install Python 3.11 or set PYTHON_BASE=..." >&2; exit 2; }
	rm -rf "$(VENV)"
	mkdir -p "$(FAIRFORGET_CACHE)"
	$(PYTHON_BASE) -m venv "$(VENV)"
	"$(PY)" -m pip install --quiet --upgrade pip
	"$(PY)" -m pip install --quiet -r requirements.txt
	touch "$@"
	@echo "environment ready: $(VENV)"

fashion-mnist:
	@if [ ! -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: Fashion-MNIST is missing and installing it needs root: run 'sudo apt-get install dataset-fashion-mnist'" >&2; exit 2; \
	  fi; \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) || \
	   { echo "error: apt-get could not install dataset-fashion-mnist" >&2; exit 2; }; \
	fi

# PostgreSQL's server binaries for tests/scale_out/test_mlflow_postgres.py, which starts a throw-away server (as an
# unprivileged user, on loopback) and runs the tracking server against it. Debian's package puts them in
# /usr/lib/postgresql/<version>/bin/.
postgres:
	@if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: PostgreSQL is missing and installing it needs root: run 'sudo apt-get install postgresql'" >&2; exit 2; \
	  fi; \
	  echo "installing Debian package postgresql"; \
	  (apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq postgresql)) || \
	   { echo "error: apt-get could not install postgresql" >&2; exit 2; }; \
	fi

# The package itself goes into the cached environment as an editable install of this clone (seconds; it only
# writes a path hook, so every clone that runs `make` points the environment at itself).
install: env
	@PYTHONWARNINGS=ignore "$(PY)" -m pip install --quiet --no-deps --no-build-isolation --disable-pip-version-check -e .

setup: install fashion-mnist
	@mkdir -p .dvcstore

run: setup
	"$(PY)" -m mlflow run . $(MLFLOW_ARGS) --env-manager local --experiment-name $(EXPERIMENT)
	@echo
	@echo "runs:     sqlite:///$(CURDIR)/mlflow.db (experiment $(EXPERIMENT))"
	@echo "data:     $(CURDIR)/data (versioned by data.dvc; 'dvc push' sends it to .dvcstore/)"
	@echo "MLflow UI: $(PY) -m mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"
	@echo "DVC:      $(PY) -m dvc status && $(PY) -m dvc push"

# Two tiers: `make test` (components, entry points, data steps, audits: minutes) and the integration tier (whole
# toy-pipeline runs, kill-and-resume tests, real MLflow/Ray/S3 servers). `make test-all` runs both; CI runs it.
test: setup
	"$(PY)" -m pytest -q -m "not integration"

test-integration: setup postgres
	"$(PY)" -m pytest -q -m integration

test-all: test test-integration

# The linter (requirements-dev.txt, its own small cached environment) and the repository's size rule: no tracked
# file above 1 MB (data lives in DVC, binaries nowhere).
lint: $(LINT_VENV)/.complete
	"$(LINT_VENV)/bin/ruff" check fairforget components pipelines benchmarks experiments tools tests docker
	@big=$$(git ls-files -z | xargs -0 du -b 2>/dev/null | awk '$$1 > 1000000 {print $$2}'); \
	  if [ -n "$$big" ]; then echo "error: tracked files above 1 MB (track data with DVC, keep binaries out): $$big" >&2; exit 1; fi

$(LINT_VENV)/.complete:  # no prerequisite: the hash of requirements-dev.txt is in the name (as for the main env)
	rm -rf "$(LINT_VENV)"
	$(PYTHON_BASE) -m venv "$(LINT_VENV)"
	"$(LINT_VENV)/bin/pip" install --quiet -r requirements-dev.txt
	touch "$@"

test-slow: setup postgres
	FAIRFORGET_SLOW=1 "$(PY)" -m pytest -q -m slow

# The study behind docs/results.md: 3 seeds of the pipeline and its baselines (its wall time is in the head of docs/results.md).
results: setup
	"$(PY)" -m experiments.study --seeds 0 1 2 --parallel 3

# The API reference (docs/api/, not committed) from the docstrings of the public package.
docs: install
	"$(PY)" -m pdoc --docformat restructuredtext --output-directory docs/api fairforget fairforget.components \
	  fairforget.pipelines fairforget.errors
	@echo "API reference: $(CURDIR)/docs/api/fairforget.html"

ui: env
	"$(PY)" -m mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db"

dvc-push: env
	"$(PY)" -m dvc push

clean-env:
	rm -rf "$(VENV)"
