"""How stable each zero-shot metric is across the held-out tasks: the test of the paper's "loss is the stable
metric" on one run.

Per metric (held-out loss, ROUGE-1, ROUGE-L, exact match, reward where measured) and eval step, over the test
tasks (not `__all__`) and the orderings measured at that step:

- `rank_agreement`: Kendall's coefficient of concordance W of the orderings' ranking, each task a rater (ties get
  average ranks, W tie-corrected). 1: every task ranks the orderings alike; 0: no agreement; NaN where no ranking
  is possible (one ordering or task, or every task ties every ordering, as at step 0 where all start alike).
- `change_cv`: the coefficient of variation across tasks of each ordering's improvement since step 0 (std / |mean|,
  loss falling and the others rising count as improvement), the median over orderings; NaN where the mean is 0.
- `improved_share`: the share of (task, ordering) pairs that improved since step 0.

Kendall's W is written out here (scipy has no concordance coefficient; its `rankdata` ranks); the test checks it
against its identity with the mean pairwise Spearman correlation, W = ((m − 1)·ρ̄ + 1) / m.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS

if TYPE_CHECKING:
    import pandas as pd

METRICS = ("loss", "rouge1", "rougeL", "exact_match", "reward")
LOWER_IS_BETTER = ("loss",)
STABILITY_COLUMNS = ("metric", "step", "n_tasks", "n_orderings", "rank_agreement", "change_cv", "improved_share")


def kendall_w(values: np.ndarray) -> float:
    """W of a (raters × items) matrix: each row ranks the items (average ranks for ties)."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    m, n = values.shape
    if m < 2 or n < 2:
        return math.nan
    ranks = rankdata(values, axis=1)
    totals = ranks.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    ties = sum(float((c**3 - c).sum()) for c in (np.unique(row, return_counts=True)[1] for row in values))
    denominator = m * m * (n**3 - n) - m * ties
    return 12 * s / denominator if denominator > 0 else math.nan


def _long(losses: pd.DataFrame, metrics: pd.DataFrame | None) -> pd.DataFrame:
    """(metric, ordering, step, task, value) for every test task, each metric where it was measured."""
    import pandas as pd

    parts = [losses[["ordering", "step", "task", "loss"]].rename(columns={"loss": "value"}).assign(metric="loss")]
    if metrics is not None and len(metrics):
        for metric in METRICS[1:]:
            if metric in metrics and metrics[metric].notna().any():
                part = metrics[["ordering", "step", "task", metric]].rename(columns={metric: "value"})
                parts.append(part.assign(metric=metric))
    frame = pd.concat(parts, ignore_index=True)
    return frame[frame.task != ALL_TASKS]


def _improvement(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The frame with `gain`: the value's improvement since the same ordering's and task's step 0."""
    start = frame[frame.step == 0].set_index(["ordering", "task"]).value.rename("start")
    frame = frame.join(start, on=["ordering", "task"])
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return frame.assign(gain=sign * (frame.value - frame.start))


def _cv(gains: np.ndarray) -> float:
    mean = float(np.mean(gains))
    return float(np.std(gains)) / abs(mean) if mean != 0 and len(gains) > 1 else math.nan


def stability_table(losses: pd.DataFrame, metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per metric and eval step (the module docstring says what each column is)."""
    import pandas as pd

    rows = []
    long = _long(losses, metrics)
    for metric in [m for m in METRICS if m in set(long.metric)]:
        frame = _improvement(long[long.metric == metric], metric)
        for step, at in frame.groupby("step", sort=True):
            wide = at.pivot(index="task", columns="ordering", values="value").dropna(axis=1)
            gains = at.pivot(index="task", columns="ordering", values="gain")[wide.columns]
            cvs = [_cv(gains[o].to_numpy()) for o in wide.columns]
            finite = [c for c in cvs if math.isfinite(c)]
            rows.append({
                "metric": metric, "step": int(step), "n_tasks": len(wide), "n_orderings": wide.shape[1],
                "rank_agreement": kendall_w(wide.to_numpy()),
                "change_cv": float(np.median(finite)) if finite else math.nan,
                "improved_share": float((gains.to_numpy() > 0).mean()) if step else math.nan,
            })
    return pd.DataFrame(rows, columns=list(STABILITY_COLUMNS))
