"""Figures of learning-dynamics runs: probe curves, per-layer shares of the change, agreement, norms.

Every function takes the run tables (with `level` / `objective` columns added by the caller when
several runs are drawn together), draws with Agg and writes PNG (+ PDF) through the analysis
package's `save_figure`; each returns the PNG path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lg_pipeline.analysis.plotting import _grid, save_figure
from lg_pipeline.dynamics.learning.influence import r_squared
from lg_pipeline.vocabulary import LEVEL_LABELS, REASONING_LEVELS

OBJECTIVES = ("sft", "dpo")


def _png(paths: list[Path]) -> Path:
    return next(p for p in paths if p.suffix == ".png")


def _ordered(values, order: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def _type_color(probe_type: str, types: Sequence[str]) -> str:
    return f"C{list(types).index(probe_type) % 10}"


def plot_logprob_curves(logprobs: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Mean change of logp_sum since step 0 per probe type over steps: a panel per level, SFT | DPO side by side."""
    levels = _ordered(logprobs.level, REASONING_LEVELS)
    objectives = _ordered(logprobs.objective, OBJECTIVES)
    types = sorted(logprobs.probe_type.unique())
    fig, axes = _grid(len(levels), len(objectives))
    start = logprobs[logprobs.step == logprobs.step.min()].set_index(["level", "objective", "probe_id"]).logp_sum
    frame = logprobs.join(start.rename("start"), on=["level", "objective", "probe_id"])
    frame = frame.assign(change=frame.logp_sum - frame.start)
    for r, level in enumerate(levels):
        for c, objective in enumerate(objectives):
            ax = axes[r][c]
            panel = frame[(frame.level == level) & (frame.objective == objective)]
            for probe_type, group in panel.groupby("probe_type"):
                curve = group.groupby("step").change.mean()
                ax.plot(
                    curve.index, curve.values, marker="o", ms=3, label=probe_type, color=_type_color(probe_type, types)
                )
            ax.axhline(0, color="black", lw=0.5)
            ax.set_title(f"{LEVEL_LABELS.get(level, level)} · {objective.upper()}")
            ax.set_xlabel("step")
            ax.set_ylabel("Δ log p(response) since step 0")
            if len(panel):
                ax.legend(fontsize=7)
    fig.suptitle(title)
    return _png(save_figure(fig, out_base))


def layer_shares(influence: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per (probe type, step, layer): the layer's predicted change over Σ_layers |change|, mean over probes."""
    inner = influence[influence.layer >= 0]
    per_layer = inner.groupby(["step", "probe_id", "layer"], as_index=False).predicted_delta.sum()
    scale = per_layer.groupby(["step", "probe_id"]).predicted_delta.apply(lambda v: v.abs().sum()).rename("scale")
    per_layer = per_layer.join(scale, on=["step", "probe_id"])
    per_layer["share"] = per_layer.predicted_delta / per_layer.scale.replace(0, np.nan)
    kinds = summary.drop_duplicates("probe_id").set_index("probe_id").probe_type
    per_layer["probe_type"] = per_layer.probe_id.map(kinds)
    return per_layer.groupby(["probe_type", "step", "layer"], as_index=False).share.mean()


def thirds(n_layers: int) -> list[tuple[str, range]]:
    """Early / middle / late thirds of the layers, as the study splits them."""
    edges = [round(n_layers * k / 3) for k in range(4)]
    return [(name, range(edges[k], edges[k + 1])) for k, name in enumerate(("early", "middle", "late"))]


def plot_layer_share(shares: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Heat map layer × step of each layer's signed share of the predicted change, a panel per probe type."""
    types = sorted(shares.probe_type.unique())
    n_cols = min(4, len(types))
    fig, axes = _grid(-(-len(types) // n_cols), n_cols)
    n_layers = int(shares.layer.max()) + 1
    for k, probe_type in enumerate(types):
        ax = axes[k // n_cols][k % n_cols]
        grid = shares[shares.probe_type == probe_type].pivot(index="layer", columns="step", values="share")
        limit = float(np.nanmax(np.abs(grid.values))) if grid.size and np.isfinite(grid.values).any() else 1.0
        limit = limit or 1.0  # the colour scale follows the data: one layer's share is about 1 / n_layers
        image = ax.imshow(grid.values, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks(range(grid.shape[1]), [str(s) for s in grid.columns])
        for name, layers in thirds(n_layers):
            third = grid.loc[grid.index.isin(layers)].sum().mean()
            ax.axhline(layers.stop - 0.5, color="black", lw=0.6)
            ax.text(
                grid.shape[1] - 0.5,
                (layers.start + layers.stop - 1) / 2,
                f" {name} {third:+.2f}",
                fontsize=7,
                va="center",
            )
        ax.set_title(probe_type)
        ax.set_xlabel("eval step")
        ax.set_ylabel("layer")
        fig.colorbar(image, ax=ax, shrink=0.8)
    for k in range(len(types), axes.size):
        axes[k // n_cols][k % n_cols].axis("off")
    fig.suptitle(title + " — layer's share of the predicted change (early / middle / late: mean share per step)")
    return _png(save_figure(fig, out_base))


def plot_predicted_vs_measured(summary: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Scatter of measured against predicted change per (eval step, probe), coloured by probe type, with R²."""
    fig, axes = _grid(1, 1)
    ax = axes[0][0]
    types = sorted(summary.probe_type.unique())
    for probe_type, group in summary.groupby("probe_type"):
        ax.scatter(
            group.predicted_delta, group.measured_delta, s=14, label=probe_type, color=_type_color(probe_type, types)
        )
    values = np.concatenate([summary.predicted_delta.to_numpy(), summary.measured_delta.to_numpy()])
    if len(values):
        low, high = float(values.min()), float(values.max())
        ax.plot([low, high], [low, high], color="black", lw=0.6)
    r2 = r_squared(summary.predicted_delta, summary.measured_delta)
    ax.set_title(f"{title}\nR² = {r2:.4f} over {len(summary)} (step, probe)")
    ax.set_xlabel("predicted Δ logp_sum (Σ over matrices)")
    ax.set_ylabel("measured Δ logp_sum")
    ax.legend(fontsize=7)
    return _png(save_figure(fig, out_base))


def plot_nuclear_norms(stats: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Mean nuclear norm per layer of the training batch's gradients, one line per eval step, a panel per level."""
    levels = _ordered(stats.level, REASONING_LEVELS)
    fig, axes = _grid(1, len(levels))
    for c, level in enumerate(levels):
        ax = axes[0][c]
        panel = stats[stats.level == level]
        steps = sorted(panel.step.unique())
        for k, step in enumerate(steps):
            curve = panel[panel.step == step].groupby("layer").nuclear_norm.mean()
            shade = 0.25 + 0.75 * k / max(1, len(steps) - 1)
            ax.plot(curve.index, curve.values, color=(0.1, 0.2, 0.8, shade), label=f"step {step}")
        ax.set_title(LEVEL_LABELS.get(level, level))
        ax.set_xlabel("layer")
        ax.set_ylabel("nuclear norm (mean over q/k/v/o, batch)")
        if steps:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return _png(save_figure(fig, out_base))
