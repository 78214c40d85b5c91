"""Is a zero-shot run folder complete and consistent? Read from the folder alone (its tables and `run.json`).

- every asked ordering finished: it permutes the training items (positions 0..n−1, each once, tasks as in the task
  table; a subset ordering such as `tma_subset` takes some of them, each once) and has a held-out loss and a
  seen-data distance at every eval step of its own length for every test task (and `__all__`);
- generation metrics (when `run.json` says `generation_metrics` is on; off: both tables empty): a row beside every
  loss row, ROUGE-1, ROUGE-L and exact match in [0, 1] with ROUGE-L ≤ ROUGE-1 (a longest common subsequence is
  made of matched unigrams), exact match 0 or 1 per item, each task row the mean of its items, answers no longer
  than `max_new_tokens`, the same step-0 answers in every ordering, and a reward exactly where a reward model is
  configured;
- identities: `__all__` is the item-weighted mean of the task losses, `n_examples` counts the task's test items, and
  every ordering starts from the same weights, so its step-0 losses are the others';
- ranges: losses finite and ≥ 0, scores finite, seen distances NaN at step 0 (nothing seen) and finite in [−1, 1]
  after, min ≤ avg ≤ max; one row per key, integer steps and positions; the `gradient` ordering's alignments there.
Any malformed table is a failed rule naming the file, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lg_pipeline.dynamics.zero_shot.alignment import ALIGNMENT_COLUMNS
from lg_pipeline.dynamics.zero_shot.generation import GENERATION_COLUMNS, GENERATIONS_COLUMNS
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, LOSS_COLUMNS, eval_steps
from lg_pipeline.dynamics.zero_shot.orderings import SUBSET_ORDERINGS
from lg_pipeline.dynamics.zero_shot.run import ORDERING_COLUMNS
from lg_pipeline.dynamics.zero_shot.seen_distance import SEEN_COLUMNS
from lg_pipeline.dynamics.zero_shot.stability import STABILITY_COLUMNS, stability_table
from lg_pipeline.dynamics.zero_shot.tasks import TEST, TRAIN
from lg_pipeline.expectations import TABLE_MEANINGS, RuleReport, Rules, TableSpec, read_run_tables

if TYPE_CHECKING:
    import pandas as pd

LOSSES = "zero_shot"  # the held-out loss table (what a check's verdict is about)
TABLES = ("tasks", "orderings", LOSSES, "seen_distance")
ALIGNMENT = "alignment"  # written by the `gradient` ordering only
METRICS, ANSWERS = "generation_metrics", "generations"  # written (with rows) when generation metrics are on
STABILITY = "metric_stability"  # written by every run that knows generation metrics (on or off)
RUN_FILE = "run.json"  # the run's settings (lg_pipeline.dynamics.zero_shot.run writes it)
TASK_COLUMNS = ("example_id", "task", "split", "instruction", "response")  # tasks.split_frame's
SPECS: dict[str, TableSpec] = {
    "tasks": TableSpec(TASK_COLUMNS, ("example_id",)),
    "orderings": TableSpec(ORDERING_COLUMNS, ("ordering", "position"), ("position", "score"), ("position",),
                           ("score",)),
    LOSSES: TableSpec(LOSS_COLUMNS, ("ordering", "step", "task"), ("step", "loss", "n_examples"),
                      ("step", "n_examples"), ("loss",)),
    "seen_distance": TableSpec(SEEN_COLUMNS, ("ordering", "step", "test_task"),
                               ("step", "min", "avg", "max", "centroid"), ("step",)),
    ALIGNMENT: TableSpec(ALIGNMENT_COLUMNS, ("example_id", "parameter"), ("layer", "alignment"), ("layer",),
                         ("alignment",)),
    METRICS: TableSpec(GENERATION_COLUMNS, ("ordering", "step", "task"),
                       ("step", "rouge1", "rougeL", "exact_match", "reward", "n_examples"), ("step", "n_examples"),
                       ("rouge1", "rougeL", "exact_match")),
    ANSWERS: TableSpec(GENERATIONS_COLUMNS, ("ordering", "step", "example_id"),
                       ("step", "n_new_tokens", "rouge1", "rougeL", "exact_match", "reward"), ("step", "n_new_tokens"),
                       ("rouge1", "rougeL", "exact_match")),
    STABILITY: TableSpec(STABILITY_COLUMNS, ("metric", "step"),
                         ("step", "n_tasks", "n_orderings", "rank_agreement", "change_cv", "improved_share"),
                         ("step", "n_tasks", "n_orderings")),
}
SCORES = ("rouge1", "rougeL", "exact_match")
DISTANCES = ("min", "avg", "max", "centroid")
REL = 1e-6  # float rounding of a mean; a planted change is orders larger

MEANINGS: dict[str, str] = {
    **TABLE_MEANINGS,
    "run_file": f"the run's settings ({RUN_FILE}: eval_every, batch_size, tasks)",
    "tables": "every table of the run",
    "task_splits": f"every item is in split {TRAIN} or {TEST}",
    "tasks_as_settings": f"the task table holds the items of {RUN_FILE}",
    "orderings_finished": "every asked ordering has its rows in every table",
    "positions_unique": "one item per position of an ordering",
    "positions_complete": "positions 0..n−1 of the n training items",
    "ordering_is_permutation": "every ordering is a permutation of the training items",
    "ordering_tasks_match": "each ordered item's task as in the task table",
    "loss_nonnegative": "held-out losses ≥ 0",
    "held_out_complete": "a held-out loss at every eval step for every test task and __all__",
    "n_examples_match": "n_examples counts the task's test items",
    "all_is_task_mean": "the __all__ loss is the mean over the test items of every task",
    "step0_equal": "every ordering has the same step-0 losses (the same starting weights)",
    "seen_complete": "a seen-data distance at every eval step for every test task",
    "seen_finite": "seen distances NaN at step 0 (nothing seen) and finite after",
    "seen_in_range": "seen distances in [−1, 1] (−cosine)",
    "seen_order": "min ≤ avg ≤ max",
    "alignment_complete": "the gradient ordering's alignment of every training item and matrix",
    "ordering_is_subset": "a subset ordering holds training items, each once",
    "generation_off_empty": "no generation rows when generation metrics are off",
    "generation_complete": "generation metrics beside every held-out loss row (ordering, step, task)",
    "answers_complete": "an answer of every test item at every eval step",
    "scores_in_range": "ROUGE-1, ROUGE-L and exact match in [0, 1]",
    "rougeL_le_rouge1": "ROUGE-L ≤ ROUGE-1 (a common subsequence is made of matched unigrams)",
    "exact_match_binary": "an item's exact match is 0 or 1",
    "scores_are_item_means": "each task row is the mean of its items' scores, n_examples their count",
    "answer_length": f"no answer longer than max_new_tokens ({RUN_FILE})",
    "step0_answers_equal": "every ordering gives the same step-0 answers (the same starting weights)",
    "reward_as_configured": f"a finite reward where {RUN_FILE} names a reward model, NaN where it names none",
    "stability_as_computed": "the metric-stability table is what the loss and generation tables give",
}
GENERATION_RULES = ("generation_complete", "answers_complete", "scores_in_range", "rougeL_le_rouge1",
                    "exact_match_binary", "scores_are_item_means", "answer_length", "step0_answers_equal",
                    "reward_as_configured")


def check_run_folder(out: str | Path, orderings: Sequence[str] | None = None) -> RuleReport:
    """Every rule over the folder; `orderings`: those that must be finished (default: every one it holds)."""
    out = Path(out)
    rules = Rules(MEANINGS)
    settings = _settings(out / RUN_FILE, rules)
    generating = _generating(settings)
    names = [*TABLES, *([ALIGNMENT] if "gradient" in (orderings or ()) else []),
             *([STABILITY] if "generation_metrics" in (settings or {}) else []),
             *([METRICS, ANSWERS] if generating else [])]
    missing = [t for t in names if not (out / f"{t}.parquet").is_file()]
    if not rules.check("tables", not missing, f"missing {', '.join(missing)}") or settings is None:
        return rules.report()
    tables = _read_tables(out, names, rules)
    if tables is None:
        return rules.report()
    try:
        asked = list(orderings) if orderings is not None else sorted(set(tables["orderings"].ordering))
        if "gradient" in set(tables["orderings"].ordering) and ALIGNMENT not in tables:
            there = (out / _where(ALIGNMENT)).is_file()
            more = _read_tables(out, [ALIGNMENT], rules) if rules.check(
                "tables", there, f"missing {ALIGNMENT} (the gradient ordering's)") else None
            tables.update(more or {})
        _task_rules(tables["tasks"], settings, rules)
        _ordering_rules(tables, asked, rules)
        steps = _eval_steps(tables["tasks"], tables["orderings"], asked, settings, rules)
        if steps is not None:
            _loss_rules(tables, asked, steps, rules)
            _seen_rules(tables["seen_distance"], tables["tasks"], asked, steps, rules)
        if generating:
            _generation_rules(tables, settings, rules)
        else:
            _generation_off(out, settings, rules)
        if STABILITY in tables:
            _stability_rule(tables, rules)
        else:
            rules.skip("stability_as_computed", f"{RUN_FILE} predates the metric-stability table")
        if ALIGNMENT in tables:
            _alignment_rules(tables[ALIGNMENT], tables["tasks"], rules)
    except Exception as exc:  # malformed beyond what the rules foresaw: a failed check, never a traceback
        rules.broke(exc)
    return rules.report()


def run_problems(out: str | Path, orderings: Sequence[str]) -> list[str]:
    """What is missing or wrong in `out` (empty: complete)."""
    return check_run_folder(out, orderings).details()


# ------------------------------------------------------------------------------------------------ reading
def _settings(path: Path, rules: Rules) -> dict[str, Any] | None:
    if not path.is_file():
        rules.fail("run_file", f"missing {RUN_FILE}", where=RUN_FILE)
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        value = None
    whole = isinstance(value, dict) and all(_positive(value.get(k)) for k in ("eval_every", "batch_size"))
    return value if rules.check("run_file", whole, f"{RUN_FILE} has no eval_every and batch_size",
                                where=RUN_FILE) else None


def _generating(settings: dict[str, Any] | None) -> bool:
    """Whether the run measured generation metrics (runs from before they existed did not)."""
    return bool((settings or {}).get("generation_metrics", False))


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _kind(path: Path) -> str | None:
    from lg_pipeline.io.manifest import read_manifest

    return (read_manifest(path) or {}).get("kind")


def _read_tables(out: Path, names: list[str], rules: Rules) -> dict[str, pd.DataFrame] | None:
    return read_run_tables(out, SPECS, names, rules, _kind, "zero_shot")


def _where(table: str) -> str:
    return f"{table}.parquet"


# ------------------------------------------------------------------------------------------------ rules
def _task_rules(tasks: pd.DataFrame, settings: dict[str, Any], rules: Rules) -> None:
    odd = ~tasks.split.isin([TRAIN, TEST])
    rules.check("task_splits", ~odd, f"tasks: {int(odd.sum())} items in another split", where=_where("tasks"))
    recorded = settings.get("tasks")
    if isinstance(recorded, dict) and {"example_id", "split"} <= set(recorded):
        same = sorted(zip(map(str, recorded["example_id"]), map(str, recorded["split"]), strict=False)) == sorted(
            zip(tasks.example_id.astype(str), tasks.split.astype(str), strict=True)
        )
        rules.check("tasks_as_settings", same, f"tasks: not the {len(recorded['example_id'])} items of {RUN_FILE}",
                    where=_where("tasks"))


def _train(tasks: pd.DataFrame) -> pd.DataFrame:
    return tasks[tasks.split == TRAIN]


def _test_tasks(tasks: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(tasks[tasks.split == TEST].task))


def _ordering_rules(tables: dict[str, pd.DataFrame], asked: list[str], rules: Rules) -> None:
    orders, train = tables["orderings"], _train(tables["tasks"])
    in_tables = {t: set(tables[t].ordering) for t in ("orderings", "zero_shot", "seen_distance")}
    unfinished = sorted({o for o in asked if any(o not in s for s in in_tables.values())})
    unfinished += sorted((in_tables["zero_shot"] | in_tables["seen_distance"]) - in_tables["orderings"] - set(asked))
    rules.check("orderings_finished", not unfinished, f"ordering(s) {', '.join(unfinished)} missing from a table")
    task_of = dict(zip(train.example_id, train.task, strict=True))
    ids, n = sorted(train.example_id), len(train)
    where = _where("orderings")
    for name, order in orders.groupby("ordering", sort=True):
        repeated = order.position.duplicated(keep=False)
        rules.check("positions_unique", ~repeated, f"{name}: {int(repeated.sum())} rows share a position", where=where)
        positions = sorted(order.position.dropna().astype(int))
        size = len(order) if name in SUBSET_ORDERINGS else n
        rules.check("positions_complete", positions == list(range(size)),
                    f"{name}: positions are not 0..{size - 1} for its {size} training items", where=where)
        if name in SUBSET_ORDERINGS:
            subset = order.example_id.is_unique and set(order.example_id) <= set(ids) and len(order) > 0
            rules.check("ordering_is_subset", subset, f"{name}: not distinct training items", where=where)
        else:
            rules.check("ordering_is_permutation", sorted(order.example_id) == ids,
                        f"{name}: the ordering is not a permutation of the training items", where=where)
        wrong = order.example_id.map(task_of).ne(order.task)
        rules.check("ordering_tasks_match", ~wrong, f"{name}: {int(wrong.sum())} items with another task", where=where)


def _eval_steps(tasks: pd.DataFrame, orders: pd.DataFrame, asked: list[str], settings: dict[str, Any],
                rules: Rules) -> dict[str, list[int]] | None:
    """Each asked ordering's eval steps: one epoch over its items (a subset ordering trains fewer)."""
    n = len(_train(tasks))
    if n == 0:
        rules.fail("ordering_is_permutation", "tasks: no training items", where=_where("tasks"))
        return None
    sizes = orders.groupby("ordering").size().to_dict()
    length = {o: max(1, sizes.get(o, 0)) if o in SUBSET_ORDERINGS else n for o in {*asked, *sizes}}
    train = _train_settings(settings)
    return {o: eval_steps(train.total_steps(k), settings["eval_every"]) for o, k in length.items()}


