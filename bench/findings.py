"""The numbers behind each paper's headline finding, read from an output root and printed as Markdown.

Learning dynamics (Ren & Sutherland), per run under the root (`OutputStore.dynamics_runs`): per probe type the mean
change of log p from step 0 to the last measured step (summed and per response token; under DPO `trained` is the
chosen and `wrong` the rejected response), the change of the probability concentration (mean max-token probability,
entropy: squeezing shows as the first rising, the second falling), the predicted change summed over the eval steps
and its chosen / rejected shares, the greedy responses decoded again at the last step (`greedy_now`), and R² of
predicted vs measured. Each run's completeness check is named beside it (`check_run_folder`).

Zero-shot dynamics (the thunlp paper), per model and training level (`OutputStore.zero_shot_runs`): the held-out
loss over all test items per ordering at the first and the last eval step, and each ordering's rank at every eval
step; where a run has generation metrics (a `generation_metrics` table: ROUGE-1, ROUGE-L, exact match, ...; read by
column name), every metric's change per task between the first and the last eval step and its spread across tasks
(does the loss move alike on every task where the generation metrics do not?); where multi-seed runs exist
(`OutputStore.zero_shot_seed_runs`), the last step's loss per ordering across seeds. What is absent is skipped with
one line saying so.

`--dynamics-run DIR` and `--zero-shot-run DIR` add run folders written elsewhere (a CLI run's `--out`).

    .venv/bin/python bench/findings.py [--root outputs] [--dynamics-run DIR ...] [--zero-shot-run DIR ...]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

SCORE_NAMES = ("rouge1", "rougeL", "exact_match", "reward")  # generation metrics, higher is better, where present
ALL_TASKS = "__all__"  # lg_pipeline.dynamics.zero_shot.held_out: the mean over every test item


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from assets.resources import DEFAULT_OUTPUT_ROOT

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=DEFAULT_OUTPUT_ROOT, help="the output root (`make demo` writes outputs/)")
    p.add_argument("--dynamics-run", action="append", default=[], metavar="DIR",
                   help="a learning-dynamics run folder outside the root (`lg-pipeline dynamics --out`)")
    p.add_argument("--zero-shot-run", action="append", default=[], metavar="DIR",
                   help="a zero-shot run folder outside the root (`lg-pipeline zero-shot --out`)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ markdown
def md_table(frame: pd.DataFrame) -> list[str]:
    """A DataFrame as Markdown lines (floats to 4 significant digits, NaN as "–")."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return [head, rule, *("| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False))]


# ------------------------------------------------------------------------------------------------ learning
def probe_type_changes(logprobs: pd.DataFrame, summary: pd.DataFrame, objective: str) -> pd.DataFrame:
    """Per probe type: mean change since step 0 to the last measured step (log p summed and per token, max-token
    probability, entropy), and the predicted change summed over the eval steps with its chosen and rejected shares."""
    from lg_pipeline.analysis.curves import ordered
    from lg_pipeline.dynamics.learning.figures import PROBE_TYPES, logprob_changes, probe_label

    frame = logprob_changes(logprobs).sort_values("step")
    first = frame.groupby("probe_id").first()
    last = frame.groupby("probe_id").last()
    per_probe = pd.DataFrame({
        "probe_type": last.probe_type,
        "change": last.change,
        "change_per_token": last.change_per_token,
        "max_prob": last.max_prob_mean - first.max_prob_mean,
        "entropy": last.entropy_mean - first.entropy_mean,
    })
    shares = summary.groupby("probe_id")[["predicted_delta", "chosen_share", "rejected_share"]].sum(min_count=1)
    per_probe = per_probe.join(shares)
    rows = []
    for probe_type in ordered(per_probe.probe_type, PROBE_TYPES):
        part = per_probe[per_probe.probe_type == probe_type]
        rows.append({
            "probe": probe_label(probe_type, [objective]),
            "n": len(part),
            "Δ log p": part.change.mean(),
            "Δ log p / token": part.change_per_token.mean(),
            "Δ max prob": part.max_prob.mean(),
            "Δ entropy": part.entropy.mean(),
            "predicted Σ": part.predicted_delta.mean(),
            "chosen share Σ": part.chosen_share.mean(),
            "rejected share Σ": part.rejected_share.mean(),
        })
    return pd.DataFrame(rows)


