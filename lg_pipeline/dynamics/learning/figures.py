"""Figures of learning-dynamics runs: probe curves (summed and per token), per-layer shares of the change, the
kernel and per-matrix terms by layer and module, agreement, norms, and the squeezing figure (the greedy probes'
log-probability and every probe's probability concentration over steps, SFT beside DPO).

Every function is a pure function of the run tables (with `level` / `variant` / `objective` columns added by the
caller when several runs are drawn together) to the files it writes, drawn on the analysis canvas; each returns
the PNG path. `draw_figures` draws all of them for one model's runs, so the asset and the CLI draw the same.
Under DPO the trained response is the *chosen* one and the wrong-set response the *rejected* one, and the figures
say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lg_pipeline.analysis.canvas import (
    TEXT_PT,
    band_curve,
    figure_legend,
    figure_title,
    grid,
    integer_ticks,
    module_label,
    panel_title,
    png,
    save_figure,
    wrap,
)
from lg_pipeline.analysis.curves import ordered
from lg_pipeline.dynamics.learning.influence import r_squared
from lg_pipeline.vocabulary import LEVEL_LABELS, MODULE_ORDER, REASONING_LEVELS

OBJECTIVES = ("sft", "dpo")
# Probe types in the order legends list them; a type keeps its colour (its place here) in every figure.
PROBE_TYPES = (
    "trained",
    "wrong",
    "held_out",
    "other_prompt",
    "shuffled_words",
    "irrelevant",
    *(f"other_level:{level}" for level in REASONING_LEVELS),
    "greedy",
)
DPO_NAMES = {"trained": "chosen", "wrong": "rejected"}  # what DPO trains each of these responses as
CHANGES = {
    "change": ("summed", "Δ log p since step 0"),
    "change_per_token": ("per token", "Δ log p / token since step 0"),
}


def probe_color(probe_type: str) -> str:
    if probe_type in PROBE_TYPES:
        return f"C{PROBE_TYPES.index(probe_type) % 10}"
    return f"C{sum(map(ord, probe_type)) % 10}"


def probe_label(probe_type: str, objectives: Sequence[str] = ("sft",)) -> str:
    """The probe's name in a legend: `chosen` / `rejected` under DPO, both names when SFT and DPO share one."""
    dpo = DPO_NAMES.get(probe_type)
    if dpo is None or "dpo" not in objectives:
        return probe_type
    return dpo if set(objectives) == {"dpo"} else f"{probe_type} (DPO: {dpo})"


def _probe_handles(types: Sequence[str], objectives: Sequence[str]) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=probe_color(t), marker="o", ms=4, label=probe_label(t, objectives)) for t in types]


def logprob_changes(logprobs: pd.DataFrame) -> pd.DataFrame:
    """`logprobs` with each probe's change since its first step: summed over its response tokens (`change`) and
    divided by their number (`change_per_token`), so long responses do not dominate by length alone."""
    keys = [k for k in ("model", "variant", "level", "objective", "probe_id") if k in logprobs.columns]
    start = logprobs.sort_values("step").groupby(keys).logp_sum.transform("first")
    change = logprobs.logp_sum - start
    return logprobs.assign(change=change, change_per_token=change / logprobs.n_response_tokens.clip(lower=1))


