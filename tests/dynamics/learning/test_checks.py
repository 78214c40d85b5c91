"""The learning-dynamics check: a good folder passes; every planted defect fails it, naming its rule and file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lg_pipeline.dynamics.learning.checks import (
    AGREEMENT_R2,
    agreement_warning,
    check_run_folder,
    completeness_failures,
)
from lg_pipeline.io.atomic import write_parquet
from tests.helpers.planted import (
    Defect,
    assert_caught,
    changed,
    defect,
    dropped,
    edit,
    fresh_copy,
    learning_folder,
    removed,
    repeated,
    set_at,
    torn,
)


@pytest.fixture
def folder(tmp_path_factory, tmp_path):
    return fresh_copy(learning_folder, tmp_path_factory, tmp_path)


def _swap(f):
    def swap(t):
        return t.assign(predicted_delta=t.measured_delta, measured_delta=t.predicted_delta)

    edit(f, "influence_summary", swap)


def _scale_one_term(f):
    edit(f, "influence", lambda t: set_at(t, 0, "predicted_delta", t.predicted_delta.iloc[0] * 5 + 1e-3))


def _noise_prediction(f):
    """Predicted changes of no use (a broken first-order term): their terms as well, so only R² shows it."""
    rng = np.random.default_rng(3)

    def noise(t):
        return t.assign(predicted_delta=rng.normal(0, 1e-3, len(t)))

    edit(f, "influence", noise)
    influence = pd.read_parquet(f / "influence.parquet")
    totals = influence.groupby(["step", "probe_id"]).predicted_delta.sum()
    edit(f, "influence_summary", lambda t: t.assign(
        predicted_delta=[totals[(s, p)] for s, p in zip(t.step, t.probe_id, strict=True)]).assign(
        chosen_share=lambda u: u.predicted_delta))


DEFECTS: dict[str, Defect] = {
    "logprobs table deleted": defect(removed("logprobs.parquet"), "tables"),
    "kernel table deleted": defect(removed("kernel.parquet"), "tables"),
    "probes table deleted": defect(removed("probes.parquet"), "tables"),
    "summary.json deleted": defect(removed("summary.json"), "summary_file"),
    "run.json deleted": defect(removed("run.json"), "run_file"),
    "run.json not JSON": defect(lambda f: (f / "run.json").write_text("{steps: 4"), "run_file"),
    "a torn logprobs.parquet": defect(torn("logprobs.parquet"), "readable"),
    "a 0-byte influence.parquet": defect(lambda f: (f / "influence.parquet").write_bytes(b""), "readable"),
    "measured_delta column dropped": defect(
        lambda f: edit(f, "influence_summary", lambda t: t.drop(columns=["measured_delta"])), "columns"),
    "string log-probabilities": defect(
        lambda f: edit(f, "logprobs", lambda t: t.assign(logp_sum=t.logp_sum.astype(str))), "numeric_columns"),
    "a step shifted by 0.5": defect(
        lambda f: edit(f, "train_log", lambda t: t.assign(step=t.step + 0.5)), "integer_columns"),
    "a layer label shifted by 0.5": defect(
        lambda f: edit(f, "influence", lambda t: t.assign(layer=t.layer + 0.5)), "integer_columns", "layer_labels"),
    "an eval step missing from the summary": defect(dropped("influence_summary", lambda t: t.step == 2),
                                                    "eval_steps_complete"),
    "a summary row at a step that is not an eval step": defect(
        lambda f: edit(f, "influence_summary", lambda t: t.assign(step=t.step.replace(2, 3))), "eval_steps_complete"),
    "a probe missing after a step": defect(dropped("logprobs", lambda t: (t.step == 1) & (t.probe_id == "p1")),
                                           "logprobs_complete", "measured_is_logp_change"),
    "duplicated logprobs row": defect(repeated("logprobs"), "unique_rows"),
    "conflicting duplicated summary row": defect(repeated("influence_summary", measured_delta=1.0),
                                                 "unique_rows", "duplicates_agree"),
    "positive log-probability": defect(
        lambda f: edit(f, "logprobs", lambda t: t.assign(logp_sum=-t.logp_sum, logp_mean=-t.logp_mean)),
        "logp_nonpositive"),
    "logp_mean not logp_sum per token": defect(changed("logprobs", 0, "logp_mean", -0.01), "logp_mean_identity"),
    "zero response tokens": defect(changed("logprobs", 0, "n_response_tokens", 0), "response_tokens_positive"),
    "NaN log-probability": defect(changed("logprobs", 0, "logp_sum", float("nan")), "finite"),
    "negative update norm": defect(changed("train_log", 1, "update_norm", -1e-4), "update_norm_nonnegative"),
    "negative learning rate": defect(changed("train_log", 1, "learning_rate", -1e-4), "learning_rate_nonnegative"),
    "zero training loss": defect(changed("train_log", 1, "loss", 0.0), "train_loss_positive"),
    "a training step missing from train_log": defect(dropped("train_log", lambda t: t.step == 3), "train_log_steps"),
    "a whole layer missing from influence": defect(dropped("influence", lambda t: t.layer == 1),
                                                   "layers_complete", "predicted_is_sum"),
    "layer 0 missing from influence": defect(dropped("influence", lambda t: t.layer == 0),
                                             "layers_complete", "predicted_is_sum"),
    "one matrix missing for one probe": defect(dropped("influence", lambda t: t.index == 0),
                                               "influence_complete", "predicted_is_sum"),
    "module label of another parameter": defect(changed("influence", 0, "module", "k_proj"), "layer_labels"),
    "empty kernel": defect(dropped("kernel", lambda t: t.index >= 0), "kernel_complete"),
    "kernel missing an example": defect(dropped("kernel", lambda t: t.example_id == "e1"), "kernel_complete"),
    "infinite kernel value": defect(changed("kernel", 2, "grad_inner", float("inf")), "finite"),
    "probability above one": defect(changed("logprobs", 1, "max_prob_mean", 1.2), "probabilities_in_range"),
    "negative entropy": defect(changed("logprobs", 3, "entropy_mean", -0.1), "entropy_nonnegative"),
    "negative softmax-Jacobian norm": defect(changed("logprobs", 0, "a_norm_mean", -1.0), "norms_nonnegative"),
    "negative residual norm": defect(changed("train_residuals", 0, "residual_norm_mean", -0.5), "norms_nonnegative"),
    "shares that do not add up": defect(changed("influence_summary", 1, "chosen_share", 0.5), "shares_sum"),
    "a rejected share under SFT": defect(changed("influence_summary", 2, "rejected_share", 1e-3), "shares_sum"),
    "a NaN share under SFT": defect(changed("influence_summary", 0, "rejected_share", float("nan")),
                                    "shares_defined"),
    "kernel parts that do not add up": defect(changed("kernel", 4, "grad_inner_chosen", 9.0), "kernel_terms_sum"),
    "a missing residual": defect(dropped("train_residuals", lambda t: t.index == 0), "residuals_complete"),
    "σ_min > σ_max in train_gradient_stats": defect(
        lambda f: edit(f, "train_gradient_stats", lambda t: set_at(t, 0, "sigma_min", t.sigma_max.iloc[0] * 2)),
        "sigma_min_le_sigma_max"),
    "stable rank 1e9 in train_gradient_stats": defect(changed("train_gradient_stats", 0, "stable_rank", 1e9),
                                                      "stable_rank_in_range", "stable_rank_identity"),
    "a batch example without statistics": defect(
        dropped("train_gradient_stats", lambda t: (t.example_id == "e1") & (t.layer == 1)), "train_stats_complete"),
    "predicted and measured swapped": defect(_swap, "not_swapped", "predicted_is_sum", "measured_is_logp_change"),
    "predicted ≠ sum of its per-matrix terms": defect(_scale_one_term, "predicted_is_sum"),
    "measured ≠ log-probability change": defect(
        lambda f: edit(f, "influence_summary", lambda t: set_at(t, 1, "measured_delta", t.measured_delta.iloc[1] * 3)),
        "measured_is_logp_change"),
    "probe type differs from the probe table": defect(changed("influence_summary", 0, "probe_type", "irrelevant"),
                                                      "probe_types_match"),
    "a probe not in the probe table": defect(dropped("probes", lambda t: t.probe_id == "p2"), "probe_ids_known"),
    "greedy_now table deleted": defect(removed("greedy_now.parquet"), "tables"),
    "a greedy_now row of a probe that is not greedy": defect(changed("greedy_now", 0, "probe_id", "p1"),
                                                             "greedy_known"),
    "a greedy_now row at a step that is not an eval step": defect(changed("greedy_now", 1, "step", 3),
                                                                  "greedy_known"),
    "a manifest of another table": defect(
        lambda f: write_parquet(pd.read_parquet(f / "kernel.parquet"), f / "kernel.parquet",
                                manifest={"kind": "dynamics.influence"}), "manifest_kind"),
}


def test_the_good_folder_passes_every_rule(folder):
    report = check_run_folder(folder)
    assert report.passed and not report.warnings() and not report.unchecked, report.explain()
    assert completeness_failures(folder, 4, 2) == []


@pytest.mark.parametrize("name", list(DEFECTS))
def test_every_planted_defect_fails_naming_its_rule(folder, name):
    assert_caught(check_run_folder, folder, name, DEFECTS[name])


def test_a_prediction_of_no_use_fires_the_agreement_warning_only(folder):
    _noise_prediction(folder)
    report = check_run_folder(folder)
    assert report.passed, report.explain()
    assert [o.column for o in report.warnings()] == ["agreement"]
    assert f"< {AGREEMENT_R2}" in report.warnings()[0].detail


def test_the_agreement_warning_fires_below_its_threshold_only():
    assert agreement_warning(0.95) is None and agreement_warning(AGREEMENT_R2) is None
    assert agreement_warning(0.5) == f"R² 0.5000 < {AGREEMENT_R2}"
    assert "undefined" in agreement_warning(float("nan"))


def test_settings_passed_in_override_the_folders(folder):
    assert "train_log_steps" in check_run_folder(folder, steps=6, eval_every=2).failed_rules()
    assert "eval_steps_complete" in check_run_folder(folder, steps=4, eval_every=1).failed_rules()


def test_a_table_no_rule_foresaw_fails_the_check_instead_of_raising(folder, monkeypatch):
    import lg_pipeline.dynamics.learning.checks as checks

    def unforeseen(*args):
        raise KeyError("a column no rule expected")

    monkeypatch.setattr(checks, "_identity_rules", unforeseen)
    report = check_run_folder(folder)
    assert "checkable" in report.failed_rules() and "KeyError" in report.failures()[-1].detail
