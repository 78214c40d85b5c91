"""Is a zero-shot run folder complete and consistent? Read from the folder alone (its tables and `run.json`).

- every asked ordering finished: it permutes the training items (positions 0..n−1, each once, tasks as in the task
  table) and has a held-out loss and a seen-data distance at every eval step for every test task (and `__all__`);
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
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, LOSS_COLUMNS, eval_steps
from lg_pipeline.dynamics.zero_shot.run import ORDERING_COLUMNS
from lg_pipeline.dynamics.zero_shot.seen_distance import SEEN_COLUMNS
from lg_pipeline.dynamics.zero_shot.tasks import TEST, TRAIN
from lg_pipeline.expectations import TABLE_MEANINGS, RuleReport, Rules, TableSpec, read_run_tables

if TYPE_CHECKING:
    import pandas as pd

LOSSES = "zero_shot"  # the held-out loss table (what a check's verdict is about)
TABLES = ("tasks", "orderings", LOSSES, "seen_distance")
ALIGNMENT = "alignment"  # written by the `gradient` ordering only
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
}
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
}


def check_run_folder(out: str | Path, orderings: Sequence[str] | None = None) -> RuleReport:
    """Every rule over the folder; `orderings`: those that must be finished (default: every one it holds)."""
    out = Path(out)
    rules = Rules(MEANINGS)
    settings = _settings(out / RUN_FILE, rules)
    names = [*TABLES, *([ALIGNMENT] if "gradient" in (orderings or ()) else [])]
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
        steps = _eval_steps(tables["tasks"], settings, rules)
        if steps is not None:
            _loss_rules(tables, asked, steps, rules)
            _seen_rules(tables["seen_distance"], tables["tasks"], asked, steps, rules)
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
        rules.check("positions_complete", positions == list(range(n)),
                    f"{name}: positions are not 0..{n - 1} for the {n} training items", where=where)
        rules.check("ordering_is_permutation", sorted(order.example_id) == ids,
                    f"{name}: the ordering is not a permutation of the training items", where=where)
        wrong = order.example_id.map(task_of).ne(order.task)
        rules.check("ordering_tasks_match", ~wrong, f"{name}: {int(wrong.sum())} items with another task", where=where)


def _eval_steps(tasks: pd.DataFrame, settings: dict[str, Any], rules: Rules) -> list[int] | None:
    n = len(_train(tasks))
    if n == 0:
        rules.fail("ordering_is_permutation", "tasks: no training items", where=_where("tasks"))
        return None
    return eval_steps(_train_settings(settings).total_steps(n), settings["eval_every"])


def _train_settings(settings: dict[str, Any]) -> Any:
    """The run's training settings from its settings file (the run's length comes from their one rule); a file
    that names no length is one epoch, a zero-shot run's default."""
    from dataclasses import fields

    from lg_pipeline.dynamics.training import TrainSettings

    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{"steps": None, "epochs": 1.0, **{k: v for k, v in settings.items() if k in names}})


def _loss_rules(tables: dict[str, pd.DataFrame], asked: list[str], steps: list[int], rules: Rules) -> None:
    import numpy as np

    losses, tasks = tables["zero_shot"], tables["tasks"]
    test = tasks[tasks.split == TEST]
    counts = {**test.groupby("task").size().to_dict(), ALL_TASKS: len(test)}
    where = _where("zero_shot")
    negative = losses.loss < 0
    rules.check("loss_nonnegative", ~negative, f"zero_shot: {int(negative.sum())} negative losses", where=where)
    want = {(s, t) for s in steps for t in [*_test_tasks(tasks), ALL_TASKS]}
    for ordering in asked:
        loss = losses[losses.ordering == ordering]
        rules.check("held_out_complete", set(zip(loss.step, loss.task, strict=True)) == want,
                    f"{ordering}: held-out loss not at every eval step {steps} for every test task", where=where)
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


def _seen_rules(seen: pd.DataFrame, tasks: pd.DataFrame, asked: list[str], steps: list[int], rules: Rules) -> None:
    import numpy as np

    where = _where("seen_distance")
    want = {(s, t) for s in steps for t in _test_tasks(tasks)}
    for ordering in asked:
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
