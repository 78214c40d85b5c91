#!/usr/bin/env bash
# The engine's device check in one call: on CUDA at most 8 minutes on one H200; without CUDA a CPU smoke of the same
# steps (under 3 minutes), after printing `no CUDA: CPU smoke only`. Writes one Markdown table, gpu_check.md, to $OUT
# when it is set (the device tool's folder), else to bench/results/. See bench/gpu_check.py for the steps.
#
#   bench/gpu_check.sh            (or: make gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi  # the device machine has no .venv
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# 540 s: the check's own step budgets sum to under 8 minutes; this stops a step that overruns its budget.
timeout 540 "$PY" bench/gpu_check.py "$@"
