"""Per-layer gradient curves, their mean absolute difference (MAD) and relative differences.

The study summarises each gradient curve (one value per layer, averaged over examples)
by how much it moves from layer to layer: the MAD between consecutive layers, over all
layers and within an early, a middle and a late third of the network. Smaller MAD means
a flatter, more stable gradient profile. This module computes those summaries from the
long gradient-statistics table (one row per example x parameter); it has no plotting
and no orchestration in it so it can be tested on hand-made numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Columns that identify one curve family (a variant of one dataset on one model).
VARIANT_KEYS: tuple[str, ...] = ("model", "dataset", "level", "correctness")
CURVE_KEYS: tuple[str, ...] = (*VARIANT_KEYS, "module")
CURVE_COLUMNS: tuple[str, ...] = (
    *CURVE_KEYS,
    "layer",
    "statistic",
    "mean",
    "ci_low",
    "ci_high",
    "n",
    "n_dropped",
)
THIRDS: tuple[str, ...] = ("early", "middle", "late")
DEFAULT_STATISTICS: tuple[str, ...] = (
    "nuclear_norm", "ratio", "nuclear_per_loss", "frobenius_norm", "effective_rank", "stable_rank"
)

# Derived statistics: name -> (numerator column, denominator column).
DERIVED: dict[str, tuple[str, str]] = {
    "ratio": ("sigma_max", "nuclear_norm"),  # the study's S_ratio = S_max / S_sum
    "nuclear_per_loss": ("nuclear_norm", "loss"),  # the study's S_sum_regularized = S_sum / loss
}

# The study's hand-picked (early end, middle end) boundaries, from its MAD code
# (`cal_MAD_3_devides`): 26 -> 7/13/6, 28 -> 7/14/7, 32 -> 10/10/12, 42 -> 12/18/12 layers.
STUDY_THIRD_BOUNDS: dict[int, tuple[int, int]] = {26: (7, 20), 28: (7, 21), 32: (10, 20), 42: (12, 30)}


def ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """Known values in `order` first, then any others sorted, so new levels never vanish."""
    present = list(dict.fromkeys(values))
    known = [v for v in order if v in present]
    return known + sorted(v for v in present if v not in order)


# --------------------------------------------------------------------------- curves


def statistic_values(stats: pd.DataFrame, statistic: str) -> pd.Series:
    """One value per row for a raw column or a derived ratio (0/0 gives NaN, x/0 gives inf)."""
    if statistic in DERIVED:
        num, den = DERIVED[statistic]
        with np.errstate(divide="ignore", invalid="ignore"):
            return stats[num].astype(float) / stats[den].astype(float)
    if statistic not in stats.columns:
        raise KeyError(f"unknown statistic '{statistic}': not a column and not one of {sorted(DERIVED)}")
    return stats[statistic].astype(float)


def t_quantile(confidence: float, dof: np.ndarray) -> np.ndarray:
    """Two-sided Student-t critical value; NaN where there are no degrees of freedom."""
    from scipy.stats import t  # scipy ships with great-expectations; imported late to keep imports light

    dof = np.asarray(dof, dtype=float)
    out = np.full(dof.shape, np.nan)
    ok = dof > 0
    out[ok] = t.ppf(0.5 + confidence / 2, dof[ok])
    return out


# Statistics that cannot be negative: their interval is computed in log space and never crosses 0.
NON_NEGATIVE: frozenset[str] = frozenset(
    {"nuclear_norm", "sigma_max", "sigma_min", "frobenius_norm", "ratio", "nuclear_per_loss", "loss"}
)


def _t_interval(out: pd.DataFrame, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    half = t_quantile(confidence, out["n"].to_numpy() - 1) * out["sd"] / np.sqrt(out["n"])
    return (out["mean"] - half).to_numpy(), (out["mean"] + half).to_numpy()


def _log_interval(out: pd.DataFrame, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The modified Cox interval for the mean of a positive quantity (Olsson 2005): a t interval in log space.

    log E[x] = mu + s^2/2 under log-normality, with standard error sqrt(s^2/n + s^4/(2(n-1))); the bounds are
    exp(.) of that, so they stay above 0 and are asymmetric as a norm's spread is. Where a group holds a 0 (no
    log), the plain t interval is used with its lower bound clipped at 0.
    """
    n, s2 = out["n"].to_numpy(dtype=float), out["log_sd"].to_numpy(dtype=float) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(s2 / n + s2**2 / (2 * (n - 1)))
        centre = out["log_mean"].to_numpy(dtype=float) + s2 / 2
        half = t_quantile(confidence, n - 1) * se
    low, high = np.exp(centre - half), np.exp(centre + half)
    t_low, t_high = _t_interval(out, confidence)
    positive = out["all_positive"].to_numpy(dtype=bool)
    return np.where(positive, low, np.maximum(t_low, 0.0)), np.where(positive, high, t_high)


