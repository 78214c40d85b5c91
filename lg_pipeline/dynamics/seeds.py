"""Runs over several seeds, for both dynamics wings: where each seed's run folder is, the loop, and the curves
across seeds (mean, sample standard deviation, min and max per step).

One rule places a seed's run: `seed_folder(out, seed)` is `<out>/seed-<seed>`, a run folder of its own, so a
seed's tables, run key and resumption are never mixed with another's. `<out>` itself then holds only seed folders
(and the figures across them); a single-seed run (`--seed`) keeps writing `<out>` itself, as before.

What a seed changes: in a learning-dynamics run the probes drawn (and the trainer's random state; training is in
the rows' order); in a zero-shot run the items drawn per task, `rt`'s shuffle and `cluster`'s task order.
Curves across seeds compare the same quantity per step: learning, the mean Δ log p since step 0 of each probe type
(the probes themselves differ by seed); zero-shot, the held-out loss over all test items per ordering.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from lg_pipeline.errors import InputError

SEED_PREFIX = "seed-"
_SEED_NAME = re.compile(re.escape(SEED_PREFIX) + r"(\d+)")
SPREAD_COLUMNS = ("mean", "std", "min", "max", "n_seeds")
ACROSS_SEEDS = "across_seeds"  # `<out>/across_seeds.parquet` (the table) and `.png` / `.pdf` (the figure)
Result = TypeVar("Result")
Runs = Sequence[tuple[int, Path]]  # (seed, run folder)


def parse_seeds(text: str, flag: str = "--seeds") -> tuple[int, ...]:
    """`"0,1,2"` -> (0, 1, 2): distinct non-negative integers, in the order given."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items or not all(s.isdigit() for s in items):
        raise InputError(f"{flag}: '{text}' is not a comma-separated list of non-negative integers (e.g. 0,1,2)")
    seeds = tuple(int(s) for s in items)
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{flag}: '{text}' names a seed twice")
    return seeds


def seed_folder(out: str | Path, seed: int) -> Path:
    """The run folder of one seed of a multi-seed run at `out`."""
    return Path(out) / f"{SEED_PREFIX}{int(seed)}"


def seed_folders(out: str | Path) -> dict[int, Path]:
    """The seed folders under `out`, by seed (in seed order); {} when there are none."""
    out = Path(out)
    found = {}
    for entry in sorted(out.iterdir()) if out.is_dir() else []:
        match = _SEED_NAME.fullmatch(entry.name)
        if match and entry.is_dir():
            found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


def check_seeds_target(out: str | Path) -> None:
    """`out` of a multi-seed run: new, or holding only seed folders and the across-seeds files (a single-seed
    run's folder is not turned into one); one line naming the folder otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file, not a folder for the seed runs")
    for entry in sorted(out.iterdir()) if out.is_dir() else []:
        seed = _SEED_NAME.fullmatch(entry.name) and entry.is_dir()
        if not (seed or entry.name.startswith(ACROSS_SEEDS + ".") or entry.name.startswith(".")):
            raise InputError(
                f"{out}: holds {entry.name!r}, which is not a seed folder ({SEED_PREFIX}N); use a new or empty folder "
                "for --seeds"
            )


def with_seed(settings: Any, seed: int) -> Any:
    """A run's settings (holding a `TrainSettings` as `train`) with `train.seed` set to `seed`."""
    return replace(settings, train=replace(settings.train, seed=int(seed)))


def for_each_seed(
    run: Callable[..., Result],
    settings: Any,
    seeds: Iterable[int],
    out: str | Path,
    *args: Any,
    report: Callable[[str], None] = print,
    **kwargs: Any,
) -> dict[int, Result]:
    """`run(with_seed(settings, s), *args, seed_folder(out, s), report=report, **kwargs)` for each seed in turn;
    every seed is its own run (its own lock, key and resumption), so a stopped loop resumes seed by seed."""
    results = {}
    for seed in seeds:
        report(f"seed {seed}: {seed_folder(out, seed)}")
        results[int(seed)] = run(with_seed(settings, seed), *args, seed_folder(out, seed), report=report, **kwargs)
    return results


def across_seeds(frame: Any, by: list[str], value: str) -> Any:
    """Per `by` group (the step and what a curve is of), `value` across the `seed` column: mean, sample standard
    deviation (ddof 1; NaN for one seed), min, max and the number of seeds."""
    grouped = frame.groupby(by, sort=True)[value]
    stats = grouped.agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "n_seeds"})
    return stats.reset_index()


def across_seeds_base(out: str | Path) -> Path:
    """Where a multi-seed run at `out` keeps its table and figure across seeds (`.parquet`, `.png`, `.pdf`)."""
    return Path(out) / ACROSS_SEEDS


