"""Column names of the gradient-statistics table and their names in the study's release.

Our schema uses names that say what a value is; the study's scripts and released
JSONL files use short names (`S_sum`, `M_mean`, ...). `STUDY_NAMES` is the one
place that maps between them, used by the importer and exporter.
"""

from __future__ import annotations

# Statistics of one per-example gradient matrix, in the order the engine emits them.
MATRIX_STATS: tuple[str, ...] = (
    "nuclear_norm",
    "sigma_max",
    "sigma_min",
    "frobenius_norm",
    "grad_mean",
    "grad_max",
    "grad_min",
    "effective_rank",  # exp of the entropy of σ/Σσ (Roy & Vetterli 2007); 0 for an all-zero gradient
    "stable_rank",  # ‖G‖_F² / σ_max²; 0 for an all-zero gradient
)

# Our name -> the study's name (its `grads_*.jsonl` keys). The study has no names for our
# additions (`STUDY_EXTRAS`): the exporter leaves them out and the importer leaves them NaN.
STUDY_NAMES: dict[str, str] = {
    "nuclear_norm": "S_sum",
    "sigma_max": "S_max",
    "sigma_min": "S_min",
    "frobenius_norm": "frobenius_norm",
    "grad_mean": "M_mean",
    "grad_max": "M_max",
    "grad_min": "M_min",
}
STUDY_EXTRAS: tuple[str, ...] = tuple(s for s in MATRIX_STATS if s not in STUDY_NAMES)

# One row per example x parameter.
GRADIENT_COLUMNS: tuple[str, ...] = (
    "example_id",
    "layer",
    "module",
    "parameter",
    "loss",
    "n_tokens",
    "n_response_tokens",
    *MATRIX_STATS,
)

# Per-example outcome log (one row per example attempted), kept beside the statistics.
STATUS_COLUMNS: tuple[str, ...] = ("example_id", "status", "reason")

# How each statistics row was computed, beside its numbers, so a check can tell rows computed another way.
# `run_key` is a short hash of everything that changes a number (engine, weights, dtype, device type, settings);
# `truncated` is per example: its response was cut at `max_length`.
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "run_key",
    "dtype",
    "device_type",
    "encoding",
    "chat",
    "max_length",
    "truncated",
)
