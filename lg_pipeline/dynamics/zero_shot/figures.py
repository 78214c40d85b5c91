"""Figures of zero-shot dynamics: held-out loss vs step per ordering, seen-data distance, None vs Detailed CoT.

Each takes the run tables (`zero_shot`, `seen_distance`; a `level` column where levels are compared) and writes
one PNG atomically. An ordering has one colour in every figure; axis limits come from the data.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from lg_pipeline.analysis.plotting import module_color
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS
from lg_pipeline.io.atomic import atomic_write_bytes
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
}
SEEN_METRICS = ("min", "avg", "max", "centroid")


def ordering_color(name: str) -> str:
    return f"C{ORDERINGS.index(name)}" if name in ORDERINGS else "black"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _panels(n: int, rows: int = 1, size: tuple[float, float] = (4.2, 3.2)):
    plt = _pyplot()
    fig, axes = plt.subplots(rows, n, figsize=(size[0] * n, size[1] * rows), squeeze=False)
    return fig, axes


def _task_order(frame: pd.DataFrame, column: str) -> list[str]:
    tasks = [t for t in dict.fromkeys(frame[column]) if t != ALL_TASKS]
    return [ALL_TASKS, *tasks] if ALL_TASKS in set(frame[column]) else tasks


def loss_figure(losses: pd.DataFrame, path: Path, title: str) -> Path:
    """One panel for all test items, then one per test task; a line per ordering."""
    tasks = _task_order(losses, "task")
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes[0], tasks, strict=True):
        part = losses[losses.task == task]
        for ordering, rows in part.groupby("ordering", sort=False):
            rows = rows.sort_values("step")
            ax.plot(rows.step, rows.loss, marker="o", ms=3, color=ordering_color(ordering),
                    label=ORDERING_LABELS.get(ordering, ordering))
        ax.set_title("All held-out tasks" if task == ALL_TASKS else task)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out loss")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, y=1.03)
    return _save(fig, path)


def seen_distance_figure(seen: pd.DataFrame, path: Path, title: str) -> Path:
    """Rows: min / avg / max / centroid distance of the seen training data; columns: test tasks."""
    tasks = _task_order(seen, "test_task")
    fig, axes = _panels(len(tasks), rows=len(SEEN_METRICS), size=(3.8, 2.5))
    for r, metric in enumerate(SEEN_METRICS):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            part = seen[(seen.test_task == task) & (seen.step > 0)]
            for ordering, rows in part.groupby("ordering", sort=False):
                rows = rows.sort_values("step")
                ax.plot(rows.step, rows[metric], marker="o", ms=3, color=ordering_color(ordering),
                        label=ORDERING_LABELS.get(ordering, ordering))
            if r == 0:
                ax.set_title(task)
            if c == 0:
                ax.set_ylabel(f"{metric} −cos")
            if r == len(SEEN_METRICS) - 1:
                ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, y=1.03)
    return _save(fig, path)


def level_figure(losses: pd.DataFrame, path: Path, title: str) -> Path:
    """Held-out loss (all test items) per ordering, one line per training level: None vs Detailed CoT."""
    part = losses[losses.task == ALL_TASKS]
    orderings = [o for o in ORDERINGS if o in set(part.ordering)]
    fig, axes = _panels(len(orderings))
    styles = {"none": "-", "simplified": "-.", "detailed": "--"}
    for ax, ordering in zip(axes[0], orderings, strict=True):
        for level, rows in part[part.ordering == ordering].groupby("level", sort=False):
            rows = rows.sort_values("step")
            ax.plot(rows.step, rows.loss, styles.get(level, ":"), marker="o", ms=3, color=ordering_color(ordering),
                    label=LEVEL_LABELS.get(level, level))
        ax.set_title(ORDERING_LABELS.get(ordering, ordering))
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out loss (all tasks)")
    fig.suptitle(title, y=1.03)
    return _save(fig, path)


def alignment_figure(alignment: pd.DataFrame, path: Path, title: str) -> Path:
    """Σ over training items of ⟨∇_W L_u, ∇_W L_test⟩ per layer, one line per studied module: where the gradient
    ordering's score comes from."""
    fig, axes = _panels(1, size=(6.0, 3.4))
    ax = axes[0][0]
    per_layer = alignment.groupby(["module", "layer"], sort=True).alignment.sum().reset_index()
    for module, rows in per_layer.groupby("module", sort=False):
        ax.plot(rows.layer, rows.alignment, marker="o", ms=3, color=module_color(module), label=module)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("Σ_u ⟨∇L_u, ∇L_test⟩")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(title, y=1.03)
    return _save(fig, path)
