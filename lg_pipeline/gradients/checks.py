"""The statistics check: a table is complete against what was expected, and every row is internally consistent.

Expected from outside the table (never taken from it): the examples (the curated ids or the input file), the
model's studied matrices (parameter, layer, module) and so its layer count, and optionally provenance values
(e.g. `chat`). Within each row: σ_min ≤ σ_max ≤ ‖G‖_F ≤ ‖G‖_* ≤ √rank·‖G‖_F with rank ≤ T (tokens of the example),
min ≤ mean ≤ max, finite values, a positive loss, 1 ≤ response tokens < tokens ≤ max_length, the module label
matching the parameter name. Across rows: one row per (example, matrix), one loss and token count per example,
one provenance (run key, dtype, device type, encoding, chat, max_length). A tiny relative slack absorbs fp32
rounding; a real violation is many orders larger.

Each rule is a boolean column checked with a Great Expectations expectation (the plumbing in
`lg_pipeline.expectations`), so a failure names the rule and the failing rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lg_pipeline.expectations import Outcome, gx_context, run_suite
from lg_pipeline.schema import MATRIX_STATS, PROVENANCE_COLUMNS
from lg_pipeline.vocabulary import layer_index

if TYPE_CHECKING:
    import pandas as pd

SLACK = 1e-4
NORMS = ("nuclear_norm", "sigma_max", "sigma_min", "frobenius_norm")
SHOWN = ("example_id", "layer", "module", "loss", "n_tokens", "nuclear_norm", "sigma_max", "frobenius_norm")
# Per-run provenance: one value in the whole table (`truncated` is per example).
RUN_PROVENANCE = tuple(c for c in PROVENANCE_COLUMNS if c != "truncated")

# Rule name -> what it means (shown with a failure).
ROW_RULES: dict[str, str] = {
    "finite": "loss and statistics are finite",
    "loss_positive": "loss > 0",
    "norms_nonnegative": "norms ≥ 0",
    "sigma_min_le_sigma_max": "σ_min ≤ σ_max",
    "sigma_max_le_frobenius": "σ_max ≤ Frobenius",
    "frobenius_le_nuclear": "Frobenius ≤ nuclear",
    "nuclear_le_rank_bound": "nuclear ≤ √rank·Frobenius",
    "min_le_mean_le_max": "grad_min ≤ grad_mean ≤ grad_max",
    "token_counts_in_range": "1 ≤ response tokens < tokens ≤ max_length",
    "one_loss_per_example": "one loss and token count per example",
    "no_duplicate_rows": "one row per (example, parameter)",
    "label_matches_parameter": "layer and module match the parameter name",
    "expected_matrix": "the parameter is one of the model's studied matrices",
    "expected_example": "the example is one of the expected examples",
    "provenance_consistent": "one run key, dtype, device type, encoding, chat and max_length in the table",
    "provenance_as_expected": "provenance as expected (e.g. chat)",
}
EXAMPLE_RULES: dict[str, str] = {
    "has_outcome": "every expected example has an outcome",
    "not_failed": "no example failed",
    "ok_has_all_rows": "an `ok` example has a row for every studied matrix, and only `ok` examples have rows",
}


@dataclass(frozen=True)
class Expected:
    """What the table should hold, from outside it. None: not known (that part is checked within the table)."""

    example_ids: frozenset[str] | None = None
    matrices: frozenset[tuple[str, int, str]] | None = None  # (parameter, layer, module)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int | None:
        return None if self.matrices is None else len({layer for _, layer, _ in self.matrices})

    @staticmethod
    def of_targets(targets: Iterable[Any]) -> frozenset[tuple[str, int, str]]:
        """From `lg_pipeline.gradients.targets.find_targets` of the model."""
        return frozenset((t.parameter, t.layer, t.module) for t in targets)


@dataclass
class Report:
    passed: bool
    outcomes: list[Outcome]
    failing_rows: pd.DataFrame

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def failed_rules(self) -> list[str]:
        return [o.column for o in self.failures()]

    def explain(self) -> list[str]:
        meaning = {**ROW_RULES, **EXAMPLE_RULES, "rows": "at least one row", "provenance_columns": "provenance columns"}
        return [f"{o.column}: {meaning.get(o.column, o.expectation)}" for o in self.failures()]


def row_rules(stats: pd.DataFrame, expected: Expected) -> pd.DataFrame:
    """One boolean column per rule of `ROW_RULES`, one row per statistics row."""
    import numpy as np
    import pandas as pd

    f = stats.reset_index(drop=True)
    s = 1 + SLACK
    rules = pd.DataFrame(index=f.index)
    values = f[["loss", *MATRIX_STATS]].to_numpy(dtype=float)
    rules["finite"] = np.isfinite(values).all(axis=1)
    rules["loss_positive"] = f.loss > 0
    rules["norms_nonnegative"] = (f[list(NORMS)] >= 0).all(axis=1)
    rules["sigma_min_le_sigma_max"] = f.sigma_min <= f.sigma_max * s
    rules["sigma_max_le_frobenius"] = f.sigma_max <= f.frobenius_norm * s
    rules["frobenius_le_nuclear"] = f.frobenius_norm <= f.nuclear_norm * s
    rules["nuclear_le_rank_bound"] = f.nuclear_norm <= np.sqrt(f.n_tokens.astype(float)) * f.frobenius_norm * s
    scale = SLACK * np.maximum(f.grad_max.abs(), f.grad_min.abs())
    rules["min_le_mean_le_max"] = (f.grad_min <= f.grad_mean + scale) & (f.grad_mean <= f.grad_max + scale)
    cap = f.max_length if "max_length" in f else np.inf
    rules["token_counts_in_range"] = (f.n_response_tokens >= 1) & (f.n_response_tokens < f.n_tokens) & (
        f.n_tokens <= cap
    )
    per_example = f.groupby("example_id")[["loss", "n_tokens", "n_response_tokens"]].transform("nunique")
    rules["one_loss_per_example"] = (per_example == 1).all(axis=1)
    rules["no_duplicate_rows"] = ~f.duplicated(["example_id", "parameter"], keep=False)
    rules["label_matches_parameter"] = [
        p.endswith(f".{m}.weight") and layer_index(p) == int(layer)
        for p, m, layer in zip(f.parameter, f.module, f.layer, strict=True)
    ]
    if expected.matrices is not None:
        keys = zip(f.parameter, f.layer.astype(int), f.module, strict=True)
        rules["expected_matrix"] = [k in expected.matrices for k in keys]
    if expected.example_ids is not None:
        rules["expected_example"] = f.example_id.isin(expected.example_ids)
    present = [c for c in RUN_PROVENANCE if c in f]
    rules["provenance_consistent"] = (
        (f[present].nunique(dropna=False) <= 1).all() if present else True
    )
    if expected.provenance:
        rules["provenance_as_expected"] = np.logical_and.reduce(
            [(f[c] == v) if c in f else np.zeros(len(f), bool) for c, v in expected.provenance.items()]
        )
    return rules


def example_rules(stats: pd.DataFrame, status: pd.DataFrame | None, expected: Expected) -> pd.DataFrame:
    """One boolean column per rule of `EXAMPLE_RULES`, one row per example (expected, with rows, or logged)."""
    import pandas as pd

    latest = (
        status.drop_duplicates("example_id", keep="last").set_index("example_id").status
        if status is not None
        else pd.Series(dtype=object)
    )
    rows = stats.groupby("example_id").parameter.nunique()
    ids = set(rows.index) | set(latest.index) | set(expected.example_ids or ())
    frame = pd.DataFrame(index=sorted(ids))
    outcome = latest.reindex(frame.index)
    n_rows = rows.reindex(frame.index).fillna(0)
    wanted = len(expected.matrices) if expected.matrices is not None else (int(rows.max()) if len(rows) else 0)
    rules = pd.DataFrame(index=frame.index)
    expected_ids = expected.example_ids
    must_log = status is not None and expected_ids is not None
    rules["has_outcome"] = outcome.notna() | ~frame.index.isin(expected_ids or ()) if must_log else True
    rules["not_failed"] = outcome != "failed"
    is_ok = outcome == "ok" if status is not None else n_rows > 0
    rules["ok_has_all_rows"] = (is_ok & (n_rows == wanted)) | (~is_ok & (n_rows == 0))
    return rules.reset_index(names="example_id")


def _suite(gx: Any, name: str, rule_names: Iterable[str], extra: list[Any] = ()) -> Any:
    E = gx.expectations
    suite = gx.ExpectationSuite(name=name)
    for expectation in [*extra, *[E.ExpectColumnValuesToBeInSet(column=r, value_set=[True]) for r in rule_names]]:
        suite.add_expectation(expectation)
    return suite


def validate_gradient_stats(
    stats: pd.DataFrame, status: pd.DataFrame | None = None, expected: Expected | None = None
) -> Report:
    """Check one statistics table (and its per-example outcome log) against `expected`."""
    import great_expectations as gx

    expected = expected or Expected()
    context = gx_context()
    rules = row_rules(stats, expected)
    missing = [c for c in PROVENANCE_COLUMNS if c not in stats]
    table_level = [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1)]
    outcomes = run_suite(context, rules, _suite(gx, "gradient_stats", rules.columns, table_level), "rows")
    for outcome in outcomes:
        if outcome.expectation == "expect_table_row_count_to_be_between":
            outcome.column = "rows"
    outcomes.append(Outcome("expect_table_columns_to_include", "provenance_columns", not missing))
    examples = example_rules(stats, status, expected)
    for outcome in run_suite(context, examples, _suite(gx, "examples", EXAMPLE_RULES), "examples"):
        outcome.failing_index = []  # positions among examples, not statistics rows
        outcomes.append(outcome)
    bad = sorted({i for o in outcomes for i in o.failing_index})
    shown = stats.reset_index(drop=True).loc[bad, [c for c in SHOWN if c in stats]]
    return Report(all(o.passed for o in outcomes), outcomes, shown)
