"""Figures of zero-shot dynamics: held-out loss vs step per ordering, seen-data distance, None vs Detailed CoT,
and loss beside the generation metrics with their agreement across tasks.

Each takes the run tables (`zero_shot`, `seen_distance`; a `level` column where levels are compared), draws on the
analysis canvas and writes the PNG at `path` (and a PDF beside it) atomically, returning the PNG. An ordering has
one colour in every figure; axis limits come from the data.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lg_pipeline.analysis.canvas import (
    band_curve,
    figure_legend,
    figure_title,
    grid,
    integer_ticks,
    module_color,
    module_label,
    panel_title,
    png,
    save_figure,
    wrap,
)
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS
from lg_pipeline.dynamics.zero_shot.stability import stability_table
from lg_pipeline.vocabulary import LEVEL_LABELS

ORDERING_LABELS = {
    "rt": "RT (random)",
    "nft": "NFT (nearest first)",
    "fft": "FFT (farthest first)",
    "round_robin": "Round-robin",
    "cluster": "Cluster",
    "coarse": "Coarse (tasks by WSD)",
    "tma": "TMA",
    "gradient": "Gradient (⟨∇L_u, ∇L_test⟩)",
    "cluster_shuffled": "Cluster (shuffled tasks)",
    "tma_far": "TMA farthest first",
    "tma_random": "TMA random picks",
    "tma_maxmin": "TMA max-min",
    "tma_minmax": "TMA min-max",
    "tma_subset": "TMA subset (k nearest)",
}
SEEN_METRICS = ("min", "avg", "max", "centroid")
METRIC_LABELS = {"loss": "held-out loss", "rouge1": "ROUGE-1", "rougeL": "ROUGE-L", "exact_match": "exact match",
                 "reward": "reward"}
LEVEL_STYLES = {"none": "-", "simplified": "-.", "detailed": "--"}


def ordering_color(name: str) -> str:
    """C0..C9 for the first ten orderings, then tab20's light shades (distinct from those ten)."""
    if name not in ORDERINGS:
        return "black"
    k = ORDERINGS.index(name)
    if k < 10:
        return f"C{k}"
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["tab20"](2 * (k - 10) + 1))


def _save(fig, path: Path) -> Path:
    """Write `path` (a `.png`) and the PDF beside it; returns the PNG."""
    path = Path(path)
    return png(save_figure(fig, path.with_name(path.stem) if path.suffix == ".png" else path))


def _task_order(frame: pd.DataFrame, column: str) -> list[str]:
    tasks = [t for t in dict.fromkeys(frame[column]) if t != ALL_TASKS]
    return [ALL_TASKS, *tasks] if ALL_TASKS in set(frame[column]) else tasks


def _ordering_handles(orderings) -> list:
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], color=ordering_color(o), marker="o", ms=4, label=ORDERING_LABELS.get(o, o)) for o in orderings
    ]


def _orderings(frame: pd.DataFrame) -> list[str]:
    present = set(frame.ordering)
    return [o for o in ORDERINGS if o in present] + sorted(present - set(ORDERINGS))


def _task_title(task: str) -> str:
    return "All held-out tasks" if task == ALL_TASKS else task