def _train_settings(settings: dict[str, Any]) -> Any:
    """The run's training settings from its settings file (the run's length comes from their one rule); a file
    that names no length is one epoch, a zero-shot run's default."""
    from dataclasses import fields

    from lg_pipeline.dynamics.training import TrainSettings

    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{"steps": None, "epochs": 1.0, **{k: v for k, v in settings.items() if k in names}})


def _loss_rules(tables: dict[str, pd.DataFrame], asked: list[str], steps: dict[str, list[int]], rules: Rules) -> None:
    import numpy as np

    losses, tasks = tables["zero_shot"], tables["tasks"]
    test = tasks[tasks.split == TEST]
    counts = {**test.groupby("task").size().to_dict(), ALL_TASKS: len(test)}
    where = _where("zero_shot")
    negative = losses.loss < 0
    rules.check("loss_nonnegative", ~negative, f"zero_shot: {int(negative.sum())} negative losses", where=where)
    for ordering in asked:
        want = {(s, t) for s in steps[ordering] for t in [*_test_tasks(tasks), ALL_TASKS]}
        loss = losses[losses.ordering == ordering]
        rules.check("held_out_complete", set(zip(loss.step, loss.task, strict=True)) == want,
                    f"{ordering}: held-out loss not at every eval step {steps[ordering]} for every test task",
                    where=where)
    wrong = losses.n_examples.ne(losses.task.map(counts))
    rules.check("n_examples_match", ~wrong, f"zero_shot: {int(wrong.sum())} rows count other items", where=where)
    tasks_only = losses[losses.task != ALL_TASKS].assign(weighted=lambda f: f.loss * f.n_examples)
    sums = tasks_only.groupby(["ordering", "step"])[["weighted", "n_examples"]].sum()
    mean = (sums.weighted / sums.n_examples).rename("mean")
    overall = losses[losses.task == ALL_TASKS].join(mean, on=["ordering", "step"])
    off = ~(np.abs(overall.loss - overall["mean"]) <= REL * np.abs(overall["mean"]) + 1e-12)
    rules.check("all_is_task_mean", ~off.to_numpy(), f"zero_shot: {int(off.sum())} __all__ losses are not the mean "
                                                     "of the task losses", where=where)
    start = losses[losses.step == 0].groupby("task").loss
    spread = (start.max() - start.min()) > REL * start.max().abs()
    rules.check("step0_equal", ~spread.to_numpy(), f"zero_shot: step-0 losses differ between orderings for "
                                                   f"{int(spread.sum())} tasks ({', '.join(spread[spread].index)})",
                where=where)


