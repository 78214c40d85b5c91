"""The zero-shot check: a good folder passes; every planted defect fails it, naming its rule and file; a real
tiny run passes it."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.dynamics.zero_shot.checks import check_run_folder, run_problems
from lg_pipeline.io.atomic import write_parquet
from tests.helpers.planted import (
    Defect,
    assert_caught,
    changed,
    defect,
    dropped,
    edit,
    fresh_copy,
    removed,
    repeated,
    set_at,
    torn,
    zero_shot_folder,
)


@pytest.fixture
def folder(tmp_path_factory, tmp_path):
    return fresh_copy(zero_shot_folder, tmp_path_factory, tmp_path)



def _first_loss_of(ordering, task="ask"):
    return lambda t: t.index[(t.ordering == ordering) & (t.step == 0) & (t.task == task)][0]


def _step0(f, delta=1e-3):
    edit(f, "zero_shot", lambda t: set_at(t, list(t.index).index(_first_loss_of("nft")(t)), "loss",
                                          t.loc[_first_loss_of("nft")(t), "loss"] + delta))


def _all_off(f):
    def change(t):
        row = t.index[(t.task == "__all__") & (t.step == 2)][0]
        return set_at(t, list(t.index).index(row), "loss", t.loc[row, "loss"] + 0.1)

    edit(f, "zero_shot", change)


def _repeat_position(f):
    edit(f, "orderings", lambda t: set_at(t, 1, "position", int(t.position.iloc[0])))


def _repeat_item(f):
    edit(f, "orderings", lambda t: set_at(t, 1, "example_id", t.example_id.iloc[0]))


def _run_file(f, **changes):
    import json

    settings = json.loads((f / "run.json").read_text())
    (f / "run.json").write_text(json.dumps({**settings, **changes}))


def _other_step0_answer(f):
    def change(t):
        row = t.index[(t.ordering == "nft") & (t.step == 0)][0]
        return set_at(t, list(t.index).index(row), "generation", "another answer")

    edit(f, "generations", change)


def _subset_item_twice(f):
    def change(t):
        rows = list(t.index[t.ordering == "tma_subset"])
        return set_at(t, list(t.index).index(rows[1]), "example_id", t.loc[rows[0], "example_id"])

    edit(f, "orderings", change)


DEFECTS: dict[str, Defect] = {
    "zero_shot.parquet deleted": defect(removed("zero_shot.parquet"), "tables"),
    "run.json deleted": defect(removed("run.json"), "run_file"),
    "run.json without its settings": defect(lambda f: (f / "run.json").write_text("{}"), "run_file"),
    "alignment of the gradient ordering deleted": defect(removed("alignment.parquet"), "tables"),
    "a torn zero_shot.parquet": defect(torn("zero_shot.parquet"), "readable"),
    "loss column dropped": defect(lambda f: edit(f, "zero_shot", lambda t: t.drop(columns=["loss"])), "columns"),
    "string losses": defect(lambda f: edit(f, "zero_shot", lambda t: t.assign(loss=t.loss.astype(str))),
                            "numeric_columns"),
    "NaN loss": defect(changed("zero_shot", 3, "loss", float("nan")), "finite"),
    "negative loss": defect(changed("zero_shot", 3, "loss", -1.0), "loss_nonnegative"),
    "duplicated loss row": defect(repeated("zero_shot"), "unique_rows"),
    "conflicting duplicated loss row": defect(repeated("zero_shot", loss=9.0), "unique_rows", "duplicates_agree"),
    "__all__ ≠ the task mean": defect(_all_off, "all_is_task_mean"),
    "different step-0 losses across orderings": defect(_step0, "step0_equal"),
    "an eval step missing": defect(dropped("zero_shot", lambda t: (t.ordering == "rt") & (t.step == 3)),
                                   "held_out_complete"),
    "a test task missing at a step": defect(
        dropped("zero_shot", lambda t: (t.ordering == "rt") & (t.step == 2) & (t.task == "tell")), "held_out_complete"),
    "n_examples of another count": defect(changed("zero_shot", 0, "n_examples", 7), "n_examples_match"),
    "a fractional step": defect(lambda f: edit(f, "zero_shot", lambda t: t.assign(step=t.step + 0.5)),
                                "integer_columns"),
    "duplicate positions": defect(_repeat_position, "positions_unique", "positions_complete"),
    "an item ordered twice": defect(_repeat_item, "ordering_is_permutation"),
    "an ordered item's task wrong": defect(changed("orderings", 0, "task", "tell"), "ordering_tasks_match"),
    "infinite score": defect(changed("orderings", 0, "score", float("inf")), "finite"),
    "an ordering missing from seen_distance": defect(dropped("seen_distance", lambda t: t.ordering == "nft"),
                                                     "orderings_finished", "seen_complete"),
    "inf in seen distance": defect(changed("seen_distance", 4, "avg", float("inf")), "seen_finite", "seen_in_range"),
    "a seen distance at step 0": defect(changed("seen_distance", 0, "min", -0.5), "seen_finite"),
    "seen distance outside [−1, 1]": defect(changed("seen_distance", 4, "max", 1.5), "seen_in_range"),
    "seen min > max": defect(changed("seen_distance", 4, "min", -0.1), "seen_order"),
    "a seen-distance step missing": defect(dropped("seen_distance", lambda t: (t.ordering == "rt") & (t.step == 2)),
                                           "seen_complete"),
    "a task item in another split": defect(changed("tasks", 0, "split", "validation"), "task_splits"),
    "task table not the run's items": defect(dropped("tasks", lambda t: t.example_id == "tell/0"),
                                             "tasks_as_settings"),
    "duplicate task item": defect(repeated("tasks"), "unique_rows"),
    "alignment missing a matrix of one item": defect(dropped("alignment", lambda t: t.index == 0),
                                                     "alignment_complete"),
    # generation metrics
    "generation_metrics.parquet deleted": defect(removed("generation_metrics.parquet"), "tables"),
    "generations.parquet deleted": defect(removed("generations.parquet"), "tables"),
    "ROUGE-1 above 1": defect(changed("generation_metrics", 0, "rouge1", 1.5), "scores_in_range"),
    "a negative exact match": defect(changed("generation_metrics", 1, "exact_match", -0.5), "scores_in_range"),
    "NaN ROUGE-L": defect(changed("generations", 1, "rougeL", float("nan")), "finite"),
    "ROUGE-L above ROUGE-1": defect(changed("generations", 0, "rougeL", 0.75), "rougeL_le_rouge1"),
    "an exact match of one half for one item": defect(changed("generations", 0, "exact_match", 0.5),
                                                      "exact_match_binary"),
    "a task score not its items' mean": defect(changed("generation_metrics", 0, "rougeL", 0.0),
                                               "scores_are_item_means"),
    "n_examples of generation of another count": defect(changed("generation_metrics", 0, "n_examples", 5),
                                                        "scores_are_item_means"),
    "a generation row missing": defect(dropped("generation_metrics", lambda t: (t.ordering == "rt") & (t.step == 2)
                                               & (t.task == "ask")), "generation_complete"),
    "an answer missing": defect(dropped("generations", lambda t: (t.ordering == "nft") & (t.step == 3)
                                        & (t.example_id == "tell/0")), "answers_complete"),
    "an answer longer than max_new_tokens": defect(changed("generations", 2, "n_new_tokens", 99), "answer_length"),
    "different step-0 answers across orderings": defect(_other_step0_answer, "step0_answers_equal"),
    "a reward without a reward model": defect(changed("generations", 0, "reward", 1.5), "reward_as_configured"),
    "no reward although a reward model is named": defect(lambda f: _run_file(f, reward_model="some/rm"),
                                                         "reward_as_configured"),
    "generation rows although generation metrics are off": defect(
        lambda f: _run_file(f, generation_metrics=False), "generation_off_empty"),
    "duplicated answer row": defect(repeated("generations"), "unique_rows"),
    "metric_stability.parquet deleted": defect(removed("metric_stability.parquet"), "tables"),
    "a rank agreement not what the tables give": defect(
        lambda f: edit(f, "metric_stability", lambda t: t.assign(rank_agreement=t.rank_agreement.fillna(0.5))),
        "stability_as_computed"),
    "stability without its loss row": defect(dropped("metric_stability", lambda t: t.metric == "loss"),
                                             "stability_as_computed"),
    # a subset ordering
    "a subset ordering with an item twice": defect(_subset_item_twice, "ordering_is_subset"),
    "a subset ordering's eval step missing": defect(
        dropped("zero_shot", lambda t: (t.ordering == "tma_subset") & (t.step == 2)), "held_out_complete"),
    "a subset ordering's position skipped": defect(
        lambda f: edit(f, "orderings", lambda t: t.assign(position=t.position.where(
            (t.ordering != "tma_subset") | (t.position < 3), 5))), "positions_complete"),
    "a manifest of another table": defect(
        lambda f: write_parquet(pd.read_parquet(f / "orderings.parquet"), f / "orderings.parquet",
                                manifest={"kind": "zero_shot.tasks"}), "manifest_kind"),
}


def test_the_good_folder_passes_every_rule(folder):
    report = check_run_folder(folder)
    assert report.passed and not report.unchecked, report.explain()
    assert run_problems(folder, ["rt", "nft", "gradient", "tma_subset"]) == []


def test_with_generation_metrics_off_their_rules_are_skipped_and_empty_tables_pass(folder):
    _run_file(folder, generation_metrics=False)
    for table in ("generation_metrics", "generations"):
        edit(folder, table, lambda t: t.iloc[:0])
    edit(folder, "metric_stability", lambda t: t[t.metric == "loss"])  # what an off run's tables give
    report = check_run_folder(folder)
    assert report.passed, report.explain()
    assert set(report.unchecked) >= {"generation_complete", "scores_in_range", "reward_as_configured"}
    (folder / "generations.parquet").unlink()  # absent is as good as empty
    assert check_run_folder(folder).passed


@pytest.mark.parametrize("name", list(DEFECTS))
def test_every_planted_defect_fails_naming_its_rule(folder, name):
    assert_caught(check_run_folder, folder, name, DEFECTS[name])


def test_an_asked_ordering_that_never_ran_is_named(folder):
    assert any("fft" in line for line in run_problems(folder, ["rt", "fft"]))


@pytest.mark.slow
def test_a_real_tiny_run_passes_every_rule(tokenizer, single_thread, tmp_path):
    from tests.dynamics.zero_shot.test_run import config, run
    from tests.helpers.builders import make_model

    orderings = ("rt", "gradient", "tma_subset")
    run(make_model("llama-gqa", seed=3), tokenizer, config(orderings=orderings, max_new_tokens=4), tmp_path)
    report = check_run_folder(tmp_path, orderings)
    assert report.passed and not report.unchecked, report.explain()