def loss_figure(losses: pd.DataFrame, path: Path, title: str) -> Path:
    """One panel for all test items, then one per test task; a line per ordering."""
    tasks = _task_order(losses, "task")
    fig, axes = wrap(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        part = losses[losses.task == task]
        for ordering, rows in part.groupby("ordering", sort=False):
            rows = rows.sort_values("step")
            ax.plot(rows.step, rows.loss, marker="o", ms=3, color=ordering_color(ordering))
        panel_title(ax, _task_title(task))
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out loss")
        integer_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
    figure_legend(fig, _ordering_handles(_orderings(losses)))
    figure_title(fig, title)
    return _save(fig, path)


def seen_distance_figure(seen: pd.DataFrame, path: Path, title: str) -> Path:
    """Rows: min / avg / max / centroid distance of the seen training data; columns: test tasks."""
    tasks = _task_order(seen, "test_task")
    fig, axes = grid(len(SEEN_METRICS), len(tasks), panel=(3.8, 2.5))
    for r, metric in enumerate(SEEN_METRICS):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            part = seen[(seen.test_task == task) & (seen.step > 0)]
            for ordering, rows in part.groupby("ordering", sort=False):
                rows = rows.sort_values("step")
                ax.plot(rows.step, rows[metric], marker="o", ms=3, color=ordering_color(ordering))
            if r == 0:
                panel_title(ax, _task_title(task))
            if c == 0:
                ax.set_ylabel(f"{metric} −cos")
            if r == len(SEEN_METRICS) - 1:
                ax.set_xlabel("training step")
            integer_ticks(ax.xaxis)
            ax.grid(alpha=0.3)
    figure_legend(fig, _ordering_handles(_orderings(seen)))
    figure_title(fig, title, "rows: min, mean, max and centroid distance of the data seen so far to the test task")
    return _save(fig, path)


def level_figure(losses: pd.DataFrame, path: Path, title: str) -> Path:
    """Held-out loss (all test items) per ordering, one line per training level: None vs Detailed CoT."""
    from matplotlib.lines import Line2D

    part = losses[losses.task == ALL_TASKS]
    orderings = _orderings(part)
    fig, axes = wrap(len(orderings))
    for ax, ordering in zip(axes, orderings, strict=True):
        for level, rows in part[part.ordering == ordering].groupby("level", sort=False):
            rows = rows.sort_values("step")
            style = LEVEL_STYLES.get(level, ":")
            ax.plot(rows.step, rows.loss, style, marker="o", ms=3, color=ordering_color(ordering))
        panel_title(ax, ORDERING_LABELS.get(ordering, ordering))
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out loss (all tasks)")
        integer_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
    levels = [lv for lv in dict.fromkeys(part.level)]
    handles = [
        Line2D([], [], color="black", ls=LEVEL_STYLES.get(lv, ":"), label=LEVEL_LABELS.get(lv, lv)) for lv in levels
    ]
    figure_legend(fig, handles, "training level")
    figure_title(fig, title)
    return _save(fig, path)


def alignment_figure(alignment: pd.DataFrame, path: Path, title: str) -> Path:
    """Σ over training items of ⟨∇_W L_u, ∇_W L_test⟩ per layer, one line per studied module: where the gradient
    ordering's score comes from."""
    fig, axes = grid(1, 1, panel=(6.0, 3.8))
    ax = axes[0][0]
    per_layer = alignment.groupby(["module", "layer"], sort=True).alignment.sum().reset_index()
    for module, rows in per_layer.groupby("module", sort=False):
        ax.plot(rows.layer, rows.alignment, marker="o", ms=3, color=module_color(module), label=module_label(module))
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("Σ_u ⟨∇L_u, ∇L_test⟩")
    integer_ticks(ax.xaxis)
    ax.legend()
    ax.grid(alpha=0.3)
    figure_title(fig, title)
    return _save(fig, path)


def loss_band_figure(stats: pd.DataFrame, path: Path, title: str) -> Path:
    """Held-out loss over all test items per ordering over steps, across seeds: the mean in a min–max band.
    `stats`: a `dynamics.seeds.across_seeds` table by (`ordering`, `step`) of the loss."""
    fig, axes = grid(1, 1, panel=(6.0, 3.8))
    ax = axes[0][0]
    for ordering in _orderings(stats):
        band_curve(ax, stats[stats.ordering == ordering], ordering_color(ordering))
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out loss (all tasks)")
    integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    figure_legend(fig, _ordering_handles(_orderings(stats)))
    n_seeds = int(stats.n_seeds.max()) if len(stats) else 0
    figure_title(fig, title, f"mean over {n_seeds} seeds, band: min–max over seeds")
    return _save(fig, path)


def metrics_figure(losses: pd.DataFrame, metrics: pd.DataFrame, path: Path, title: str) -> Path:
    """A row per metric (loss, ROUGE-1, ROUGE-L, exact match, reward where measured): left, its value over all
    test items per ordering; right, how alike the test tasks rank the orderings by it (Kendall's W) and the share
    of (task, ordering) pairs improved since step 0 — a stable metric keeps both high."""
    from matplotlib.lines import Line2D

    stability = stability_table(losses, metrics)
    names = list(dict.fromkeys(stability.metric))
    values = {"loss": losses.rename(columns={"loss": "value"})}
    values |= {m: metrics.rename(columns={m: "value"}) for m in names if m != "loss"}
    fig, axes = grid(len(names), 2, panel=(4.8, 2.4))
    for r, metric in enumerate(names):
        left, right = axes[r]
        part = values[metric][values[metric].task == ALL_TASKS]
        for ordering, rows in part.groupby("ordering", sort=False):
            rows = rows.sort_values("step")
            left.plot(rows.step, rows.value, marker="o", ms=3, color=ordering_color(ordering))
        left.set_ylabel(METRIC_LABELS.get(metric, metric))
        rows = stability[stability.metric == metric].sort_values("step")
        right.plot(rows.step, rows.rank_agreement, marker="o", ms=3, color="black")
        right.plot(rows.step, rows.improved_share, ls="--", marker="s", ms=3, color="grey")
        right.set_ylim(-0.05, 1.05)
        right.set_xlim(left.get_xlim())  # the same steps as the values beside it (W has none at step 0)
        if r == 0:
            panel_title(left, "all held-out tasks, per ordering")
            panel_title(right, "agreement across tasks")
        for ax in (left, right):
            integer_ticks(ax.xaxis)
            ax.grid(alpha=0.3)
            if r == len(names) - 1:
                ax.set_xlabel("training step")
    handles = [*_ordering_handles(_orderings(losses)),
               Line2D([], [], color="black", marker="o", ms=4, label="Kendall's W of the orderings' ranks"),
               Line2D([], [], color="grey", ls="--", marker="s", ms=4, label="share of task × ordering improved")]
    figure_legend(fig, handles)
    figure_title(fig, title, "W: 1 = every test task ranks the orderings alike; none at step 0, where all start alike")
    return _save(fig, path)
