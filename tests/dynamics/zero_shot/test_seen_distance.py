"""Seen-data distance against a direct re-statement: min / avg / max over pairs, centroid of the means."""

from __future__ import annotations

import math

import numpy as np

from lg_pipeline.dynamics.zero_shot.seen_distance import seen_distance_rows

TRAIN = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
TEST = np.array([[1.0, 0.1], [0.2, 1.0], [0.5, -0.8]])
TEST_TASKS = ["x", "x", "y"]


def neg_cos(u, v) -> float:
    return -sum(a * b for a, b in zip(u, v, strict=True)) / math.hypot(*u) / math.hypot(*v)


def test_rows_follow_the_items_seen_by_each_step():
    order = np.array([2, 0, 3, 1])
    rows = seen_distance_rows("nft", order, [0, 1, 2], 2, TRAIN, TEST, TEST_TASKS)
    assert [(r["step"], r["test_task"]) for r in rows] == [(0, "x"), (0, "y"), (1, "x"), (1, "y"), (2, "x"), (2, "y")]
    assert all(math.isnan(rows[k][m]) for k in (0, 1) for m in ("min", "avg", "max", "centroid"))
    for row in rows[2:]:
        seen = [TRAIN[i] for i in order[: row["step"] * 2]]
        test = [TEST[j] for j, t in enumerate(TEST_TASKS) if t == row["test_task"]]
        pairs = [neg_cos(u, v) for u in seen for v in test]
        assert math.isclose(row["min"], min(pairs)) and math.isclose(row["max"], max(pairs))
        assert math.isclose(row["avg"], sum(pairs) / len(pairs))
        mean_seen = [sum(c) / len(seen) for c in zip(*seen, strict=True)]
        mean_test = [sum(c) / len(test) for c in zip(*test, strict=True)]
        assert math.isclose(row["centroid"], neg_cos(mean_seen, mean_test))
    assert rows[2]["min"] != rows[4]["min"] or rows[2]["max"] != rows[4]["max"]