def _seen_rules(seen: pd.DataFrame, tasks: pd.DataFrame, asked: list[str], steps: dict[str, list[int]],
                rules: Rules) -> None:
    import numpy as np

    where = _where("seen_distance")
    for ordering in asked:
        want = {(s, t) for s in steps[ordering] for t in _test_tasks(tasks)}
        rows = seen[seen.ordering == ordering]
        rules.check("seen_complete", set(zip(rows.step, rows.test_task, strict=True)) == want,
                    f"{ordering}: seen-data distance not at every eval step for every test task", where=where)
    values = seen[list(DISTANCES)].to_numpy(dtype=float)
    at_start = (seen.step == 0).to_numpy()
    ok = np.where(at_start[:, None], np.isnan(values), np.isfinite(values)).all(axis=1)
    rules.check("seen_finite", ok, f"seen_distance: {int((~ok).sum())} rows not NaN at step 0 or not finite after",
                where=where)
    later = values[~at_start]
    inside = ((later >= -1 - REL) & (later <= 1 + REL)) | np.isnan(later)
    rules.check("seen_in_range", inside.all(axis=1), f"seen_distance: {int((~inside.all(axis=1)).sum())} rows "
                                                     "outside [−1, 1]", where=where)
    ordered = ~((seen["min"] > seen["avg"] + REL) | (seen["avg"] > seen["max"] + REL))
    rules.check("seen_order", ordered, f"seen_distance: {int((~ordered).sum())} rows with min > avg or avg > max",
                where=where)


