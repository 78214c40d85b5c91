"""Run the engine over a dataset into a resumable Parquet table, with progress and counted outcomes.

Used by the CLI and the Dagster assets alike. The table, its outcomes (`<name>.status.parquet`) and its run key
(`<name>.run.json`) form one run folder (`lg_pipeline.io.run_folder`), which gives the promises every run keeps:
- **One writer per output**: a second writer is refused at once (`wait=False`, the CLI) or waits its turn
  (`wait=True`, a Dagster run).
- **Resume**: results go to disk batch by batch (statistics and outcomes, then the batch's commit marker); a rerun
  skips every example recorded as `ok` (with its rows) or `skipped`, and retries the failed ones.
- **Reuse only what was computed the same way**: the run key hashes the engine version, a fingerprint of the
  weights, their dtype, the device type, every `EngineConfig` field that changes a number, and the extra
  columns; every row carries it (with the readable provenance of `schema.PROVENANCE_COLUMNS`), and so does the
  table's run manifest (`lg_pipeline.io.manifest`: model, data, targets, the examples asked for, ...).
- **Finished work is never deleted before its replacement is complete**: a run with another key computes
  beside the old table and swaps the new one in when it finishes; an unreadable (truncated) table is recomputed
  the same way. Earlier examples not asked for this time are kept unless `prune=True`, and the run says which.
- **A write that fails** (disk full, read-only) is one line; the finished batches stay for the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError, SettingsError
from lg_pipeline.example import Example, stable_id
from lg_pipeline.gradients.capture import finite_logits
from lg_pipeline.gradients.encoding import encode, study_drops_system
from lg_pipeline.gradients.engine import ENGINE_VERSION, EngineConfig, ExampleResult, compute_gradient_stats
from lg_pipeline.gradients.targets import find_targets
from lg_pipeline.io.run_folder import RunFiles, RunFolder, RunWriter, TableSpec
from lg_pipeline.progress import UnitClock
from lg_pipeline.schema import GRADIENT_COLUMNS, PROVENANCE_COLUMNS, STATUS_COLUMNS

# EngineConfig fields that never change a number (the two methods agree; batching and threads are scheduling).
SCHEDULING_FIELDS = ("method", "batch_size", "stats_workers", "max_batch_tokens", "stats_schedule")
PARQUET_MAGIC = b"PAR1"
GRADIENT_FILES = RunFiles(
    kind="gradient",
    tables={
        "stats": TableSpec(keys=("example_id", "parameter"), order=(), kind="gradient_stats"),
        "status": TableSpec(keys=("example_id",), order=(), kind="gradient_status"),
    },
    main="stats",
)


def gradient_run(stats_path: str | Path) -> RunFolder:
    """The run folder of a statistics table: the table, its outcomes and its run key, side by side."""
    return GRADIENT_FILES.beside(stats_path)


def status_path(stats_path: str | Path) -> Path:
    return gradient_run(stats_path).table("status")


def key_path(stats_path: str | Path) -> Path:
    """The readable run key of the finished table (what it was computed with)."""
    return gradient_run(stats_path).settings_file


@dataclass
class RunSummary:
    """What a run did: counts by outcome (this call's examples), and the reasons of those not `ok`."""

    n_examples: int
    counts: dict[str, int]
    resumed: int
    problems: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    truncated: int = 0
    kept_earlier: int = 0
    pruned: int = 0
    run_key: str = ""


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


class PassProgress:
    """Lines inside a batch, before its examples' lines: at each quarter of the matrices whose gradient the backward
    reached, when the backward is done, and at each quarter of the matrices' statistics; each quarter with an ETA
    from the pace so far (the engine's `PassObserver`)."""

    QUARTERS = 4

    def __init__(self, report: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.report, self.clock = report, clock
        self.passes, self.n_examples, self.started = 0, 0, 0.0
        self._stats: UnitClock | None = None
        self._next_quarter = self._next_arrived = 1

    def _name(self) -> str:
        return f"batch {self.passes} ({self.n_examples} example{'s' if self.n_examples != 1 else ''})"

    def pass_started(self, n_examples: int) -> None:
        self.passes, self.n_examples, self.started = self.passes + 1, n_examples, self.clock()
        self._stats, self._next_quarter, self._next_arrived = None, 1, 1

    def gradients_arrived(self, done: int, total: int) -> None:
        quarter = done * self.QUARTERS // max(total, 1)
        if quarter < self._next_arrived or quarter >= self.QUARTERS:  # the last quarter: "backward done"
            return
        self._next_arrived = quarter + 1
        backward = UnitClock(total, self.clock, started=self.started)  # the forward counts in: it is the pass's
        backward.done = done
        self.report(f"{self._name()}: backward {100 * quarter // self.QUARTERS}% ({done}/{total} matrices' "
                    f"gradients), {backward.timing()}")

    def backward_done(self) -> None:
        self.report(f"{self._name()}: backward done in {self.clock() - self.started:.1f}s")
        if self._stats is None:  # after the backward: the statistics start now
            self._stats = UnitClock(0, self.clock)

    def matrices_done(self, done: int, total: int) -> None:
        if self._stats is None:  # in the hook: the statistics run with the backward
            self._stats = UnitClock(total, self.clock, started=self.started)
        quarter = done * self.QUARTERS // max(total, 1)
        if quarter < self._next_quarter:
            return
        self._next_quarter = quarter + 1
        self._stats.total, self._stats.done = total, done
        percent = 100 * quarter // self.QUARTERS
        self.report(f"{self._name()}: statistics {percent}% ({done}/{total} matrices), {self._stats.timing()}")


def check_engine_settings(config: EngineConfig) -> None:
    """Settings that would silently compute something else (`batch_size 0` as 1, `max_length -1`), all at once,
    each naming its setting (`SettingsError`; the CLI names them by its flags)."""
    problems = []
    if isinstance(config.batch_size, bool) or not isinstance(config.batch_size, int) or config.batch_size < 1:
        problems.append("{batch_size} must be at least 1, got " + repr(config.batch_size))
    if isinstance(config.max_length, bool) or not isinstance(config.max_length, int) or config.max_length < 2:
        problems.append("{max_length} must be at least 2 tokens (prompt and response), got " + repr(config.max_length))
    budget = config.max_batch_tokens
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        problems.append("{max_batch_tokens} must be at least 1, got " + repr(budget))
    if problems:
        raise SettingsError(problems)


def check_output_path(out: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    """`out` must be a new file or an existing statistics table: never an input, a folder, a device or other data.

    An existing file that starts like Parquet but cannot be read (a truncated table) passes: it is recomputed.
    """
    out = Path(out)
    if out.suffix != ".parquet":
        raise InputError(f"--out {out}: must be a .parquet statistics table")
    for path in (out, status_path(out)):
        _check_replaceable(path, inputs)
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--out {out}: {out.parent} is not a folder")
    return out


def _check_replaceable(path: Path, inputs: Sequence[str | Path]) -> None:
    import os

    if not path.exists():
        return
    if path.is_dir():
        raise InputError(f"--out {path}: is a directory, not a statistics table")
    if not path.is_file():
        raise InputError(f"--out {path}: is not a regular file (a device?); refusing to replace it")
    for source in inputs:
        if Path(source).exists() and os.path.samefile(path, source):
            raise InputError(f"--out {path}: is the input file {source}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head and head != PARQUET_MAGIC:
        raise InputError(f"--out {path}: exists and is not a Parquet table; refusing to overwrite it")
    columns = _parquet_columns(path)
    if columns is not None and not {"example_id", "status"} <= columns and not {"example_id", "parameter"} <= columns:
        raise InputError(f"--out {path}: is a Parquet file but not a statistics table; refusing to overwrite it")


def _parquet_columns(path: Path) -> set[str] | None:
    """Column names, or None when the file cannot be read as Parquet (truncated)."""
    import pyarrow.parquet as pq

    try:
        return set(pq.read_schema(path).names)
    except Exception:  # pyarrow raises ArrowInvalid/OSError for a torn file: it is recomputed
        return None


def run_to_parquet(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    config: EngineConfig,
    out_path: str | Path,
    extra_columns: dict[str, Any] | None = None,
    report: Callable[[str], None] = print,
    *,
    prune: bool = False,
    wait: bool = True,
    inputs: Sequence[str | Path] = (),
    provenance: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Compute statistics for `examples` into `out_path` (+ `.status.parquet` outcomes, `.run.json` key).

    `prune`: the finished table holds exactly these examples (else earlier ones of the same key are kept).
    `wait`: wait for another writer of `out_path` (a Dagster run) instead of failing at once (the CLI).
    `provenance`: what the caller knows of where the data and weights came from, for the tables' run manifest
    (`model`, `model_source`, `data_file`, `data_hash`, `limit`, `n_examples`, ...).
    """
    out = check_output_path(out_path, inputs)
    check_engine_settings(config)
    if not examples:
        raise InputError(f"{out}: no examples to compute")
    fields = run_key_fields(model, config, extra_columns)
    run = _GradientRun(out, fields, model, tokenizer, examples, config, extra_columns or {}, report)
    kept = lambda: f"{run.finished_examples} finished examples are kept"  # noqa: E731
    with gradient_run(out).writing(fields, wait=wait, report=report, kept=kept) as writer:
        return run.execute(writer, prune, dict(provenance or {}))


def weights_fingerprint(model: Any) -> str:
    """A cheap fingerprint of the weights: every parameter's name, shape, dtype and 64 evenly spaced values.

    Hashing all of a 7B model's bytes would take minutes; another checkpoint of the same architecture differs
    in (nearly) every value, so a sample tells them apart.
    """
    import torch

    digest = hashlib.sha1()
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy()
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|".encode())
            digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies the weights a run computes with: class and origin, fingerprint, dtype, device type."""
    param = next(model.parameters())
    return {
        "model": f"{type(model).__name__}:{getattr(model, 'name_or_path', '')}",
        "weights": weights_fingerprint(model),
        "dtype": str(param.dtype).removeprefix("torch."),
        "device_type": param.device.type,
    }


def run_key_fields(model: Any, config: EngineConfig, extra_columns: dict[str, Any] | None) -> dict[str, Any]:
    """Everything that changes a number: engine, weights, dtype, device type, settings (by name), extras."""
    return {"engine": ENGINE_VERSION, **model_identity(model), **_numbers_fields(config, extra_columns)}


def _numbers_fields(config: EngineConfig, extra_columns: dict[str, Any] | None) -> dict[str, Any]:
    """The run key's fields that need no model: every setting that changes a number (by name), the extras."""
    settings = {
        f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.name not in SCHEDULING_FIELDS
    }
    return {**settings, "extra": {k: str(v) for k, v in sorted((extra_columns or {}).items())}}


def nothing_to_do(
    out: str | Path,
    examples: Sequence[Example],
    config: EngineConfig,
    extra_columns: dict[str, Any] | None,
    *,
    dtype: str,
    device_type: str,
    provenance: Mapping[str, Any],
) -> str | None:
    """Why `run_to_parquet(..., prune=True)` of these examples into `out` would compute and change nothing, decided
    before any model loads; None when it may have work (or that cannot be told).

    The run key holds a fingerprint of the loaded weights. What stands in for it here is the model file's identity
    that the finished run recorded in its manifest (`provenance["weights_file"]`): the same file, loaded in the
    same dtype on the same device type, gives the same weights. Without one, nothing is skipped.
    """
    import pandas as pd

    if not provenance.get("weights_file"):
        return None
    run = gradient_run(out)
    fields = {"engine": ENGINE_VERSION, "dtype": dtype, "device_type": device_type,
              **_numbers_fields(config, extra_columns)}
    key = run.finished_with(fields, provenance)
    if key is None:
        return None
    try:
        status = _latest_status(pd.read_parquet(run.table("status")))
        stats = pd.read_parquet(out, columns=["example_id"])
    except Exception:  # unreadable: the run recomputes it
        return None
    wanted = {e.example_id for e in examples}
    if set(status.example_id) != wanted or _done_ids(stats, status) != wanted:
        return None  # examples to compute, failed ones to retry, or earlier ones to prune
    return (f"all {len(wanted)} examples already done under run key {key} (same settings, data and weights file): "
            "nothing to compute")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value if isinstance(value, (int, float, bool, str)) else str(value)


def row_provenance(fields: dict[str, Any], key: str) -> dict[str, Any]:
    """The per-run provenance columns of every row (`truncated` is per example, set later)."""
    return {
        "run_key": key,
        "dtype": fields["dtype"],
        "device_type": fields["device_type"],
        "encoding": str(fields.get("encoding", "pair")),
        "chat": bool(fields["chat"]),
        "max_length": int(fields["max_length"]),
    }


def examples_hash(examples: Sequence[Example]) -> str:
    """A hash of the rows themselves (ids, prompts, responses), for data that came from no single file."""
    return stable_id(*(stable_id(e.example_id, e.instruction, e.response) for e in examples))


class _GradientRun:
    """One call of `run_to_parquet`, holding the output's lock."""

    def __init__(self, out, fields, model, tokenizer, examples, config, extra, report):
        self.out, self.fields = out, fields
        self.model, self.tokenizer, self.examples, self.config = model, tokenizer, examples, config
        self.extra, self.report = extra, report
        self.finished_examples = 0

    def execute(self, writer: RunWriter, prune: bool, provenance: dict[str, Any]) -> RunSummary:
        started = time.monotonic()
        finished = writer.finished()
        base_stats, base_status = (finished["stats"], finished["status"]) if finished else (None, None)
        earlier_status = _concat(base_status, writer.committed("status"))
        earlier_stats = _concat(base_stats, writer.committed("stats"))
        wanted = {e.example_id for e in self.examples}
        done = _done_ids(earlier_stats, earlier_status) & wanted
        self.finished_examples = len(done)
        todo = [e for e in self.examples if e.example_id not in done]
        if done:
            self.report(f"resuming: {len(done)} examples already done, {len(todo)} to go")
        self._compute(todo, writer)
        status, others = self._finish(writer, base_stats, base_status, wanted, prune, provenance)
        return self._summary(status, wanted, len(done), time.monotonic() - started, others, prune, writer.key)

    def _compute(self, todo: list[Example], writer: RunWriter) -> None:
        by_id = {e.example_id: e for e in todo}
        common = row_provenance(self.fields, writer.key)
        progress = Progress(len(todo), self.report)
        progress.start(self.config.batch_size)
        results = compute_gradient_stats(self.model, self.tokenizer, todo, self.config, PassProgress(self.report))
        with finite_logits(self.model):
            self._write(results, by_id, common, progress, writer)

    def _write(self, results: Iterator[ExampleResult], by_id: dict[str, Example], common: dict, progress: Progress,
               writer: RunWriter) -> None:
        import pandas as pd

        for batch in _batches(results, self.config.batch_size):
            self._name_non_finite(batch)
            rows = [
                {**r, **common, "truncated": self._truncated(by_id[res.example_id], r["n_tokens"]), **self.extra}
                for res in batch
                for r in res.rows
            ]
            columns = [*GRADIENT_COLUMNS, *PROVENANCE_COLUMNS, *self.extra]
            outcomes = [(r.example_id, r.status, r.reason, writer.key) for r in batch]
            writer.commit("batch", {
                "stats": pd.DataFrame(rows, columns=columns) if rows else None,
                "status": pd.DataFrame(outcomes, columns=[*STATUS_COLUMNS, "run_key"]),
            })
            self.finished_examples += len(batch)
            progress.advance(batch)

    def _name_non_finite(self, batch: list[ExampleResult]) -> None:
        """A failure caused by NaN/inf weights says so, not the linear-algebra error it turned into."""
        failed = [r for r in batch if r.status == "failed" and "not finite" not in r.reason]
        if not failed:
            return
        if not hasattr(self, "_bad_weights"):
            self._bad_weights = non_finite_parameters(self.model)
        if self._bad_weights:
            names = ", ".join(self._bad_weights[:3]) + (" ..." if len(self._bad_weights) > 3 else "")
            for result in failed:
                result.reason = f"gradient is not finite: the model has NaN or inf weights ({names})"

    def _truncated(self, example: Example, n_tokens: int) -> bool:
        """Whether the response was cut at max_length: only an example that fills it can have been."""
        if n_tokens < self.config.max_length:
            return False
        drop_system = study_drops_system(str(getattr(self.model.config, "model_type", "")))
        longer = encode(
            self.tokenizer, example, self.config.chat, self.config.max_length + 1, self.config.encoding, drop_system
        )
        return longer is not None and longer.n_tokens > self.config.max_length

    def _finish(self, writer, base_stats, base_status, wanted, prune, provenance) -> tuple[Any, int]:
        import pandas as pd

        status = _latest_status(_concat(base_status, writer.committed("status")))
        others = set(status.example_id) - wanted
        if prune:
            status = status[status.example_id.isin(wanted)]
            if others:
                self.report(f"pruned {len(others)} earlier examples not asked for this time")
        elif others:
            self.report(f"kept {len(others)} earlier examples not asked for this time (prune to drop them)")
        ok_ids = set(status.loc[status.status == "ok", "example_id"])
        stats = _concat(base_stats, writer.committed("stats"))
        if stats is None:
            stats = pd.DataFrame(columns=[*GRADIENT_COLUMNS, *PROVENANCE_COLUMNS, *self.extra])
        stats = stats[stats.example_id.isin(ok_ids)].drop_duplicates(["example_id", "parameter"], keep="last")
        status = status.reset_index(drop=True)
        manifest = self._manifest(status, provenance)
        writer.finish({"stats": stats.reset_index(drop=True), "status": status}, manifest)
        return status, len(others)

    def _manifest(self, status: Any, provenance: dict[str, Any]) -> dict[str, Any]:
        """Where the table came from: what the caller knows (model name, data file), and what the run knows."""
        asked = [e.example_id for e in self.examples]
        asked_ids = set(asked)
        kept = [i for i in status.example_id if i not in asked_ids]
        known = {k: self.extra[k] for k in ("model", "dataset", "level", "correctness") if k in self.extra}
        return {
            "model": self.fields["model"],
            "data_hash": examples_hash(self.examples),
            "n_examples": len(self.examples),
            **known,
            **provenance,
            "weights_fingerprint": self.fields["weights"],
            "targets": list(self.config.targets),
            "encoding": self.config.encoding,
            "dtype": self.fields["dtype"],
            "device_type": self.fields["device_type"],
            "engine_version": ENGINE_VERSION,
            "example_ids": [*asked, *kept],
            "parameters": [t.parameter for t in find_targets(self.model, self.config.targets)],
            "columns": {k: str(v) for k, v in self.extra.items()},
            "settings": {f.name: _plain(getattr(self.config, f.name)) for f in dataclasses.fields(self.config)},
        }

    def _summary(self, status, wanted, resumed, seconds, others, prune, key) -> RunSummary:
        import pandas as pd

        mine = status[status.example_id.isin(wanted)]
        counts = {s: int((mine.status == s).sum()) for s in ("ok", "skipped", "failed")}
        problems = mine[mine.status != "ok"][["example_id", "status", "reason"]].to_dict("records")
        stats = pd.read_parquet(self.out, columns=["example_id", "truncated"])
        truncated = stats[stats.truncated.astype(bool) & stats.example_id.isin(wanted)].example_id.nunique()
        if truncated:
            self.report(f"{truncated} responses were cut at max_length={self.config.max_length} (flagged `truncated`)")
        return RunSummary(
            len(self.examples),
            counts,
            resumed,
            problems,
            seconds,
            int(truncated),
            0 if prune else others,
            others if prune else 0,
            key,
        )


def non_finite_parameters(model: Any) -> list[str]:
    """Names of parameters holding NaN or inf (one pass over the weights, done only after a failure)."""
    import torch

    with torch.no_grad():
        return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]




def _concat(*frames: Any) -> Any:
    import pandas as pd

    present = [f for f in frames if f is not None]
    return pd.concat(present, ignore_index=True) if present else None


def _done_ids(stats: Any, status: Any) -> set[str]:
    """Examples finished earlier: `skipped`, or `ok` with their rows on disk."""
    latest = _latest_status(status)
    with_rows = set(stats.example_id) if stats is not None else set()
    ok = set(latest.loc[latest.status == "ok", "example_id"]) & with_rows
    return ok | set(latest.loc[latest.status == "skipped", "example_id"])


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
    """Each example's last outcome (chunks sort in the order they were written)."""
    import pandas as pd

    if status is None:
        return pd.DataFrame(columns=[*STATUS_COLUMNS, "run_key"])
    return status.drop_duplicates("example_id", keep="last").reset_index(drop=True)
