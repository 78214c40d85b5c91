"""The statistics check: a good table passes; every planted defect kind fails it, naming its rule; a table file is
checked from its own manifest, and what no manifest or flag tells is said to be unchecked, never passed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.gradients.checks import Expected, check_table, validate_gradient_stats
from lg_pipeline.gradients.engine import EngineConfig
from lg_pipeline.gradients.runner import run_to_parquet, status_path
from lg_pipeline.gradients.targets import find_targets
from tests.helpers.builders import example
from tests.helpers.planted import add_manifest, gradient_manifest

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLES = [example(f"ex{i}", 6 + i, 12 + 5 * i) for i in range(4)]
TARGETS = ("q_proj", "k_proj", "o_proj")


@pytest.fixture(scope="module")
def good_file(llama, tokenizer, tmp_path_factory) -> Path:
    """A real run's table and outcome log, with the manifest a run writes."""
    out = tmp_path_factory.mktemp("good") / "stats.parquet"
    config = EngineConfig(batch_size=2, targets=TARGETS, max_length=64)
    run_to_parquet(llama, tokenizer, EXAMPLES, config, out, report=lambda m: None)
    return add_manifest(out, gradient_manifest(llama, [e.example_id for e in EXAMPLES], TARGETS, limit=None))


@pytest.fixture(scope="module")
def good(llama, good_file) -> tuple[pd.DataFrame, pd.DataFrame, Expected]:
    out = good_file
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
    "layer labels shifted by 0.5": (lambda s, t: (s.assign(layer=s.layer + 0.5), t),
                                    {"integer_columns", "label_matches_parameter", "expected_matrix"}),
    "layer labels as text": (lambda s, t: (s.assign(layer=s.layer.astype(str)), t), {"numeric_columns"}),
    "negative effective rank": (lambda s, t: (_set(s, first(s), "effective_rank", -1.0), t),
                                {"effective_rank_in_range"}),
    "effective rank above the token count": (
        lambda s, t: (_set(s, first(s), "effective_rank", float(s.n_tokens.iloc[0] + 5)), t),
        {"effective_rank_in_range"},
    ),
    "effective rank below 1 for a non-zero gradient": (lambda s, t: (_set(s, first(s), "effective_rank", 0.5), t),
                                                       {"effective_rank_in_range"}),
    "stable rank 1e9": (lambda s, t: (_set(s, first(s), "stable_rank", 1e9), t),
                        {"stable_rank_in_range", "stable_rank_identity"}),
    "stable rank ≠ Frobenius² / σ_max²": (lambda s, t: (_set(s, first(s), "stable_rank", s.stable_rank.iloc[0] / 2), t),
                                          {"stable_rank_identity"}),
    "max entry above σ_max": (lambda s, t: (_set(s, first(s), "grad_max", s.sigma_max.iloc[0] * 2), t),
                              {"entries_le_sigma_max"}),
    "truncated set on untruncated rows": (lambda s, t: (s.assign(truncated=True), t), {"truncated_consistent"}),
    "truncated on one row of an example only": (
        lambda s, t: (_set(s, first(s), "truncated", True), t), {"one_loss_per_example", "truncated_consistent"}
    ),
    "a string nuclear_norm": (lambda s, t: (s.assign(nuclear_norm=s.nuclear_norm.astype(str)), t),
                              {"numeric_columns"}),
    "a word in nuclear_norm": (lambda s, t: (_set(s.astype({"nuclear_norm": object}), first(s), "nuclear_norm", "n/a"),
                                             t), {"numeric_columns", "finite"}),
    "sigma_min column dropped": (lambda s, t: (s.drop(columns=["sigma_min"]), t), {"columns"}),
    "loss column dropped": (lambda s, t: (s.drop(columns=["loss"]), t), {"columns"}),
    "fractional token count": (lambda s, t: (_set(s.astype({"n_tokens": float}), s.example_id == "ex0", "n_tokens",
                                                   12.5), t),
                               {"integer_columns"}),
    "an example id missing": (lambda s, t: (_set(s, first(s), "example_id", None), t), {"label_columns"}),
    "chat as text": (lambda s, t: (s.assign(chat="no"), t), {"flag_columns"}),
    "an outcome that is no outcome": (lambda s, t: (s, _set(t, t.example_id == "ex0", "status", "done")),
                                      {"status_values"}),
    "an example logged twice": (lambda s, t: (s, pd.concat([t, t.iloc[[0]].assign(status="failed")])),
                                {"one_status_per_example"}),
    "outcome log without a status column": (lambda s, t: (s, t.drop(columns=["status"])), {"status_columns"}),
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


