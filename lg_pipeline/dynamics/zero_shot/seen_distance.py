"""How close the training data seen so far is to each held-out task, step by step.

With D = −cos(e_seen, e_test) over the training items seen by step s (the first s·batch_size of the ordering)
and one test task's items: `min`, `avg`, `max` are taken over all (seen, test) pairs, `centroid` is
−cos(mean seen embedding, mean test-task embedding). Nothing is seen at step 0: NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lg_pipeline.dynamics.zero_shot.orderings import distances

SEEN_COLUMNS = ("ordering", "step", "test_task", "min", "avg", "max", "centroid")


def seen_distance_rows(
    ordering: str,
    order: np.ndarray,
    steps: Sequence[int],
    batch_size: int,
    train_emb: np.ndarray,
    test_emb: np.ndarray,
    test_tasks: Sequence[str],
) -> list[dict]:
    """One row per (eval step, test task)."""
    train_emb = np.asarray(train_emb, dtype=np.float64)
    test_emb = np.asarray(test_emb, dtype=np.float64)
    groups = {t: [i for i, name in enumerate(test_tasks) if name == t] for t in dict.fromkeys(test_tasks)}
    rows = []
    for step in steps:
        seen = train_emb[np.asarray(order[: step * batch_size], dtype=int)]
        for task, idx in groups.items():
            row = {"ordering": ordering, "step": int(step), "test_task": task}
            if len(seen) == 0:
                rows.append({**row, "min": np.nan, "avg": np.nan, "max": np.nan, "centroid": np.nan})
                continue
            dist = distances(seen, test_emb[idx])
            centroid = distances(seen.mean(0, keepdims=True), test_emb[idx].mean(0, keepdims=True))[0, 0]
            rows.append({**row, "min": dist.min(), "avg": dist.mean(), "max": dist.max(), "centroid": centroid})
    return rows
