"""The statistics check: a good table passes; every planted defect kind fails it, naming its rule."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from lg_pipeline.gradients.checks import Expected, validate_gradient_stats
from lg_pipeline.gradients.engine import EngineConfig
from lg_pipeline.gradients.runner import run_to_parquet, status_path
from lg_pipeline.gradients.targets import find_targets
from tests.helpers.builders import example

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLES = [example(f"ex{i}", 6 + i, 12 + 5 * i) for i in range(4)]
TARGETS = ("q_proj", "k_proj", "o_proj")


@pytest.fixture(scope="module")
def good(llama, tokenizer, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, Expected]:
    out = tmp_path_factory.mktemp("good") / "stats.parquet"
    config = EngineConfig(batch_size=2, targets=TARGETS, max_length=64)
    run_to_parquet(llama, tokenizer, EXAMPLES, config, out, report=lambda m: None)
    expected = Expected(
        frozenset(e.example_id for e in EXAMPLES),
        Expected.of_targets(find_targets(llama, TARGETS)),
        {"chat": False},
    )
    return pd.read_parquet(out), pd.read_parquet(status_path(out)), expected


Table = tuple[pd.DataFrame, pd.DataFrame]


def _set(frame: pd.DataFrame, mask, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[mask, column] = value
    return frame


def first(s: pd.DataFrame):
    return s.index == 0


# Each planted defect: (stats, status) -> (stats, status). The rules it must break are listed beside it.
DEFECTS: dict[str, tuple[Callable[[pd.DataFrame, pd.DataFrame], Table], set[str]]] = {
    "module dropped for every example": (lambda s, t: (s[s.module != "k_proj"], t), {"ok_has_all_rows"}),
    "last layer dropped for every example": (lambda s, t: (s[s.layer != 1], t), {"ok_has_all_rows"}),
    "one row of one example dropped": (lambda s, t: (s.drop(index=3), t), {"ok_has_all_rows"}),
    "a whole example dropped (rows and outcome)": (
        lambda s, t: (s[s.example_id != "ex2"], t[t.example_id != "ex2"]), {"has_outcome"}
    ),
    "the two-writer table (1 of 4 examples)": (
        lambda s, t: (s[s.example_id == "ex0"], t[t.example_id == "ex0"]), {"has_outcome"}
    ),
    "status ok, no rows": (lambda s, t: (s[s.example_id != "ex1"], t), {"ok_has_all_rows"}),
    "rows of an example not expected": (
        lambda s, t: (pd.concat([s, s[s.example_id == "ex0"].assign(example_id="zz")]), t), {"expected_example"}
    ),
    "failed example": (lambda s, t: (s[s.example_id != "ex3"], _set(t, t.example_id == "ex3", "status", "failed")),
                       {"not_failed"}),
    "duplicated row": (lambda s, t: (pd.concat([s, s.iloc[[0]]]), t), {"no_duplicate_rows"}),
    "duplicated row, conflicting numbers": (
        lambda s, t: (pd.concat([s, s.iloc[[0]].assign(nuclear_norm=s.nuclear_norm.iloc[0] * 2)]), t),
        {"no_duplicate_rows"},
    ),
    "σ_min > σ_max": (lambda s, t: (_set(s, first(s), "sigma_min", s.sigma_max.iloc[0] * 2), t),
                      {"sigma_min_le_sigma_max"}),
    "σ_max > Frobenius": (lambda s, t: (_set(s, first(s), "sigma_max", s.frobenius_norm.iloc[0] * 1.5), t),
                          {"sigma_max_le_frobenius"}),
    "Frobenius > nuclear": (lambda s, t: (_set(s, first(s), "frobenius_norm", s.nuclear_norm.iloc[0] * 1.5), t),
                            {"frobenius_le_nuclear"}),
    "nuclear > √rank·Frobenius": (lambda s, t: (_set(s, first(s), "nuclear_norm", s.frobenius_norm.iloc[0] * 100), t),
                                  {"nuclear_le_rank_bound"}),
    "grad_mean > grad_max": (lambda s, t: (_set(s, first(s), "grad_mean", s.grad_max.iloc[0] * 3 + 1), t),
                             {"min_le_mean_le_max"}),
    "grad_min > grad_mean": (lambda s, t: (_set(s, first(s), "grad_min", s.grad_max.iloc[0] + 1), t),
                             {"min_le_mean_le_max"}),
    "loss differs between rows of one example": (
        lambda s, t: (_set(s, first(s), "loss", s.loss.iloc[0] * 1.1), t), {"one_loss_per_example"}
    ),
    "more response tokens than tokens": (
        lambda s, t: (_set(s, s.example_id == "ex0", "n_response_tokens", 10_000), t), {"token_counts_in_range"}
    ),
    "more tokens than max_length": (
        lambda s, t: (_set(s, s.example_id == "ex0", "n_tokens", 65), t), {"token_counts_in_range"}
    ),
    "zero response tokens": (
        lambda s, t: (_set(s, s.example_id == "ex0", "n_response_tokens", 0), t), {"token_counts_in_range"}
    ),
    "swapped module labels": (
        lambda s, t: (s.assign(module=s.module.replace({"q_proj": "k_proj", "k_proj": "q_proj"})), t),
        {"label_matches_parameter", "expected_matrix"},
    ),
    "layer label wrong": (lambda s, t: (_set(s, first(s), "layer", 1), t), {"label_matches_parameter"}),
    "NaN statistic": (lambda s, t: (_set(s, first(s), "frobenius_norm", float("nan")), t), {"finite"}),
    "infinite loss": (lambda s, t: (s.assign(loss=float("inf")), t), {"finite"}),
    "negative norm": (lambda s, t: (_set(s, first(s), "sigma_min", -1.0), t), {"norms_nonnegative"}),
    "zero loss": (lambda s, t: (s.assign(loss=0.0), t), {"loss_positive"}),
    "mixed chat and no-chat rows": (
        lambda s, t: (_set(s, s.example_id == "ex0", "chat", True), t),
        {"provenance_consistent", "provenance_as_expected"},
    ),
    "rows of two run keys": (lambda s, t: (_set(s, s.example_id == "ex1", "run_key", "other"), t),
                             {"provenance_consistent"}),
    "mixed dtypes": (lambda s, t: (_set(s, s.example_id == "ex1", "dtype", "bfloat16"), t),
                     {"provenance_consistent"}),
    "computed with chat, expected without": (lambda s, t: (s.assign(chat=True), t), {"provenance_as_expected"}),
    "no provenance columns (an old table)": (lambda s, t: (s.drop(columns=["run_key", "chat"]), t),
                                             {"provenance_columns", "provenance_as_expected"}),
    "empty table": (lambda s, t: (s.iloc[0:0], t), {"rows", "ok_has_all_rows"}),
}


def test_the_good_table_passes(good):
    stats, status, expected = good
    report = validate_gradient_stats(stats, status, expected)
    assert report.passed, report.explain()


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_every_planted_defect_fails_the_check_naming_its_rule(good, defect):
    stats, status, expected = good
    plant, rules = DEFECTS[defect]
    bad_stats, bad_status = plant(stats.copy(), status.copy())
    report = validate_gradient_stats(bad_stats.reset_index(drop=True), bad_status.reset_index(drop=True), expected)
    assert not report.passed, f"{defect}: passed"
    assert rules <= set(report.failed_rules()), f"{defect}: failed {report.failed_rules()}, expected {rules}"


def test_without_expectations_the_table_is_still_checked_within_itself(good):
    stats, status, _ = good
    assert validate_gradient_stats(stats, status).passed
    one_row_short = stats.drop(index=3)
    assert "ok_has_all_rows" in validate_gradient_stats(one_row_short, status).failed_rules()