def greedy_line(greedy_now: pd.DataFrame) -> str | None:
    """How the model's own greedy responses fared: still the step-0 response at the last step, and their log p."""
    if greedy_now is None or greedy_now.empty:
        return None
    first, last = greedy_now.step.min(), greedy_now.step.max()
    start, end = greedy_now[greedy_now.step == first], greedy_now[greedy_now.step == last]
    same = float(end.same_as_start.astype(bool).mean())
    return (f"greedy now (decoded again at each eval step): at step {last} {same:.0%} of {len(end)} prompts still give "
            f"the step-0 response; mean log p per token of the response decoded then {start.logp_mean.mean():.4g} "
            f"(step {first}) → {end.logp_mean.mean():.4g} (step {last}), max-token probability "
            f"{start.max_prob_mean.mean():.4g} → {end.max_prob_mean.mean():.4g}")


def learning_run_lines(name: str, folder: Path, tables: dict[str, pd.DataFrame], objective: str) -> list[str]:
    from lg_pipeline.dynamics.learning.checks import check_run_folder
    from lg_pipeline.dynamics.learning.influence import r_squared

    summary, logprobs = tables["influence_summary"], tables["logprobs"]
    report = check_run_folder(folder)
    verdict = "passed" if report.passed else "failed: " + ", ".join(report.failed_rules())
    r2 = r_squared(summary.predicted_delta, summary.measured_delta)
    steps = sorted(int(s) for s in summary.step.unique())
    lines = [f"### {name}", "",
             f"{objective.upper()}, eval steps {steps}, last measured step {int(logprobs.step.max())}, "
             f"{logprobs.probe_id.nunique()} probes; R² of predicted vs measured {r2:.4f}; check {verdict}", ""]
    lines += md_table(probe_type_changes(logprobs, summary, objective))
    said = greedy_line(tables.get("greedy_now"))
    return [*lines, *([] if said is None else ["", said]), ""]


def learning_findings(store: Any, extra: Sequence[Path] = ()) -> list[str]:
    """Every run under the root (named by model|variant and objective), then the `extra` run folders (by path)."""
    lines = ["## Learning dynamics", "",
             "Δ: from step 0 to the last measured step, mean over the type's probes; Σ: over the eval steps."]
    runs = [(f"{key} {objective}", store.dynamics(key, objective), objective)
            for key, objective in store.dynamics_runs()]
    runs += [(str(folder), Path(folder), _objective(folder)) for folder in extra]
    if not runs:
        return [*lines, "", f"no learning-dynamics run under {store.root}", ""]
    lines.append("")
    from lg_pipeline.dynamics.learning.run import learning_run

    for name, folder, objective in runs:
        files = learning_run(folder)
        tables = {t: _read(files.table(t)) for t in ("logprobs", "influence_summary", "greedy_now")}
        if tables["logprobs"] is None or tables["influence_summary"] is None:
            lines += [f"### {name}", "", "tables missing: skipped", ""]
            continue
        lines += learning_run_lines(name, folder, tables, objective)
    return lines


