"""Metric stability across tasks: Kendall's W against its identity with mean pairwise Spearman, by hand on ties,
and the table on hand-made runs where loss ranks the orderings alike in every task and exact match cannot."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from lg_pipeline.dynamics.zero_shot.generation import GENERATION_COLUMNS
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, LOSS_COLUMNS
from lg_pipeline.dynamics.zero_shot.stability import STABILITY_COLUMNS, kendall_w, stability_table


@pytest.mark.parametrize("seed", range(4))
def test_kendall_w_is_the_mean_pairwise_spearman_rescaled_without_ties(seed):
    values = np.random.default_rng(seed).normal(size=(5, 7))
    m = len(values)
    rho = np.mean([spearmanr(values[a], values[b]).statistic for a, b in itertools.combinations(range(m), 2)])
    assert kendall_w(values) == pytest.approx(((m - 1) * rho + 1) / m, rel=1e-12)


def test_kendall_w_by_hand():
    assert kendall_w(np.array([[1, 2, 3], [10, 20, 30], [0.1, 0.2, 0.3]])) == pytest.approx(1.0)
    assert kendall_w(np.array([[1, 2, 3], [3, 2, 1]])) == pytest.approx(0.0)
    # ranks (1.5, 1.5, 3) and (1, 2, 3): S = 6.5; ties 2³ − 2 = 6; W = 12·6.5 / (4·24 − 2·6) = 78 / 84
    assert kendall_w(np.array([[1, 1, 2], [1, 2, 3]])) == pytest.approx(78 / 84)
    assert math.isnan(kendall_w(np.zeros((3, 4))))  # every task ties every ordering
    assert math.isnan(kendall_w(np.ones((1, 4)))) and math.isnan(kendall_w(np.ones((4, 1))))


TASKS, ORDERINGS, STEPS = ("a", "b", "c"), ("rt", "nft", "fft"), (0, 2, 4)


def hand_run() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loss falls fastest for nft, then rt, then fft, in every task; ROUGE-L ranks them differently per task;
    exact match stays 0."""
    losses, metrics = [], []
    for o, ordering in enumerate(ORDERINGS):
        for s in STEPS:
            for t, task in enumerate(TASKS):
                speed = {"nft": 0.3, "rt": 0.2, "fft": 0.1}[ordering]
                losses.append((ordering, s, task, 3.0 + t - speed * s, 2))
                rouge = 0.2 + 0.01 * s * ((o + t) % 3)
                metrics.append((ordering, s, task, rouge, rouge, 0.0, math.nan, 2))
            losses.append((ordering, s, ALL_TASKS, 4.0 - speed * s, 6))
            metrics.append((ordering, s, ALL_TASKS, 0.2, 0.2, 0.0, math.nan, 6))
    return (pd.DataFrame(losses, columns=list(LOSS_COLUMNS)),
            pd.DataFrame(metrics, columns=list(GENERATION_COLUMNS)))


def test_the_table_tells_a_stable_metric_from_unstable_ones():
    losses, metrics = hand_run()
    table = stability_table(losses, metrics)
    assert list(table.columns) == list(STABILITY_COLUMNS)
    assert set(table.metric) == {"loss", "rouge1", "rougeL", "exact_match"}  # no reward measured: no row
    row = table.set_index(["metric", "step"])
    assert math.isnan(row.loc[("loss", 0), "rank_agreement"])  # all orderings start alike
    assert row.loc[("loss", 4), "rank_agreement"] == pytest.approx(1.0)
    assert row.loc[("loss", 4), "improved_share"] == 1.0
    assert row.loc[("loss", 4), "change_cv"] == pytest.approx(0.0)  # each ordering gains alike in every task
    # ROUGE-L: task t ranks ordering o by (o + t) mod 3, a Latin square: no agreement at all
    assert row.loc[("rougeL", 4), "rank_agreement"] == pytest.approx(0.0)
    assert math.isnan(row.loc[("exact_match", 4), "rank_agreement"])  # always 0: it cannot rank
    assert row.loc[("exact_match", 4), "improved_share"] == 0.0
    assert (row.loc[("loss", 2), ["n_tasks", "n_orderings"]] == [3, 3]).all()


def test_without_generation_metrics_the_table_holds_the_loss_only():
    losses, _ = hand_run()
    assert set(stability_table(losses).metric) == {"loss"}
    assert set(stability_table(losses, pd.DataFrame(columns=list(GENERATION_COLUMNS))).metric) == {"loss"}