def _alignment_rules(alignment: pd.DataFrame, tasks: pd.DataFrame, rules: Rules) -> None:
    train = set(_train(tasks).example_id)
    matrices = set(alignment.parameter)
    per_item = alignment.groupby("example_id").parameter.nunique()
    complete = set(per_item.index) == train and bool((per_item == len(matrices)).all())
    rules.check("alignment_complete", complete, f"alignment: not {len(matrices)} matrices for each of the "
                                                f"{len(train)} training items", where=_where(ALIGNMENT))


def _generation_off(out: Path, settings: dict[str, Any], rules: Rules) -> None:
    """Generation metrics off (or a run from before them): their tables, where present, hold no row."""
    from lg_pipeline.expectations import read_table

    why = "generation metrics are off" if "generation_metrics" in settings else f"{RUN_FILE} predates them"
    rows = 0
    for name in (METRICS, ANSWERS):
        if (out / _where(name)).is_file():
            frame = read_table(out / _where(name), rules)
            rows += 0 if frame is None else len(frame)
    rules.check("generation_off_empty", rows == 0, f"{METRICS}: {rows} rows although {why}", where=_where(METRICS))
    for rule in GENERATION_RULES:
        rules.skip(rule, why)


def _generation_rules(tables: dict[str, pd.DataFrame], settings: dict[str, Any], rules: Rules) -> None:
    import numpy as np

    metrics, answers, losses, tasks = tables[METRICS], tables[ANSWERS], tables[LOSSES], tables["tasks"]
    where, item_where = _where(METRICS), _where(ANSWERS)
    keys = ["ordering", "step", "task"]
    beside = set(map(tuple, metrics[keys].to_numpy())) == set(map(tuple, losses[keys].to_numpy()))
    rules.check("generation_complete", beside, f"{METRICS}: not one row per held-out loss row", where=where)
    test = tasks[tasks.split == TEST]
    want = {(o, s, e) for o, s in set(zip(losses.ordering, losses.step, strict=True)) for e in test.example_id}
    have = set(zip(answers.ordering, answers.step, answers.example_id, strict=True))
    rules.check("answers_complete", have == want, f"{ANSWERS}: {len(want - have)} answers missing, "
                                                  f"{len(have - want)} of no eval step or test item", where=item_where)
    for frame, place in ((metrics, where), (answers, item_where)):
        values = frame[list(SCORES)].to_numpy(dtype=float)
        inside = ((values >= 0) & (values <= 1)).all(axis=1)
        rules.check("scores_in_range", inside, f"{place.removesuffix('.parquet')}: {int((~inside).sum())} rows "
                                               "with a score outside [0, 1]", where=place)
        ordered = (frame.rougeL <= frame.rouge1 + REL).to_numpy()
        rules.check("rougeL_le_rouge1", ordered, f"{place.removesuffix('.parquet')}: {int((~ordered).sum())} rows "
                                                 "with ROUGE-L > ROUGE-1", where=place)
    binary = answers.exact_match.isin([0.0, 1.0])
    rules.check("exact_match_binary", binary, f"{ANSWERS}: {int((~binary).sum())} exact matches not 0 or 1",
                where=item_where)
    _mean_rules(metrics, answers, rules)
    limit = settings.get("max_new_tokens")
    longer = answers.n_new_tokens > limit if isinstance(limit, int) else answers.n_new_tokens < 0
    rules.check("answer_length", ~longer, f"{ANSWERS}: {int(longer.sum())} answers longer than {limit} tokens",
                where=item_where)
    start = answers[answers.step == 0].groupby("example_id").generation.nunique()
    rules.check("step0_answers_equal", (start <= 1).to_numpy(), f"{ANSWERS}: step-0 answers differ between "
                                                                f"orderings for {int((start > 1).sum())} items",
                where=item_where)
    configured = bool(settings.get("reward_model"))
    for frame, place in ((metrics, where), (answers, item_where)):
        reward = frame.reward.to_numpy(dtype=float)
        ok = np.isfinite(reward) if configured else np.isnan(reward)
        rules.check("reward_as_configured", ok, f"{place.removesuffix('.parquet')}: {int((~ok).sum())} rewards "
                                                f"{'not finite' if configured else 'without a reward model'}",
                    where=place)