def test_a_failure_says_what_broke_in_numbers(good):
    stats, status, expected = good
    report = validate_gradient_stats(stats[stats.module != "o_proj"].reset_index(drop=True), status, expected)
    assert report.failed_rules() == ["ok_has_all_rows"]
    assert report.failures()[0].detail == (
        "4 of 4 examples; ex0 has 4 of 6 matrices (lacks e.g. model.layers.0.self_attn.o_proj.weight)"
    )


# ------------------------------------------------------------------------------------------------ from a file
def _copy(good_file: Path, tmp_path: Path) -> Path:
    shutil.copy(status_path(good_file), tmp_path / "stats.status.parquet")
    return Path(shutil.copy(good_file, tmp_path / "stats.parquet"))


def _manifest(**changes):
    def plant(path: Path) -> None:
        from lg_pipeline.io.manifest import read_manifest

        add_manifest(path, {**read_manifest(path), **changes})

    return plant


def _rows(keep):
    def plant(path: Path) -> None:
        from lg_pipeline.io.manifest import read_manifest

        manifest = read_manifest(path)
        frame = pd.read_parquet(path)
        from lg_pipeline.io.atomic import write_parquet

        write_parquet(frame[keep(frame)], path, manifest=manifest)

    return plant


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _status(plant):
    return lambda path: plant(status_path(path))


def _replace_by_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _k_rank_above_its_side(path: Path) -> None:
    """k_proj is 32×64 here: an effective rank of 33 is possible for the tokens, not for the matrix."""
    _rows(lambda f: f.index >= 0)(path)
    frame = pd.read_parquet(path)
    from lg_pipeline.io.manifest import read_manifest

    manifest = read_manifest(path)
    row = frame.index[(frame.module == "k_proj") & (frame.n_tokens > 33)][0]
    frame.loc[row, "effective_rank"] = 33.0
    from lg_pipeline.io.atomic import write_parquet

    write_parquet(frame, path, manifest=manifest)


FILE_DEFECTS: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "the outcome log missing": (lambda p: status_path(p).unlink(), {"status_file"}),
    "a torn outcome log": (_status(_tear), {"status_file"}),
    "a torn table": (_tear, {"readable"}),
    "a 0-byte table": (lambda p: p.write_bytes(b""), {"readable"}),
    "a folder where the table was": (_replace_by_folder, {"readable"}),
    "o_proj dropped for every example (the manifest knows the matrices)": (
        _rows(lambda f: f.module != "o_proj"), {"ok_has_all_rows"}
    ),
    "an example of the manifest without rows or outcome": (
        lambda p: (_rows(lambda f: f.example_id != "ex3")(p), _status(_rows(lambda f: f.example_id != "ex3"))(p)),
        {"has_outcome"},
    ),
    "rows of another dtype than the manifest's": (_manifest(dtype="bfloat16"), {"provenance_as_expected"}),
    "a manifest of another kind": (_manifest(kind="gradient_status"), {"manifest_kind"}),
    "an effective rank above min(out, in) (the manifest knows the shapes)": (
        _k_rank_above_its_side, {"effective_rank_in_range"}
    ),
}


def test_a_copied_table_with_its_manifest_passes_with_nothing_left_unchecked(good_file, tmp_path):
    report = check_table(_copy(good_file, tmp_path))
    assert report.passed and not report.unchecked, report.explain()


@pytest.mark.parametrize("defect", list(FILE_DEFECTS))
def test_every_planted_file_defect_fails_naming_its_rule(good_file, tmp_path, defect):
    path = _copy(good_file, tmp_path)
    plant, rules = FILE_DEFECTS[defect]
    plant(path)
    report = check_table(path)
    assert not report.passed, f"{defect}: passed"
    assert rules <= set(report.failed_rules()), f"{defect}: failed {report.failed_rules()}, expected {rules}"


def test_a_missing_example_is_counted_against_the_manifest_and_its_limit(good_file, tmp_path):
    path = _copy(good_file, tmp_path)
    _manifest(example_ids=[e.example_id for e in EXAMPLES] + ["ex4", "ex5"], limit=4)(path)
    (outcome,) = [o for o in check_table(path).failures() if o.column == "has_outcome"]
    assert outcome.detail == "4 of 6 examples of the run's manifest have an outcome; the run was limited to 4"


def test_without_a_manifest_the_completeness_rules_are_unchecked_not_passed(good_file, tmp_path):
    path = _copy(good_file, tmp_path)
    pd.read_parquet(path).to_parquet(path)  # the manifest stripped
    report = check_table(path)
    assert report.passed and set(report.unchecked) == {"has_outcome", "expected_matrix"}
    flags = Expected(frozenset(e.example_id for e in EXAMPLES), None, source="--data")
    assert set(check_table(path, flags).unchecked) == {"expected_matrix"}
