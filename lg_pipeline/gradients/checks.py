"""Validation of gradient-statistics tables with Great Expectations 1.x (no Dagster here).

Beyond finiteness and signs, the spectral inequalities every gradient must obey:
σ_max ≤ ‖G‖_* , ‖G‖_F ≤ ‖G‖_* ≤ √rank·‖G‖_F with rank ≤ T (tokens of the example).
A tiny relative slack absorbs fp32 rounding; a real violation is many orders larger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lg_pipeline.expectations import Outcome, gx_context, run_suite
from lg_pipeline.schema import MATRIX_STATS

if TYPE_CHECKING:
    import pandas as pd

SLACK = 1e-4
NORMS = ("nuclear_norm", "sigma_max", "sigma_min", "frobenius_norm")
SHOWN = ("example_id", "layer", "module", "loss", "n_tokens", "nuclear_norm", "sigma_max", "frobenius_norm")


@dataclass
class Report:
    passed: bool
    outcomes: list[Outcome]
    failing_rows: pd.DataFrame

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]


def _derived(stats: pd.DataFrame) -> pd.DataFrame:
    """Columns that turn row-wise inequalities and completeness into plain column expectations."""
    import numpy as np

    frame = stats.reset_index(drop=True).copy()
    frame["all_finite"] = np.isfinite(frame[["loss", *MATRIX_STATS]].to_numpy(dtype=float)).all(axis=1)
    frame["nuclear_with_slack"] = frame.nuclear_norm * (1 + SLACK)
    frame["rank_bound"] = np.sqrt(frame.n_tokens.astype(float)) * frame.frobenius_norm * (1 + SLACK)
    frame["targets_of_example"] = frame.groupby("example_id").parameter.transform("nunique")
    return frame


def _stat_suite(gx: Any, n_targets: int, n_layers: int) -> Any:
    E = gx.expectations
    suite = gx.ExpectationSuite(name="gradient_stats")
    expectations = [
        E.ExpectTableRowCountToBeBetween(min_value=1),
        E.ExpectColumnValuesToBeInSet(column="all_finite", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(column="loss", min_value=0, strict_min=True),
        *[E.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in NORMS],
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="nuclear_norm", column_B="sigma_max", or_equal=True),
        E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="nuclear_with_slack", column_B="frobenius_norm", or_equal=True
        ),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="rank_bound", column_B="nuclear_norm", or_equal=True),
        E.ExpectColumnValuesToBeInSet(column="targets_of_example", value_set=[n_targets]),
        E.ExpectColumnDistinctValuesToEqualSet(column="layer", value_set=list(range(n_layers))),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def validate_gradient_stats(stats: pd.DataFrame, status: pd.DataFrame | None = None) -> Report:
    """Check one partition's statistics (and its per-example outcome log: no `failed` example)."""
    import great_expectations as gx

    context = gx_context()
    frame = _derived(stats)
    n_targets = int(frame.parameter.nunique())
    n_layers = int(frame.layer.max()) + 1 if len(frame) else 0
    outcomes = run_suite(context, frame, _stat_suite(gx, n_targets, n_layers), "gradient_stats")
    if status is not None:
        suite = gx.ExpectationSuite(name="example_status")
        suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeInSet(column="status", value_set=["failed"]))
        for outcome in run_suite(context, status.reset_index(drop=True), suite, "example_status"):
            outcome.failing_index = []  # positions in the status log, not in the statistics
            outcomes.append(outcome)
    bad = sorted({i for o in outcomes for i in o.failing_index})
    rows = frame.loc[bad, [c for c in SHOWN if c in frame]]
    return Report(all(o.passed for o in outcomes), outcomes, rows)
