"""Run the engine over a dataset into a resumable Parquet table, with progress and counted outcomes.

Used by the CLI and the Dagster assets alike. Results go to disk batch by batch; a
rerun after a crash skips every example already recorded as `ok` or `skipped`
(keyed by example id) and retries the ones that failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lg_pipeline.engine import EngineConfig, ExampleResult, compute_gradient_stats
from lg_pipeline.examples import Example
from lg_pipeline.schema import GRADIENT_COLUMNS, STATUS_COLUMNS
from lg_pipeline.storage import ChunkedTable

DONE = ("ok", "skipped")


def status_path(stats_path: str | Path) -> Path:
    stats_path = Path(stats_path)
    return stats_path.with_name(stats_path.stem + ".status.parquet")


@dataclass
class RunSummary:
    """What a run did: counts by outcome, and the reasons of those not `ok`."""

    n_examples: int
    counts: dict[str, int]
    resumed: int
    problems: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class Progress:
    """Examples/s and ETA, reported through any callable (print, tqdm.write, context.log.info)."""

    def __init__(self, total: int, report: Callable[[str], None], every_s: float = 5.0):
        self.total, self.report, self.every_s = total, report, every_s
        self.done, self.start, self.last = 0, time.monotonic(), 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            self.report(f"{self.done}/{self.total} examples, {rate:.2f} ex/s, ETA {eta:.0f}s")


def run_to_parquet(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    config: EngineConfig,
    out_path: str | Path,
    extra_columns: dict[str, Any] | None = None,
    report: Callable[[str], None] = print,
) -> RunSummary:
    """Compute statistics for `examples` into `out_path` (+ a `.status.parquet` outcome log)."""
    import pandas as pd

    stats_table, status_table = ChunkedTable(out_path), ChunkedTable(status_path(out_path))
    previous = status_table.read_chunks()
    done = set(previous.loc[previous.status.isin(DONE), "example_id"]) if previous is not None else set()
    todo = [e for e in examples if e.example_id not in done]
    if done:
        report(f"resuming: {len(done)} examples already done, {len(todo)} to go")
    progress = Progress(len(todo), report)
    started = time.monotonic()
    for batch in _batches(compute_gradient_stats(model, tokenizer, todo, config), config.batch_size):
        rows = [r for res in batch for r in res.rows]
        if rows:
            stats_table.append(pd.DataFrame(rows, columns=list(GRADIENT_COLUMNS)).assign(**(extra_columns or {})))
        status_table.append(
            pd.DataFrame([(r.example_id, r.status, r.reason) for r in batch], columns=list(STATUS_COLUMNS))
        )
        progress.advance(len(batch))
    status = _latest_status(status_table.read_chunks())
    ok_ids = set(status.loc[status.status == "ok", "example_id"])
    _finish(stats_table, ok_ids, extra_columns)
    status_table.finish()  # last: a crash before this leaves the chunks to resume from
    return _summary(status, len(examples), len(done), time.monotonic() - started)


def _batches(results: Iterator[ExampleResult], size: int) -> Iterator[list[ExampleResult]]:
    batch: list[ExampleResult] = []
    for res in results:
        batch.append(res)
        if len(batch) >= max(size, 1):
            yield batch
            batch = []
    if batch:
        yield batch


def _latest_status(status: Any) -> Any:
    import pandas as pd

    if status is None:
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    return status.drop_duplicates("example_id", keep="last").reset_index(drop=True)


def _finish(stats_table: ChunkedTable, ok_ids: set[str], extra_columns: dict[str, Any] | None) -> None:
    """Join chunks, keeping one copy of each `ok` example's rows (a crash may have left a duplicate)."""
    import pandas as pd

    empty = pd.DataFrame(columns=list(GRADIENT_COLUMNS)).assign(**(extra_columns or {}))
    stats_table.finish(
        keep=lambda f: f[f.example_id.isin(ok_ids)].drop_duplicates(["example_id", "parameter"], keep="last"),
        empty=empty,
    )


def _summary(status: Any, n_examples: int, resumed: int, seconds: float) -> RunSummary:
    counts = {s: int((status.status == s).sum()) for s in ("ok", "skipped", "failed")}
    problems = status[status.status != "ok"][["example_id", "status", "reason"]].to_dict("records")
    return RunSummary(n_examples, counts, resumed, problems, seconds)
