"""Layer curves, thirds, MAD and relative difference on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lg_pipeline.analysis.curves import (
    CURVE_COLUMNS,
    compare_curves,
    curve_summary,
    layer_curves,
    mad,
    mad_summary,
    relative_difference,
    third_bounds,
    thirds,
)

VARIANT = {"model": "m", "dataset": "d", "level": "none", "correctness": "correct"}


def row(example: str, layer: int, module: str = "q_proj", **values: float) -> dict:
    base = {"example_id": example, "layer": layer, "module": module, "parameter": f"model.layers.{layer}.{module}"}
    stats = {"loss": 2.0, "nuclear_norm": 1.0, "sigma_max": 0.5, "frobenius_norm": 0.8}
    return {**VARIANT, **base, **stats, **values}


# --------------------------------------------------------------------------- thirds


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(26, (7, 13, 6)), (28, (7, 14, 7)), (32, (10, 10, 12)), (42, (12, 18, 12))],
)
def test_thirds_match_the_study_splits(n, sizes):
    split = thirds(n)
    assert tuple(len(split[t]) for t in ("early", "middle", "late")) == sizes
    assert split["early"][0] == 0 and split["late"][-1] == n - 1


def test_study_split_boundaries_exactly():
    assert third_bounds(26) == (7, 20)
    assert third_bounds(28) == (7, 21)
    assert third_bounds(32) == (10, 20)
    assert third_bounds(42) == (12, 30)


@pytest.mark.parametrize(
    ("n", "sizes"), [(18, (6, 6, 6)), (30, (10, 10, 10)), (7, (2, 2, 3)), (19, (6, 6, 7)), (3, (1, 1, 1))]
)
def test_thirds_generic_rule(n, sizes):
    split = thirds(n)
    assert tuple(len(split[t]) for t in ("early", "middle", "late")) == sizes


@pytest.mark.parametrize("n", range(3, 80))
def test_thirds_partition_every_depth(n):
    split = thirds(n)
    assert split["early"] + split["middle"] + split["late"] == list(range(n))
    assert all(split[t] for t in split)


def test_thirds_rejects_too_shallow():
    with pytest.raises(ValueError, match="at least 3"):
        thirds(2)


# --------------------------------------------------------------------------- MAD


def test_mad_hand_computed():
    assert mad([1.0, 3.0, 2.0, 6.0]) == pytest.approx((2 + 1 + 4) / 3)
    assert math.isnan(mad([5.0]))
    assert math.isnan(mad([1.0, float("nan"), 2.0]))


@pytest.mark.parametrize("n", [18, 26, 28, 30, 32, 42, 7, 19])
def test_curve_summary_uses_within_third_differences(n):
    curve = np.arange(n, dtype=float) ** 2  # differences 1, 3, 5, ... so every slice has its own MAD
    a, b = third_bounds(n)
    got = curve_summary(curve)
    assert got["mad_all"] == pytest.approx(np.mean(np.diff(curve)))
    assert got["mad_early"] == pytest.approx(np.mean(np.diff(curve[:a])) if a > 1 else float("nan"), nan_ok=True)
    assert got["mad_middle"] == pytest.approx(np.mean(np.diff(curve[a:b])))
    assert got["mad_late"] == pytest.approx(np.mean(np.diff(curve[b:])))
    assert got["mean_late"] == pytest.approx(curve[b:].mean())


def test_study_28_layer_mad_on_a_known_curve():
    curve = [0.0] * 7 + [float(i % 2) for i in range(14)] + [5.0] * 7  # flat, zig-zag, flat
    got = curve_summary(curve)
    assert got["mad_early"] == 0.0
    assert got["mad_middle"] == 1.0
    assert got["mad_late"] == 0.0
    assert got["mad_all"] == pytest.approx((13 + 4) / 27)  # 13 zig-zag steps and the 1 -> 5 jump


# --------------------------------------------------------------------------- relative difference


def test_relative_difference_hand_computed():
    rd = relative_difference([2.0, 4.0, 5.0, 10.0], [1.0, 5.0, 5.0, 13.0])
    np.testing.assert_allclose(rd.per_layer, [0.5, 0.25, 0.0, 0.3])
    assert rd.mean == pytest.approx(0.2625)
    assert rd.top_layers == [0, 3, 1, 2]


def test_relative_difference_zero_reference_uses_study_epsilon():
    rd = relative_difference([0.0, 1.0], [2e-10, 1.0])
    assert rd.per_layer[0] == pytest.approx(1.0)  # |1e-10 - 2e-10| / 1e-10


def test_relative_difference_does_not_modify_input_and_checks_length():
    a = np.array([0.0, 1.0])
    relative_difference(a, [1.0, 1.0])
    assert a[0] == 0.0
    with pytest.raises(ValueError, match="length"):
        relative_difference([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- curves


def test_layer_curves_mean_and_t_interval_for_a_signed_statistic():
    stats = pd.DataFrame([row(f"e{i}", 0, grad_mean=v) for i, v in enumerate([1.0, 2.0, 3.0])])
    out = layer_curves(stats, statistics=["grad_mean"])
    assert list(out.columns) == list(CURVE_COLUMNS)
    (r,) = out.itertuples()
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (r.mean, r.n, r.n_dropped) == (2.0, 3, 0)
    assert r.ci_low == pytest.approx(2.0 - half)
    assert r.ci_high == pytest.approx(2.0 + half)


def test_a_norm_gets_the_log_space_interval_hand_computed():
    stats = pd.DataFrame([row(f"e{i}", 0, nuclear_norm=v) for i, v in enumerate([1.0, 2.0, 3.0])])
    (r,) = layer_curves(stats, statistics=["nuclear_norm"]).itertuples()
    logs = np.log([1.0, 2.0, 3.0])
    s2 = logs.var(ddof=1)
    centre, se = logs.mean() + s2 / 2, math.sqrt(s2 / 3 + s2**2 / (2 * 2))  # modified Cox, n = 3
    assert r.mean == 2.0
    assert r.ci_low == pytest.approx(math.exp(centre - 4.302652729911275 * se))
    assert r.ci_high == pytest.approx(math.exp(centre + 4.302652729911275 * se))


def test_a_norm_interval_never_crosses_zero_where_the_t_interval_does():
    values = [0.01, 0.02, 5.0, 0.03]  # n = 4, one large value: mean - t*sd/sqrt(n) < 0
    stats = pd.DataFrame([row(f"e{i}", 0, nuclear_norm=v, grad_mean=v) for i, v in enumerate(values)])
    out = layer_curves(stats, statistics=["nuclear_norm", "grad_mean"]).set_index("statistic")
    assert out.loc["grad_mean", "ci_low"] < 0  # the plain t interval would cross 0 here
    assert 0 < out.loc["nuclear_norm", "ci_low"] < out.loc["nuclear_norm", "ci_high"]


def test_a_norm_with_a_zero_value_falls_back_to_t_clipped_at_zero():
    stats = pd.DataFrame([row(f"e{i}", 0, nuclear_norm=v) for i, v in enumerate([0.0, 0.0, 9.0])])
    (r,) = layer_curves(stats, statistics=["nuclear_norm"]).itertuples()
    assert r.ci_low == 0.0
    assert r.ci_high == pytest.approx(3.0 + 4.302652729911275 * math.sqrt(27) / math.sqrt(3))


def test_layer_curves_drops_and_counts_non_finite():
    values = [1.0, 3.0, float("nan"), float("inf"), -float("inf")]
    stats = pd.DataFrame([row(f"e{i}", 1, nuclear_norm=v) for i, v in enumerate(values)])
    (r,) = layer_curves(stats, statistics=["nuclear_norm"]).itertuples()
    assert (r.mean, r.n, r.n_dropped) == (2.0, 2, 3)


def test_derived_statistics_and_zero_division():
    stats = pd.DataFrame(
        [
            row("a", 0, nuclear_norm=4.0, sigma_max=1.0, loss=2.0),
            row("b", 0, nuclear_norm=0.0, sigma_max=0.0, loss=0.0),  # 0/0 ratio, 0/0 per-loss: dropped
        ]
    )
    out = layer_curves(stats, statistics=["ratio", "nuclear_per_loss"]).set_index("statistic")
    assert out.loc["ratio", "mean"] == 0.25
    assert out.loc["nuclear_per_loss", "mean"] == 2.0
    assert out.loc["ratio", "n_dropped"] == 1
    assert math.isnan(out.loc["ratio", "ci_low"])  # one value left: no interval


def test_layer_curves_unknown_statistic_and_missing_columns():
    stats = pd.DataFrame([row("a", 0)])
    with pytest.raises(KeyError, match="unknown statistic"):
        layer_curves(stats, statistics=["nope"])
    with pytest.raises(ValueError, match="correctness"):
        layer_curves(stats.drop(columns="correctness"))


def _stats_for(means_by_layer: dict[int, float], correctness: str = "correct") -> pd.DataFrame:
    rows = []
    for layer, mean in means_by_layer.items():
        for i, delta in enumerate((-0.5, 0.5)):
            rows.append({**row(f"e{i}", layer, nuclear_norm=mean + delta), "correctness": correctness})
    return pd.DataFrame(rows)


def test_mad_summary_per_curve():
    curve = {layer: float(layer * layer) for layer in range(18)}
    summary = mad_summary(layer_curves(_stats_for(curve), statistics=["nuclear_norm"]))
    (r,) = summary.itertuples()
    values = np.array(list(curve.values()))
    assert r.n_layers == 18
    assert r.mad_all == pytest.approx(np.mean(np.diff(values)))
    assert r.mad_early == pytest.approx(np.mean(np.diff(values[:6])))
    assert r.mad_late == pytest.approx(np.mean(np.diff(values[12:])))
    assert r.mean_middle == pytest.approx(values[6:12].mean())


def test_compare_correct_vs_wrong():
    correct = _stats_for({0: 2.0, 1: 4.0, 2: 5.0})
    wrong = _stats_for({0: 1.0, 1: 5.0, 2: 5.0}, "wrong")
    curves = layer_curves(pd.concat([correct, wrong]), statistics=["nuclear_norm"])
    per_layer = compare_curves(curves, "correctness", "correct", "wrong")
    np.testing.assert_allclose(per_layer["rel_diff"], [0.5, 0.25, 0.0])