def _read(runs: Runs, table: Callable[[Path], Path]) -> Any:
    import pandas as pd

    frames = [pd.read_parquet(table(folder)).assign(seed=seed) for seed, folder in runs if table(folder).is_file()]
    if not frames:
        where = sorted({str(Path(f).parent) for _, f in runs}) or ["the given folders"]
        raise InputError(f"no finished seed run under {', '.join(where)}")
    return pd.concat(frames, ignore_index=True)


def probe_type_curves(runs: Runs) -> Any:
    """Per seed, probe type and eval step: the mean over that seed's probes of Δ log p since step 0, summed over
    the response (`change`) and per response token (`change_per_token`)."""
    from lg_pipeline.dynamics.learning.figures import logprob_changes
    from lg_pipeline.dynamics.learning.run import learning_run

    frame = logprob_changes(_read(runs, lambda f: learning_run(f).table("logprobs")))
    keys = ["seed", "probe_type", "step"]
    return frame.groupby(keys, as_index=False)[["change", "change_per_token"]].mean()


def ordering_curves(runs: Runs) -> Any:
    """Per seed, ordering and eval step: the held-out loss over all test items (a run may hold several
    orderings, and an ordering's seeds may sit in several folders)."""
    from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
    from lg_pipeline.dynamics.zero_shot.run import zero_shot_run

    frame = _read(runs, lambda f: zero_shot_run(f).table("zero_shot"))
    return frame[frame.task == ALL_TASKS][["seed", "ordering", "step", "loss"]].reset_index(drop=True)


def _inputs(runs: Runs, table: Callable[[Path], Path]) -> dict[str, Any]:
    """Each seed's table this one is computed from, with its run key (the manifest's `inputs`)."""
    from lg_pipeline.io.manifest import read_manifest

    return {str(table(f)): (read_manifest(table(f)) or {}).get("run_key") for _, f in runs}


def learning_across_seeds(runs: Runs, out_base: str | Path, title: str) -> tuple[Path, Path, Any]:
    """Learning-dynamics runs (seed, folder) across seeds: the table (per change, probe type and step) as
    `<out_base>.parquet` and the band figure as `<out_base>.png`; returns (table, figure, table frame)."""
    import pandas as pd

    from lg_pipeline.dynamics.learning.figures import CHANGES, plot_logprob_band
    from lg_pipeline.dynamics.learning.run import learning_run
    from lg_pipeline.io.atomic import write_parquet

    runs = list(runs)
    curves = probe_type_curves(runs)
    stats = {c: across_seeds(curves, ["probe_type", "step"], c) for c in CHANGES}
    table = pd.concat([f.assign(quantity=c) for c, f in stats.items()], ignore_index=True)
    settings = [learning_run(f).read_settings() or {} for _, f in runs]
    objective = (settings[0].get("config") or {}).get("objective", "sft") if settings else "sft"
    logprobs = lambda f: learning_run(f).table("logprobs")  # noqa: E731
    seeds = sorted({s for s, _ in runs})
    manifest = {"kind": f"dynamics.{ACROSS_SEEDS}", "seeds": seeds, "inputs": _inputs(runs, logprobs)}
    path = write_parquet(table, Path(f"{out_base}.parquet"), manifest)
    figure = plot_logprob_band(stats, title, Path(out_base), objective)
    return path, figure, table


def zero_shot_across_seeds(runs: Runs, out_base: str | Path, title: str) -> tuple[Path, Path, Any]:
    """Zero-shot runs (seed, folder) across seeds: the table (per ordering and step, held-out loss over all test
    items) as `<out_base>.parquet` and the band figure as `<out_base>.png`; returns (table, figure, table frame)."""
    from lg_pipeline.dynamics.zero_shot.figures import loss_band_figure
    from lg_pipeline.dynamics.zero_shot.run import zero_shot_run
    from lg_pipeline.io.atomic import write_parquet

    runs = list(runs)
    table = across_seeds(ordering_curves(runs), ["ordering", "step"], "loss")
    losses = lambda f: zero_shot_run(f).table("zero_shot")  # noqa: E731
    seeds = sorted({s for s, _ in runs})
    manifest = {"kind": f"zero_shot.{ACROSS_SEEDS}", "seeds": seeds, "inputs": _inputs(runs, losses)}
    path = write_parquet(table, Path(f"{out_base}.parquet"), manifest)
    figure = loss_band_figure(table, Path(f"{out_base}.png"), title)
    return path, figure, table


def spread_text(table: Any, by: list[str]) -> str:
    """The across-seeds table as text: `mean ± std [min, max] (n seeds)` per group, one line each."""
    lines = []
    for row in table.itertuples(index=False):
        name = " ".join(str(getattr(row, k)) for k in by)
        std = "n/a" if row.std != row.std else f"{row.std:.4f}"
        lines.append(f"{name}: {row.mean:.4f} ± {std} [{row.min:.4f}, {row.max:.4f}] ({row.n_seeds} seeds)")
    return "\n".join(lines)
