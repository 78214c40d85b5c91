"""Run the engine over a dataset into a resumable Parquet table, with progress and counted outcomes.

Used by the CLI and the Dagster assets alike. Results go to disk batch by batch; a
rerun, after a crash or a finished run, skips every example already recorded as `ok`
or `skipped` (keyed by example id) and retries the ones that failed. Earlier work is
reused only if it was computed the same way (engine version, model, targets,
max_length, chat, extra columns: `<out>.run.json`); otherwise the run starts afresh.
The finished table holds exactly the examples of the current call.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lg_pipeline.example import Example
from lg_pipeline.gradients.engine import ENGINE_VERSION, EngineConfig, ExampleResult, compute_gradient_stats
from lg_pipeline.io.atomic import ChunkedTable, atomic_write_bytes, atomic_write_text
from lg_pipeline.schema import GRADIENT_COLUMNS, STATUS_COLUMNS


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
    """One line per finished example (k/N, id, tokens, outcome, examples/s, ETA), through any callable (print,
    tqdm.write, context.log.info). The engine finishes a batch's examples together, so lines come per batch;
    `start` says beforehand how many examples and batches there are, so a long first batch is not silent.
    """

    def __init__(self, total: int, report: Callable[[str], None]):
        self.total, self.report = total, report
        self.done, self.start_time = 0, time.monotonic()

    def start(self, batch_size: int) -> None:
        batches = -(-self.total // max(batch_size, 1))
        self.report(f"computing {self.total} examples in {batches} batch(es) of up to {batch_size}")

    def advance(self, results: list[ExampleResult]) -> None:
        for res in results:
            self.done += 1
            elapsed = max(time.monotonic() - self.start_time, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate
            tokens = f"{res.rows[0]['n_tokens']} tokens" if res.rows and "n_tokens" in res.rows[0] else "no tokens"
            outcome = "" if res.status == "ok" else f", {res.status}"
            self.report(
                f"example {self.done}/{self.total} ({res.example_id}): {tokens}{outcome}, "
                f"{rate:.3f} ex/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
            )


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
    _prepare(stats_table, status_table, _run_key(model, config, extra_columns))
    wanted = {e.example_id for e in examples}
    done = _done_ids(stats_table, status_table) & wanted
    todo = [e for e in examples if e.example_id not in done]
    if done:
        report(f"resuming: {len(done)} examples already done, {len(todo)} to go")
    progress = Progress(len(todo), report)
    progress.start(config.batch_size)
    started = time.monotonic()
    for batch in _batches(compute_gradient_stats(model, tokenizer, todo, config), config.batch_size):
        rows = [r for res in batch for r in res.rows]
        if rows:
            stats_table.append(pd.DataFrame(rows, columns=list(GRADIENT_COLUMNS)).assign(**(extra_columns or {})))
        status_table.append(
            pd.DataFrame([(r.example_id, r.status, r.reason) for r in batch], columns=list(STATUS_COLUMNS))
        )
        progress.advance(batch)
    # Latest outcome per example (failed, then ok on a rerun, is ok), for this call's examples only.
    status = _latest_status(status_table.read_chunks(), wanted)
    ok_ids = set(status.loc[status.status == "ok", "example_id"])
    _finish(stats_table, ok_ids, extra_columns)
    status_table.finish(keep=lambda f: _latest_status(f, wanted))  # last: a crash before this leaves the chunks
    return _summary(status, len(examples), len(done), time.monotonic() - started)


def _run_key(model: Any, config: EngineConfig, extra_columns: dict[str, Any] | None) -> str:
    """What makes earlier numbers reusable (batch size and method change nothing: the methods agree)."""
    key = {
        "engine": ENGINE_VERSION,
        "model": f"{type(model).__name__}:{getattr(model, 'name_or_path', '')}",
        "targets": list(config.targets),
        "max_length": config.max_length,
        "chat": config.chat,
        "extra": {k: str(v) for k, v in (extra_columns or {}).items()},
    }
    return json.dumps(key, sort_keys=True)


def _prepare(stats_table: ChunkedTable, status_table: ChunkedTable, key: str) -> None:
    """Reopen earlier work done the same way; drop any done another way so it is never mixed in."""
    key_file = stats_table.path.with_name(stats_table.path.stem + ".run.json")
    same = key_file.is_file() and key_file.read_text() == key
    for table in (stats_table, status_table):  # statistics first: status alone never vouches for missing rows
        if same:
            _reopen(table)
        else:
            shutil.rmtree(table.parts, ignore_errors=True)
            table.path.unlink(missing_ok=True)
    atomic_write_text(key_file, key)


def _reopen(table: ChunkedTable) -> None:
    """Copy a finished table in as chunk 0, so a rerun resumes from it (the file stays readable meanwhile)."""
    if table.path.is_file() and not table.chunks():
        atomic_write_bytes(table.parts / "chunk-000000.parquet", table.path.read_bytes())


def _done_ids(stats_table: ChunkedTable, status_table: ChunkedTable) -> set[str]:
    """Examples finished earlier: `skipped`, or `ok` with their rows on disk."""
    status = _latest_status(status_table.read_chunks())
    stats = stats_table.read_chunks()
    with_rows = set(stats.example_id) if stats is not None else set()
    ok = set(status.loc[status.status == "ok", "example_id"]) & with_rows
    return ok | set(status.loc[status.status == "skipped", "example_id"])


def _batches(results: Iterator[ExampleResult], size: int) -> Iterator[list[ExampleResult]]:
    batch: list[ExampleResult] = []
    for res in results:
        batch.append(res)
        if len(batch) >= max(size, 1):
            yield batch
            batch = []
    if batch:
        yield batch


def _latest_status(status: Any, wanted: set[str] | None = None) -> Any:
    """Each example's last outcome (optionally only the `wanted` examples)."""
    import pandas as pd

    if status is None:
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    latest = status.drop_duplicates("example_id", keep="last")
    if wanted is not None:
        latest = latest[latest.example_id.isin(wanted)]
    return latest.reset_index(drop=True)


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