def _objective(folder: Path) -> str:
    """A learning-dynamics run's objective, from its settings file (SFT where it says none)."""
    import json

    from lg_pipeline.dynamics.learning.checks import setting
    from lg_pipeline.dynamics.learning.run import learning_run

    try:
        record = json.loads(learning_run(folder).settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    return str(setting(record, "objective") or "sft")


# ------------------------------------------------------------------------------------------------ zero-shot
def loss_by_ordering(losses: pd.DataFrame) -> pd.DataFrame:
    """Per ordering: the held-out loss over all test items at the first and the last eval step, its change, and
    the ordering's rank (1 = lowest loss) at every eval step."""
    total = losses[losses.task == ALL_TASKS].drop_duplicates(["ordering", "step"])
    wide = total.pivot(index="step", columns="ordering", values="loss").sort_index()
    ranks = wide.rank(axis=1, method="min")
    first, last = wide.index.min(), wide.index.max()
    rows = [{
        "ordering": o,
        f"loss step {first}": wide.at[first, o],
        f"loss step {last}": wide.at[last, o],
        "change %": 100 * (wide.at[last, o] / wide.at[first, o] - 1),
        "rank per eval step": " ".join(str(int(r)) if r == r else "–" for r in ranks[o]),
    } for o in wide.columns]
    return pd.DataFrame(rows).sort_values(f"loss step {last}", kind="stable").reset_index(drop=True)


def metric_spread(losses: pd.DataFrame, metrics: pd.DataFrame | None) -> pd.DataFrame:
    """Per ordering and metric (the loss and every generation metric present): the change of each test task's value
    from the first to the last eval step, its mean, standard deviation and coefficient of variation across tasks,
    and the share of tasks that improved (loss down, scores up)."""
    frames = [("loss", losses)]
    if metrics is not None and len(metrics):
        frames += [(m, metrics.rename(columns={m: "value"})) for m in SCORE_NAMES if m in metrics.columns]
    rows = []
    for metric, frame in frames:
        frame = frame.rename(columns={"loss": "value"}) if metric == "loss" else frame
        per_task = frame[frame.task != ALL_TASKS].drop_duplicates(["ordering", "step", "task"])
        for ordering, part in per_task.groupby("ordering", sort=True):
            wide = part.pivot(index="step", columns="task", values="value").sort_index()
            change = wide.iloc[-1] - wide.iloc[0]
            better = change < 0 if metric == "loss" else change > 0
            mean, std = float(change.mean()), float(change.std(ddof=1)) if len(change) > 1 else math.nan
            rows.append({"metric": metric, "ordering": ordering, "tasks": len(change),
                         f"mean step {wide.index[0]}": float(wide.iloc[0].mean()),
                         "mean last": float(wide.iloc[-1].mean()), "change mean": mean, "change std": std,
                         "change CV": std / abs(mean) if mean else math.nan, "tasks improved": float(better.mean())})
    return pd.DataFrame(rows)


def across_seeds(per_seed: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per ordering: the last eval step's held-out loss over all test items, its mean, sample standard deviation,
    min and max across seeds, and in how many seeds it was the lowest."""
    last = {}
    for seed, losses in per_seed.items():
        total = losses[losses.task == ALL_TASKS]
        at_end = total[total.step == total.step.max()].drop_duplicates("ordering")
        last[seed] = at_end.set_index("ordering").loss
    wide = pd.DataFrame(last)  # ordering × seed
    best = wide.idxmin(axis=0)
    rows = [{"ordering": o, "seeds": int(wide.loc[o].notna().sum()), "mean": wide.loc[o].mean(),
             "std": wide.loc[o].std(ddof=1), "min": wide.loc[o].min(), "max": wide.loc[o].max(),
             "lowest in": int((best == o).sum()),
             **{f"seed {s}": wide.at[o, s] for s in wide.columns}} for o in wide.index]
    return pd.DataFrame(rows).sort_values("mean", kind="stable").reset_index(drop=True)


def zero_shot_findings(store: Any, extra: Sequence[Path] = ()) -> list[str]:
    """Single-seed runs per model and level; multi-seed runs per model, level and seed, then across their seeds;
    then the `extra` run folders, each on its own."""
    single: dict[str, list[Path]] = {}  # title -> run folders
    for model, level, ordering in store.zero_shot_runs():
        single.setdefault(f"{model}, {level} CoT", []).append(store.zero_shot(model, level, ordering))
    for folder in extra:
        single[str(folder)] = [Path(folder)]
    seeded: dict[tuple[str, str], dict[int, list[Path]]] = {}
    seed_runs = getattr(store, "zero_shot_seed_runs", None)  # absent before multi-seed runs existed
    for model, level, _, seed, folder in seed_runs() if seed_runs is not None else []:
        seeded.setdefault((model, level), {}).setdefault(seed, []).append(folder)
    lines = ["## Zero-shot dynamics", ""]
    if not single and not seeded:
        lines += [f"no zero-shot run under {store.root}", ""]
    for title, folders in single.items():
        lines += zero_shot_run_lines(title, folders)[0]
    if not seeded:
        lines += ["### Across seeds", "", "no multi-seed zero-shot run: skipped", ""]
    for (model, level), seeds in sorted(seeded.items()):
        per_seed = {}
        for seed, folders in sorted(seeds.items()):
            said, losses = zero_shot_run_lines(f"{model}, {level} CoT, seed {seed}", folders)
            lines += said
            if losses is not None:
                per_seed[seed] = losses
        if per_seed:
            lines += [f"### Across seeds: {model}, {level} CoT", "",
                      "Held-out loss over all test items at the last eval step:", "",
                      *md_table(across_seeds(per_seed)), ""]
    return lines


def zero_shot_run_lines(title: str, folders: Sequence[Path]) -> tuple[list[str], pd.DataFrame | None]:
    """The loss per ordering and the metrics' spread across tasks of one model, level (and seed): its run folders
    (one per ordering in the assets' layout, or one holding every ordering)."""
    losses = _concat(_zero_shot_table(f, "zero_shot") for f in folders)
    lines = [f"### {title}", ""]
    if losses is None:
        return [*lines, "no readable zero_shot table: skipped", ""], None
    lines += ["Held-out loss over all test items:", "", *md_table(loss_by_ordering(losses)), ""]
    metrics = _concat(_zero_shot_table(f, "generation_metrics") for f in folders)
    if metrics is None:
        lines += ["no generation metrics (no generation_metrics table): the loss alone", ""]
    lines += ["Change per test task, first to last eval step, across tasks:", "",
              *md_table(metric_spread(losses, metrics)), ""]
    return lines, losses


# ------------------------------------------------------------------------------------------------ reading
def _zero_shot_table(folder: Path, table: str) -> Path | None:
    """A zero-shot run folder's table, None where such runs have no such table (a version before it)."""
    from lg_pipeline.dynamics.zero_shot.run import zero_shot_run

    try:
        return zero_shot_run(folder).table(table)
    except ValueError:
        return None


def _read(path: Path | None) -> pd.DataFrame | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception:  # a torn or unreadable table is the checks' to name; here it is absent
        return None


def _concat(paths: Iterable[Path | None]) -> pd.DataFrame | None:
    frames = [f for f in map(_read, paths) if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def findings(root: str, dynamics_runs: Sequence[Path] = (), zero_shot_runs: Sequence[Path] = ()) -> list[str]:
    from assets.resources import OutputStore

    store = OutputStore(root=str(root))
    return [f"# Findings from {root}", "", *learning_findings(store, dynamics_runs),
            *zero_shot_findings(store, zero_shot_runs)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(argv) if argv is not None else None)
    flags = [("--root", args.root), *(("--dynamics-run", d) for d in args.dynamics_run),
             *(("--zero-shot-run", z) for z in args.zero_shot_run)]
    for flag, folder in flags:
        if not Path(folder).is_dir():
            print(f"findings: error: {flag} {folder}: no such folder (run `make demo` first)", file=sys.stderr)
            return 2
    print("\n".join(findings(args.root, [Path(d) for d in args.dynamics_run], [Path(z) for z in args.zero_shot_run])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