def _one_statistic(stats: pd.DataFrame, statistic: str, confidence: float) -> pd.DataFrame:
    values = statistic_values(stats, statistic).to_numpy()
    finite = np.isfinite(values)
    frame = stats[[*CURVE_KEYS, "layer"]].copy()
    frame["value"] = np.where(finite, values, np.nan)
    frame["dropped"] = ~finite
    positive = frame["value"] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["log_value"] = np.where(positive, np.log(frame["value"].where(positive)), np.nan)
    frame["not_positive"] = frame["value"].notna() & ~positive
    grouped = frame.groupby([*CURVE_KEYS, "layer"], dropna=False, sort=True)
    out = grouped.agg(
        mean=("value", "mean"),
        sd=("value", "std"),
        n=("value", "count"),
        n_dropped=("dropped", "sum"),
        log_mean=("log_value", "mean"),
        log_sd=("log_value", "std"),
        n_not_positive=("not_positive", "sum"),
    ).reset_index()
    out["all_positive"] = out["n_not_positive"] == 0
    interval = _log_interval if statistic in NON_NEGATIVE else _t_interval
    out["ci_low"], out["ci_high"] = interval(out, confidence)
    out["statistic"] = statistic
    return out


def layer_curves(
    stats: pd.DataFrame,
    statistics: Sequence[str] = DEFAULT_STATISTICS,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean over examples per (variant, module, layer) with a confidence interval that respects the quantity.

    Non-finite values (NaN, +-inf, e.g. a ratio over a zero norm) are left out of the mean
    and counted in `n_dropped`, per layer. This differs from the study, which drops an
    example's whole curve when any layer is NaN and turns a division by zero into 0; we
    keep every finite value and say how many were not. The interval of a non-negative
    statistic (`NON_NEGATIVE`: norms, ratios) is a t interval in log space (`_log_interval`), so it
    never crosses 0; any other statistic gets mean +- t(conf, n-1) * sd / sqrt(n). It is NaN when fewer
    than two values remain.
    """
    missing = [c for c in (*CURVE_KEYS, "layer") if c not in stats.columns]
    if missing:
        raise ValueError(f"gradient statistics lack column(s) {', '.join(missing)}")
    parts = [_one_statistic(stats, s, confidence) for s in statistics]
    if not parts:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    out = pd.concat(parts, ignore_index=True)
    out["layer"] = out["layer"].astype(int)
    out["n"] = out["n"].astype(int)
    out["n_dropped"] = out["n_dropped"].astype(int)
    return out[list(CURVE_COLUMNS)]


# --------------------------------------------------------------------------- MAD


def third_bounds(n_layers: int) -> tuple[int, int]:
    """(end of early, end of middle) as slice bounds.

    The study's own boundaries for 26, 28, 32 and 42 layers; any other depth uses equal
    thirds of size n // 3 with the remainder (0-2 layers) going to the late third. That
    rule coincides with the study's split for 32 layers, gives 6/6/6 for 18 and 10/10/10
    for 30 layers.
    """
    if n_layers < 3:
        raise ValueError(f"need at least 3 layers to split into thirds, got {n_layers}")
    if n_layers in STUDY_THIRD_BOUNDS:
        return STUDY_THIRD_BOUNDS[n_layers]
    size = n_layers // 3
    return size, 2 * size


def thirds(n_layers: int) -> dict[str, list[int]]:
    """Layer positions of the early, middle and late thirds (see `third_bounds` for the rule)."""
    a, b = third_bounds(n_layers)
    return {"early": list(range(a)), "middle": list(range(a, b)), "late": list(range(b, n_layers))}


def mad(values: Sequence[float] | np.ndarray) -> float:
    """Mean absolute difference between consecutive values; NaN with fewer than two values.

    A NaN inside the curve propagates, so a layer with no finite data shows up as a
    missing summary instead of a silently shorter one.
    """
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return float("nan")
    return float(np.mean(np.abs(np.diff(arr))))


def curve_summary(curve: Sequence[float] | np.ndarray) -> dict[str, float]:
    """MAD and mean level of one per-layer curve over all layers and each third.

    MAD within a third uses only differences between layers of that third, as the study does.
    """
    arr = np.asarray(curve, dtype=float)
    out = {"n_layers": arr.size, "mad_all": mad(arr), "mean_all": float(np.mean(arr))}
    for name, idx in thirds(arr.size).items():
        out[f"mad_{name}"] = mad(arr[idx])
        out[f"mean_{name}"] = float(np.mean(arr[idx])) if idx else float("nan")
    return out


def mad_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, module, statistic): MAD and mean over all layers and each third.

    Layers are taken in ascending order and the thirds are split over the layers present,
    so a curve that skips layers is split by position, not by layer number.
    """
    rows = []
    for key, group in curves.groupby([*CURVE_KEYS, "statistic"], dropna=False, sort=True):
        curve = group.sort_values("layer")["mean"].to_numpy()
        rows.append({**dict(zip((*CURVE_KEYS, "statistic"), key, strict=True)), **curve_summary(curve)})
    columns = [
        *CURVE_KEYS,
        "statistic",
        "n_layers",
        "mad_all",
        *(f"mad_{t}" for t in THIRDS),
        "mean_all",
        *(f"mean_{t}" for t in THIRDS),
    ]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- relative difference


@dataclass(frozen=True)
class RelativeDifference:
    """Per-layer |a - b| / |a|, its mean, and the five layers where it is largest (study order)."""

    per_layer: np.ndarray
    mean: float
    top_layers: list[int]


def relative_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> RelativeDifference:
    """The study's relative difference of curve `b` against reference curve `a`.

    rd_i = |a_i - b_i| / |a_i|, with a_i == 0 replaced by 1e-10 as in the study, and the
    average is the plain mean over layers. Use a = correct, b = wrong (or base vs
    instruct, or one level vs another).
    """
    ref = np.array(a, dtype=float)
    other = np.asarray(b, dtype=float)
    if ref.shape != other.shape:
        raise ValueError(f"curves differ in length: {ref.size} vs {other.size}")
    ref[ref == 0] = 1e-10
    rd = np.abs(ref - other) / np.abs(ref)
    top = np.argsort(rd)[-5:][::-1]
    return RelativeDifference(rd, float(np.mean(rd)) if rd.size else float("nan"), [int(i) for i in top])


def compare_curves(curves: pd.DataFrame, column: str, reference: str, other: str) -> pd.DataFrame:
    """Per-layer relative difference between two values of one key column.

    e.g. column="correctness", reference="correct", other="wrong"; or column="model" with
    a base and an instruct model; or column="level". Curves are matched on every other
    key; rows present on one side only are left out. Returns the layers with both means
    and `rel_diff`.
    """
    keys = [k for k in (*CURVE_KEYS, "statistic", "layer") if k != column]
    left = curves[curves[column] == reference][[*keys, "mean"]]
    right = curves[curves[column] == other][[*keys, "mean"]]
    both = left.merge(right, on=keys, suffixes=("_reference", "_other"))
    both["rel_diff"] = relative_difference(both["mean_reference"], both["mean_other"]).per_layer
    both.insert(0, column, f"{reference} vs {other}")
    return both.sort_values(keys, kind="stable").reset_index(drop=True)

