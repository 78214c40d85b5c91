"""Is a learning-dynamics run complete and finite? And how well does the prediction match the measurement?"""

from __future__ import annotations

from pathlib import Path

from lg_pipeline.dynamics.learning.callback import TABLES, is_eval_step
from lg_pipeline.dynamics.learning.influence import r_squared

# Tables a run always writes rows to; the kernel and batch statistics need labelled batches (not DPO).
ALWAYS = ("logprobs", "influence", "influence_summary", "train_log")


def expected_eval_steps(steps: int, eval_every: int) -> list[int]:
    return [s for s in range(steps) if is_eval_step(s, eval_every)]


def completeness_failures(out_dir: str | Path, steps: int, eval_every: int, objective: str = "sft") -> list[str]:
    """One line per problem: a missing table, an eval step or probe without rows, a non-finite number."""
    import numpy as np
    import pandas as pd

    out = Path(out_dir)
    needed = [*ALWAYS, *(t for t in TABLES if t not in ALWAYS and objective == "sft")]
    missing = [t for t in ("probes", *needed) if not (out / f"{t}.parquet").is_file()]
    if missing:
        return [f"missing table(s): {', '.join(missing)}"]
    failures = []
    probes = set(pd.read_parquet(out / "probes.parquet").probe_id)
    summary = pd.read_parquet(out / "influence_summary.parquet")
    logprobs = pd.read_parquet(out / "logprobs.parquet")
    for step in expected_eval_steps(steps, eval_every):
        seen = set(summary.probe_id[summary.step == step])
        if seen != probes:
            failures.append(f"eval step {step}: {len(probes - seen)} of {len(probes)} probes without a summary")
        for s in (step, step + 1):
            if set(logprobs.probe_id[logprobs.step == s]) != probes:
                failures.append(f"logprobs at step {s}: not every probe measured")
    train_log = pd.read_parquet(out / "train_log.parquet")
    if sorted(train_log.step) != list(range(steps)):
        failures.append(f"train_log: {len(train_log)} rows for {steps} steps")
    for table in needed:
        frame = pd.read_parquet(out / f"{table}.parquet")
        numbers = frame.select_dtypes("number")
        bad = ~np.isfinite(numbers.to_numpy(dtype=float))
        if bad.any():
            columns = sorted({numbers.columns[j] for j in np.argwhere(bad)[:, 1]})
            failures.append(f"{table}: {int(bad.sum())} non-finite value(s) in {', '.join(columns)}")
    return failures


def agreement(out_dir: str | Path) -> float:
    """R² of measured by predicted change over every (eval step, probe) of the run."""
    import pandas as pd

    frame = pd.read_parquet(Path(out_dir) / "influence_summary.parquet")
    return r_squared(frame.predicted_delta, frame.measured_delta)
