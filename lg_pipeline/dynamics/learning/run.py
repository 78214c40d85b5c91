"""A learning-dynamics run: fine-tune with `DynamicsCallback`, tables written per eval step, resumable.

Each eval step's tables are appended atomically as chunks (`<table>.parquet.parts/`), the
summary last, so a step counts as done once its `influence_summary` chunk exists. A rerun into
the same folder replays the training steps (same data order, seed and optimizer: the same
weights) and measures only the eval steps not done yet; `finish` joins the chunks.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lg_pipeline.dynamics.learning.callback import TABLES, DynamicsCallback
from lg_pipeline.dynamics.learning.influence import r_squared
from lg_pipeline.dynamics.learning.probes import PROBE_COLUMNS, Probe
from lg_pipeline.dynamics.training import TrainConfig, fine_tune
from lg_pipeline.example import Example
from lg_pipeline.io.atomic import ChunkedTable, atomic_write_text, write_parquet

# Rows that identify one value of each table (a replayed step overwrites, never duplicates).
KEYS: dict[str, tuple[str, ...]] = {
    "logprobs": ("step", "probe_id"),
    "influence": ("step", "probe_id", "parameter"),
    "influence_summary": ("step", "probe_id"),
    "kernel": ("step", "probe_id", "example_id", "layer", "module"),
    "train_log": ("step",),
    "train_gradient_stats": ("step", "example_id", "parameter"),
}
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"  # the settings the finished steps were measured with


@dataclass(frozen=True)
class DynamicsSummary:
    """What a run measured: R² of predicted vs measured over every (eval step, probe), and per step."""

    steps: int
    eval_steps: list[int]
    n_probes: int
    r2: float
    r2_by_step: dict[str, float]
    resumed_steps: list[int]
    skipped_examples: dict[str, str]
    skipped_probes: dict[str, str]


class StepStore:
    """The run folder: one chunked table per output, probes.parquet and summary.json."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.tables = {t: ChunkedTable(self.dir / f"{t}.parquet") for t in TABLES}

    def start(self, fingerprint: dict[str, Any]) -> None:
        """Keep finished steps only if they came from the same run settings; otherwise start over."""
        path = self.dir / RUN_FILE
        if path.is_file() and json.loads(path.read_text()) != fingerprint:
            for table in self.tables.values():
                shutil.rmtree(table.parts, ignore_errors=True)
        atomic_write_text(path, json.dumps(fingerprint, indent=1, sort_keys=True))

    def done_steps(self) -> set[int]:
        frame = self.tables["influence_summary"].read_chunks()
        return set() if frame is None else {int(s) for s in frame["step"].unique()}

    def append(self, table: str, frame: Any) -> None:
        if len(frame):
            self.tables[table].append(frame)

    def finish(self) -> None:
        import pandas as pd

        for name, table in self.tables.items():
            keys = list(KEYS[name])
            keep = lambda f, keys=keys: f.drop_duplicates(keys, keep="last").sort_values(keys)  # noqa: E731
            table.finish(keep, empty=pd.DataFrame(columns=keys))


def write_probes(probes: Sequence[Probe], out_dir: str | Path) -> Path:
    import pandas as pd

    frame = pd.DataFrame([asdict(p) for p in probes], columns=list(PROBE_COLUMNS))
    return write_parquet(frame, Path(out_dir) / "probes.parquet")


def run_dynamics(
    model: Any,
    tokenizer: Any,
    train: Sequence[Example],
    probes: Sequence[Probe],
    config: TrainConfig,
    out_dir: str | Path,
    eval_every: int = 5,
    rejected: Sequence[Example] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DynamicsSummary:
    """Train and measure into `out_dir` (resuming a stopped run there); returns the R² summary."""
    store = StepStore(out_dir)
    store.dir.mkdir(parents=True, exist_ok=True)
    store.start(_fingerprint(config, eval_every, probes, train, rejected))
    write_probes(probes, out_dir)
    done = store.done_steps()
    callback = DynamicsCallback(
        tokenizer,
        probes,
        eval_every=eval_every,
        chat=config.chat,
        max_length=config.max_length,
        sink=store.append,
        done_steps=done,
        train_examples=train,
        batch_measurements=config.objective == "sft",
        progress=progress,
    )
    result = fine_tune(model, tokenizer, train, config, callbacks=[callback], rejected=rejected)
    store.finish()
    summary = summarize(out_dir, result.steps, len(probes), sorted(done), result.skipped, callback.skipped_probes)
    atomic_write_text(store.dir / SUMMARY_FILE, json.dumps(_no_nan(asdict(summary)), indent=2))
    return summary


def summarize(out_dir, steps, n_probes, resumed, skipped_examples, skipped_probes) -> DynamicsSummary:
    import pandas as pd

    frame = pd.read_parquet(Path(out_dir) / "influence_summary.parquet")
    by_step = {str(int(s)): r_squared(g["predicted_delta"], g["measured_delta"]) for s, g in frame.groupby("step")}
    return DynamicsSummary(
        steps=steps,
        eval_steps=sorted(int(s) for s in frame["step"].unique()),
        n_probes=n_probes,
        r2=r_squared(frame["predicted_delta"], frame["measured_delta"]),
        r2_by_step=by_step,
        resumed_steps=resumed,
        skipped_examples=dict(skipped_examples),
        skipped_probes=dict(skipped_probes),
    )


def _fingerprint(config, eval_every, probes, train, rejected) -> dict[str, Any]:
    from lg_pipeline.example import stable_id

    rows = [stable_id(e.example_id, e.instruction, e.response) for e in train]
    wrong = [stable_id(e.example_id, e.response) for e in rejected] if rejected is not None else None
    return {
        "config": asdict(config),
        "eval_every": eval_every,
        "probes": [p.probe_id for p in probes],
        "train": stable_id(*rows),
        "rejected": stable_id(*wrong) if wrong else None,
    }


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: an undefined R² (probes that did not move) is written as null."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
