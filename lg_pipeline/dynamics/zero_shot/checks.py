"""Completeness of a zero-shot run folder: every asked ordering finished, permutes the training items, and has a
finite held-out loss and a seen-distance row at every eval step for every test task."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, eval_steps

TABLES = ("tasks", "orderings", "zero_shot", "seen_distance")


def run_problems(out: str | Path, orderings: Sequence[str]) -> list[str]:
    """What is missing or wrong in `out` (empty: complete)."""
    import numpy as np
    import pandas as pd

    out = Path(out)
    missing = [t for t in TABLES if not (out / f"{t}.parquet").is_file()]
    if missing or not (out / "run.json").is_file():
        return [f"missing {', '.join([*missing, *(['run.json'] if not (out / 'run.json').is_file() else [])])}"]
    settings = json.loads((out / "run.json").read_text())
    tables = {t: pd.read_parquet(out / f"{t}.parquet") for t in TABLES}
    train_ids = sorted(tables["tasks"].query("split == 'train'").example_id)
    test_tasks = list(dict.fromkeys(tables["tasks"].query("split == 'test'").task))
    steps = eval_steps(math.ceil(len(train_ids) / settings["batch_size"]), settings["eval_every"])
    problems = []
    for ordering in orderings:
        order = tables["orderings"][tables["orderings"].ordering == ordering]
        if sorted(order.example_id) != train_ids:
            problems.append(f"{ordering}: the ordering is not a permutation of the training items")
        loss = tables["zero_shot"][tables["zero_shot"].ordering == ordering]
        want = {(s, t) for s in steps for t in [*test_tasks, ALL_TASKS]}
        if set(zip(loss.step, loss.task, strict=True)) != want:
            problems.append(f"{ordering}: held-out loss not at every eval step {steps} for every test task")
        if not np.isfinite(loss.loss.to_numpy(dtype=float)).all():
            problems.append(f"{ordering}: non-finite held-out loss")
        seen = tables["seen_distance"][tables["seen_distance"].ordering == ordering]
        if set(zip(seen.step, seen.test_task, strict=True)) != {(s, t) for s in steps for t in test_tasks}:
            problems.append(f"{ordering}: seen-data distance not at every eval step for every test task")
    return problems