def _mean_rules(metrics: pd.DataFrame, answers: pd.DataFrame, rules: Rules) -> None:
    """Each (ordering, step, task) row against its items' mean, `__all__` against every item's."""
    import numpy as np
    import pandas as pd

    items = pd.concat([answers, answers.assign(task=ALL_TASKS)], ignore_index=True)
    cols = [*SCORES, "reward"]
    keys = ["ordering", "step", "task"]
    means = items.groupby(keys)[cols].mean().add_suffix("_items")
    counts = items.groupby(keys).size().rename("count")
    joined = metrics.join(means, on=keys).join(counts, on=keys)
    off = np.zeros(len(joined), dtype=bool)
    for c in cols:
        a, b = joined[c].to_numpy(dtype=float), joined[f"{c}_items"].to_numpy(dtype=float)
        same = np.isclose(a, b, rtol=REL, atol=1e-12) | (np.isnan(a) & np.isnan(b))
        off |= ~same
    off |= joined["count"].to_numpy(dtype=float) != joined.n_examples.to_numpy(dtype=float)
    rules.check("scores_are_item_means", ~off, f"{METRICS}: {int(off.sum())} rows are not the mean of their items",
                where=_where(METRICS))



def _stability_rule(tables: dict[str, pd.DataFrame], rules: Rules) -> None:
    import numpy as np

    want = stability_table(tables[LOSSES], tables.get(METRICS)).set_index(["metric", "step"])
    have = tables[STABILITY].set_index(["metric", "step"])
    same = set(want.index) == set(have.index)
    if same and len(want):
        a = have.loc[want.index, list(want.columns)].to_numpy(dtype=float)
        same = bool(np.isclose(a, want.to_numpy(dtype=float), rtol=1e-9, atol=1e-12, equal_nan=True).all())
    rules.check("stability_as_computed", same, f"{STABILITY}: not what the loss and generation tables give",
                where=_where(STABILITY))