def plot_logprob_curves(logprobs: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Mean change of log p since step 0 per probe type over steps: a row per level; per objective (SFT, DPO) a
    panel of the summed change and one of the change per response token."""
    levels = ordered(logprobs.level, REASONING_LEVELS)
    objectives = ordered(logprobs.objective, OBJECTIVES)
    types = ordered(logprobs.probe_type, PROBE_TYPES)
    frame = logprob_changes(logprobs)
    columns = [(objective, change) for objective in objectives for change in CHANGES]
    fig, axes = grid(len(levels), len(columns))
    for r, level in enumerate(levels):
        for c, (objective, change) in enumerate(columns):
            ax, (how, ylabel) = axes[r][c], CHANGES[change]
            panel = frame[(frame.level == level) & (frame.objective == objective)]
            panel_title(ax, f"{LEVEL_LABELS.get(level, level)} · {objective.upper()} · {how}")
            if panel.empty:
                ax.axis("off")
                ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes, color="gray")
                continue
            for probe_type, group in panel.groupby("probe_type"):
                curve = group.groupby("step")[change].mean()
                ax.plot(curve.index, curve.values, marker="o", ms=3, color=probe_color(probe_type))
            ax.axhline(0, color="black", lw=0.5)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            integer_ticks(ax.xaxis)
    figure_legend(fig, _probe_handles(types, objectives))
    figure_title(fig, title, "mean over the probes of each type")
    return png(save_figure(fig, out_base))


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


def plot_layer_share(shares: pd.DataFrame, title: str, out_base: Path, objective: str = "sft") -> Path:
    """Heat map layer × step of each layer's signed share of the predicted change, a panel per probe type, one
    colour scale for all (shares are fractions of each probe's own total, so they compare across types); on the
    right of each panel the early / middle / late thirds' summed share, averaged over the steps."""
    types = ordered(shares.probe_type, PROBE_TYPES)
    fig, axes = wrap(len(types))
    n_layers = int(shares.layer.max()) + 1
    values = shares.share.to_numpy(dtype=float)
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    limit = limit or 1.0  # the scale follows the data: one layer's share is about 1 / n_layers
    image = None
    for ax, probe_type in zip(axes, types, strict=True):
        cells = shares[shares.probe_type == probe_type].pivot(index="layer", columns="step", values="share")
        image = ax.imshow(cells.values, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks(range(cells.shape[1]), [str(s) for s in cells.columns])
        integer_ticks(ax.yaxis)
        parts = thirds(n_layers)
        for _, layers in parts[:-1]:
            ax.axhline(layers.stop - 0.5, color="black", lw=0.6)
        right = ax.secondary_yaxis("right")
        right.set_yticks(
            [(layers.start + layers.stop - 1) / 2 for _, layers in parts],
            [f"{name} {cells.loc[cells.index.isin(layers)].sum().mean():+.2f}" for name, layers in parts],
        )
        right.tick_params(length=0, labelsize=TEXT_PT)
        panel_title(ax, probe_label(probe_type, [objective]))
        ax.set_xlabel("eval step")
        ax.set_ylabel("layer")
    fig.colorbar(image, ax=axes, shrink=0.8, label="share of the predicted change")
    figure_title(
        fig, f"{title}: each layer's share of the predicted change", "right: each third's share, mean over steps"
    )
    return png(save_figure(fig, out_base))


QUANTITIES = {
    "term": "⟨∇ log p, ΔW⟩ (predicted change)",
    "kernel": "Σ_u ⟨∇ log p, ∇L_u⟩ (kernel)",
}


def kernel_terms(influence: pd.DataFrame, kernel: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per (quantity, probe type, module, layer), mean over probes and eval steps: `term`, the matrix's share of the
    probe's first-order prediction, ⟨∇_W log p(probe), W_{s+1} − W_s⟩; `kernel`, the probe's gradient against the
    step's batch, Σ_u ⟨∇_W log p(probe), ∇_W L_u⟩ (under SGD the term is −lr/B times it). Weight matrices of the
    layers only (the known projections and whatever the kernel was taken of), not norms or embeddings."""
    kinds = summary.drop_duplicates("probe_id").set_index("probe_id").probe_type
    parts = []
    matrices = {*MODULE_ORDER, *(kernel.module if len(kernel) else ())}
    studied = influence[(influence.layer >= 0) & influence.module.isin(matrices)]
    if len(studied):
        parts.append(studied.rename(columns={"predicted_delta": "value"}).assign(quantity="term"))
    if len(kernel):
        batch = kernel.groupby(["step", "probe_id", "layer", "module"], as_index=False).grad_inner.sum()
        parts.append(batch.rename(columns={"grad_inner": "value"}).assign(quantity="kernel"))
    if not parts:
        return pd.DataFrame(columns=["quantity", "probe_type", "module", "layer", "value"])
    frame = pd.concat([p[["quantity", "step", "probe_id", "layer", "module", "value"]] for p in parts])
    frame["probe_type"] = frame.probe_id.map(kinds)
    return frame.groupby(["quantity", "probe_type", "module", "layer"], as_index=False).value.mean()


def plot_kernel_terms(terms: pd.DataFrame, title: str, out_base: Path, objective: str = "sft") -> Path:
    """Which layers carry the predicted change: a row per quantity (the per-matrix term, the kernel where the run
    has one), a panel per module, a line per probe type over the layers."""
    quantities = [q for q in QUANTITIES if q in set(terms.quantity)]
    modules = ordered(terms.module, MODULE_ORDER)
    types = ordered(terms.probe_type, PROBE_TYPES)
    n_cols = min(4, len(modules))
    per_quantity = -(-len(modules) // n_cols)
    fig, axes = grid(len(quantities) * per_quantity, n_cols)
    for q, quantity in enumerate(quantities):
        for m, module in enumerate(modules):
            ax = axes[q * per_quantity + m // n_cols][m % n_cols]
            part = terms[(terms.quantity == quantity) & (terms.module == module)]
            for probe_type, rows in part.groupby("probe_type"):
                rows = rows.sort_values("layer")
                ax.plot(rows.layer, rows.value, marker="o", ms=3, color=probe_color(probe_type))
            ax.axhline(0, color="black", lw=0.5)
            panel_title(ax, f"{module_label(module)} · {quantity}")
            ax.set_xlabel("layer")
            if m % n_cols == 0:
                ax.set_ylabel(QUANTITIES[quantity])
            integer_ticks(ax.xaxis)
        for m in range(len(modules), per_quantity * n_cols):
            axes[q * per_quantity + m // n_cols][m % n_cols].axis("off")
    figure_legend(fig, _probe_handles(types, [objective]))
    missing = "" if "kernel" in quantities else "; no kernel: the run's batches had no labels (DPO)"
    figure_title(fig, f"{title}: per layer and module", f"mean over probes and eval steps{missing}")
    return png(save_figure(fig, out_base))


MARKERS = {"sft": "o", "dpo": "^"}


def plot_predicted_vs_measured(summary: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Scatter of measured against predicted change per (eval step, probe), coloured by probe type (a marker per
    objective where the frame has several), with R²."""
    fig, axes = grid(1, 1, panel=(6.0, 4.5))
    ax = axes[0][0]
    objective = summary.objective if "objective" in summary.columns else pd.Series("sft", index=summary.index)
    objectives = ordered(objective, OBJECTIVES)
    types = ordered(summary.probe_type, PROBE_TYPES)
    for (probe_type, obj), group in summary.groupby([summary.probe_type, objective]):
        color, marker = probe_color(probe_type), MARKERS.get(obj, "s")
        ax.scatter(group.predicted_delta, group.measured_delta, s=16, color=color, marker=marker)
    values = np.concatenate([summary.predicted_delta.to_numpy(), summary.measured_delta.to_numpy()])
    if len(values):
        low, high = float(values.min()), float(values.max())
        ax.plot([low, high], [low, high], color="black", lw=0.6)
    r2 = r_squared(summary.predicted_delta, summary.measured_delta)
    panel_title(ax, f"{title}\nR² = {r2:.4f} over {len(summary)} (step, probe)")
    ax.set_xlabel("predicted Δ logp_sum (Σ over matrices)")
    ax.set_ylabel("measured Δ logp_sum")
    handles = _probe_handles(types, objectives)
    if len(objectives) > 1:
        from matplotlib.lines import Line2D

        handles += [
            Line2D([], [], color="black", ls="", marker=MARKERS.get(o, "s"), label=o.upper()) for o in objectives
        ]
    ax.legend(handles=handles, fontsize=TEXT_PT)
    return png(save_figure(fig, out_base))


def plot_nuclear_norms(stats: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Mean nuclear norm per layer of the training batch's gradients, one line per eval step, a panel per level."""
    levels = ordered(stats.level, REASONING_LEVELS)
    fig, axes = wrap(len(levels))
    for ax, level in zip(axes, levels, strict=True):
        panel = stats[stats.level == level]
        steps = sorted(panel.step.unique())
        for k, step in enumerate(steps):
            curve = panel[panel.step == step].groupby("layer").nuclear_norm.mean()
            shade = 0.25 + 0.75 * k / max(1, len(steps) - 1)
            ax.plot(curve.index, curve.values, color=(0.1, 0.2, 0.8, shade), label=f"step {step}")
        panel_title(ax, LEVEL_LABELS.get(level, level))
        ax.set_xlabel("layer")
        ax.set_ylabel("nuclear norm (mean over q/k/v/o, batch)")
        integer_ticks(ax.xaxis)
        if steps:
            ax.legend(fontsize=TEXT_PT, ncols=1 + len(steps) // 6)
    figure_title(fig, title)
    return png(save_figure(fig, out_base))


SQUEEZE_ROWS = {
    "logp_mean": "log p / token",
    "max_prob_mean": "mean max-token probability",
    "entropy_mean": "mean entropy (nats)",
}
GREEDY_NOW_STYLE = {"color": "black", "ls": "--", "marker": "x", "ms": 4}


def plot_squeezing(logprobs: pd.DataFrame, greedy_now: pd.DataFrame, title: str, out_base: Path) -> Path:
    """Ren & Sutherland's squeezing effect, per objective (a column each): the log-probability per token of each
    probe type, the greedy response decoded at step 0 (`greedy`) and the one decoded now (`greedy now`), then how
    peaked the model's next-token distribution is over those responses (max-token probability, entropy). Under DPO
    the rejected term pushes mass onto the already likeliest tokens: the greedy curves and the max-token
    probability rise, the entropy falls. Means over the probes of each type (and over levels and variants)."""
    objectives = ordered(logprobs.objective, OBJECTIVES)
    types = ordered(logprobs.probe_type, PROBE_TYPES)
    fig, axes = grid(len(SQUEEZE_ROWS), len(objectives))
    for c, objective in enumerate(objectives):
        run = logprobs[logprobs.objective == objective]
        now = greedy_now[greedy_now.objective == objective] if len(greedy_now) else greedy_now
        for r, (column, ylabel) in enumerate(SQUEEZE_ROWS.items()):
            ax = axes[r][c]
            panel_title(ax, f"{objective.upper()} · {ylabel}")
            for probe_type, group in run.groupby("probe_type"):
                curve = group.groupby("step")[column].mean()
                wide = 2.2 if probe_type == "greedy" else 1.0
                ax.plot(curve.index, curve.values, marker="o", ms=3, lw=wide, color=probe_color(probe_type))
            if len(now):
                curve = now.groupby("step")[column].mean()
                ax.plot(curve.index, curve.values, **GREEDY_NOW_STYLE)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            integer_ticks(ax.xaxis)
    from matplotlib.lines import Line2D

    handles = _probe_handles(types, objectives)
    if len(greedy_now):
        handles.append(Line2D([], [], label="greedy now (decoded at that step)", **GREEDY_NOW_STYLE))
    figure_legend(fig, handles)
    figure_title(fig, title, "greedy: the step-0 greedy response, kept fixed; greedy now: decoded again each eval step")
    return png(save_figure(fig, out_base))


def draw_figures(tables: Mapping[str, pd.DataFrame], out_dir: Path, name: str) -> dict[str, Path]:
    """Every figure of one model's runs, title -> PNG, written under `out_dir` as `<name>_<figure>.{png,pdf}`.

    `tables`: the runs' `logprobs`, `influence_summary`, `influence`, `kernel`, `train_gradient_stats` and
    `greedy_now` (any may be missing or empty), each with `variant`, `level` and `objective` columns; `name` names
    the model. The squeezing figure needs the concentration columns (runs before them have none).
    """
    empty = pd.DataFrame()
    logprobs, summary = tables.get("logprobs", empty), tables.get("influence_summary", empty)
    influence, kernel = tables.get("influence", empty), tables.get("kernel", empty)
    stats = tables.get("train_gradient_stats", empty)
    out = Path(out_dir)
    pngs = {
        "log-probabilities": plot_logprob_curves(
            logprobs, f"{name}: probe log-probabilities", out / f"{name}_logprobs"
        ),
        "predicted vs measured": plot_predicted_vs_measured(summary, name, out / f"{name}_agreement"),
    }
    greedy_now = tables.get("greedy_now", empty)
    if len(logprobs) and set(SQUEEZE_ROWS) <= set(logprobs.columns):
        title = f"{name}: squeezing (greedy responses and probability concentration)"
        pngs["squeezing"] = plot_squeezing(logprobs, greedy_now, title, out / f"{name}_squeezing")
    if len(stats):
        title = f"{name}: gradient nuclear norms along training"
        pngs["nuclear norms"] = plot_nuclear_norms(stats, title, out / f"{name}_nuclear")
    for (variant, objective), run in summary.groupby(["variant", "objective"], sort=True):
        label, base = f"{variant} {objective}", out / f"{name}_{variant}_{objective}"
        run_influence = _of_run(influence, variant, objective)
        shares = layer_shares(run_influence, run)
        pngs[f"layer shares {label}"] = plot_layer_share(shares, f"{name} · {label}", Path(f"{base}_layers"), objective)
        terms = kernel_terms(run_influence, _of_run(kernel, variant, objective), run)
        if len(terms):
            path = Path(f"{base}_kernel")
            pngs[f"kernel and terms {label}"] = plot_kernel_terms(terms, f"{name} · {label}", path, objective)
    return pngs


def _of_run(frame: pd.DataFrame, variant: str, objective: str) -> pd.DataFrame:
    """The rows of one run (variant, objective) of a table drawn for several; an empty table as it is."""
    if frame.empty:
        return frame
    return frame[(frame.variant == variant) & (frame.objective == objective)]


def plot_logprob_band(stats: Mapping[str, pd.DataFrame], title: str, out_base: Path, objective: str = "sft") -> Path:
    """Δ log p since step 0 per probe type over steps, across seeds: the mean over seeds of each seed's mean over
    its probes of the type, in a min–max band over seeds; a panel of the summed change and one per response token.
    `stats`: `change` / `change_per_token` -> `dynamics.seeds.across_seeds` tables by (`probe_type`, `step`)."""
    fig, axes = grid(1, len(CHANGES))
    present = pd.concat([stats[c] for c in CHANGES], ignore_index=True)
    types = ordered(present.probe_type, PROBE_TYPES)
    n_seeds = int(present.n_seeds.max()) if len(present) else 0
    for ax, change in zip(axes[0], CHANGES, strict=True):
        how, ylabel = CHANGES[change]
        for probe_type, group in stats[change].groupby("probe_type"):
            band_curve(ax, group, probe_color(probe_type))
        panel_title(ax, f"{objective.upper()} · {how}")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        integer_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
    figure_legend(fig, _probe_handles(types, (objective,)))
    figure_title(fig, title, f"mean over {n_seeds} seeds, band: min–max over seeds")
    return png(save_figure(fig, out_base))
