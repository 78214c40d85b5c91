"""One owner of resumable run folders: the lock, the run key, the settings file, chunked tables, the commit order
and the clean-up, for every run (gradient statistics, learning dynamics, zero-shot dynamics).

What a run folder promises, whoever writes it:
- **One writer** (`io.locks`): a second writer is refused at once naming the holder (`wait=False`, the CLI) or
  waits and says so (`wait=True`, a Dagster run).
- **A run key** hashes everything that changes a number (every setting, the weights' fingerprint, dtype, device
  type, the data's hash, the run's version). Work is staged under the key's own folder (`<key>.parts`), so work
  done another way is never joined with this run's. A finished run with another key is kept until this one is
  complete and then replaced (`on_change="beside"`), or the run is refused (`on_change="refuse"`): never mixed,
  never silently replaced.
- **Commit order**: a part (an eval step, an ordering, a batch of examples) is written as one chunk per table, then
  a commit marker listing them, last. Only committed chunks count, so a part is done only once every table of it is
  durable. Finishing writes every table (each with its run manifest), then the summary files, then the settings
  file, and only then removes the staged chunks; every finished table carries the run key in its manifest, and a
  set of tables that do not all carry this key is never resumed from.
- **Clean-up**: temp files of writes that never finished (`io.atomic.remove_temp_files`) and chunks no marker lists
  are removed by the one writer, holding the lock.
- **A write that fails** (disk full, read-only) is one line naming the output; committed parts stay for the rerun.

File names inside a run come from here (`RunFolder.table`, `.settings_file`, `.summary_file`): nobody else
spells them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lg_pipeline.errors import InputError
from lg_pipeline.io.atomic import (
    TEMP_SUFFIX,
    ChunkedTable,
    atomic_write_text,
    remove_empty_folder,
    remove_temp_files,
    write_parquet,
)
from lg_pipeline.io.locks import output_lock
from lg_pipeline.io.manifest import read_manifest

SETTINGS_FILE = "run.json"  # the settings (and run key) the finished tables were computed with
SUMMARY_FILE = "summary.json"
STAGING_SUFFIX = ".parts"
COMMITS = "commits"
WRITE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG)
OnChange = Literal["beside", "refuse"]
_KEY = re.compile(r"[0-9a-f]{12}")


def run_key(fields: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def describe_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """`name: old -> new` for every field that differs."""
    if old is None:
        return "no run key recorded"
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in changed) or "same settings"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class TableSpec:
    """One table of a run: the columns that identify a row (a part written again overwrites, never duplicates),
    the order of the finished table (`order`; default the keys, `()` keeps the written order), and its columns
    when empty."""

    keys: tuple[str, ...]
    columns: tuple[str, ...] = ()
    order: tuple[str, ...] | None = None
    kind: str = ""  # the manifest's kind (default: `<run kind>.<table>`)

    def merge(self, frames: list[Any]) -> Any:
        """The frames as one table: one row per key (the last written), in the table's order."""
        import pandas as pd

        present = [f for f in frames if f is not None]
        if not present:
            return pd.DataFrame(columns=list(self.columns or self.keys))
        frame = pd.concat(present, ignore_index=True).drop_duplicates(list(self.keys), keep="last")
        order = self.keys if self.order is None else self.order
        if order and len(frame):
            frame = frame.sort_values(list(order), kind="stable")
        return frame.reset_index(drop=True)


@dataclass(frozen=True)
class RunFiles:
    """What one kind of run writes: its tables, and the other names its folder may hold (figures, verdicts)."""

    kind: str
    tables: Mapping[str, TableSpec]
    main: str | None = None  # a table run (`beside`): the table named by the output path itself
    others: tuple[str, ...] = ()

    def at(self, folder: str | Path) -> RunFolder:
        """A run that owns the folder `folder`: `<folder>/<table>.parquet`, `<folder>/run.json`."""
        return RunFolder(self, Path(folder))

    def beside(self, table: str | Path) -> RunFolder:
        """A run whose main table is the file `table` (`x.parquet`): `x.<table>.parquet`, `x.run.json` beside it."""
        table = Path(table)
        return RunFolder(self, table.parent, table.stem)


@dataclass(frozen=True)
class RunFolder:
    """Where one run's files are. `location` is what the user named (the folder, or the main table)."""

    files: RunFiles
    folder: Path
    stem: str | None = None

    @property
    def location(self) -> Path:
        return self.folder / f"{self.stem}.parquet" if self.stem else self.folder

    def _name(self, suffix: str) -> str:
        return f"{self.stem}.{suffix}" if self.stem else suffix

    def table(self, name: str) -> Path:
        if name not in self.files.tables:
            raise ValueError(f"{name!r} is not a table of a {self.files.kind} run ({', '.join(self.files.tables)})")
        if self.stem and name == self.files.main:
            return self.location
        return self.folder / self._name(f"{name}.parquet")

    @property
    def settings_file(self) -> Path:
        return self.folder / self._name(SETTINGS_FILE)

    @property
    def summary_file(self) -> Path:
        return self.folder / self._name(SUMMARY_FILE)

    def staging(self, key: str) -> Path:
        return self.folder / self._name(f"{key}{STAGING_SUFFIX}")

    def stagings(self) -> list[Path]:
        """Staging folders of every run key (unfinished runs, or leftovers of a finished one)."""
        pattern = re.compile(re.escape(self._name("")) + _KEY.pattern + re.escape(STAGING_SUFFIX) + "$")
        found = self.folder.glob(self._name("*") + STAGING_SUFFIX) if self.folder.is_dir() else []
        return sorted(p for p in found if pattern.fullmatch(p.name) and p.is_dir())

    def own_names(self) -> list[str]:
        """The names of this run's files in `folder` (its temp files are `io.atomic`'s business)."""
        return [*(self.table(t).name for t in self.files.tables), self.settings_file.name, self.summary_file.name]

    def read_settings(self) -> dict[str, Any] | None:
        """The settings file of the finished run (its run key under `run_key`); None when missing or unreadable."""
        try:
            value = json.loads(self.settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def finished_with(self, fields: Mapping[str, Any], manifest: Mapping[str, Any] = {}) -> str | None:  # noqa: B006
        """The run key of the finished run here if its settings file holds each of `fields` and every table's
        manifest carries that key and each of `manifest`, with no staged work of any key; else None.

        For a caller that cannot make the whole key yet (it holds a fingerprint of weights not loaded): what it
        knows is checked here, and what stands in for the rest (a weight file's identity) is in `manifest`.
        """
        recorded = self.read_settings()
        if recorded is None or self.stagings():
            return None
        key = recorded.get("run_key")
        if any(recorded.get(k) != v for k, v in _as_stored(fields).items()):
            return None
        expected = _as_stored(manifest)
        for name in self.files.tables:
            found = read_manifest(self.table(name)) if self.table(name).is_file() else None
            if found is None or found.get("run_key") != key or any(found.get(k) != v for k, v in expected.items()):
                return None
        return key

    def check_target(self) -> None:
        """A folder run's folder must be new, empty, or hold only this kind of run's files (nothing else is
        written into or replaced); one line naming the folder otherwise."""
        out = self.folder
        if out.is_symlink() and not out.is_dir():
            raise InputError(f"{out}: is a symlink to something that is not a folder")
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: is a file, not a folder for a {self.files.kind} run")
        parent = next((p for p in out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise InputError(f"{out}: {parent} is not a folder")
        if not out.is_dir():
            return
        known = set(self.own_names()) | set(self.files.others)
        for entry in sorted(out.iterdir()):
            name = entry.name
            ours = name in known or _KEY.fullmatch(name.removesuffix(STAGING_SUFFIX)) and name.endswith(STAGING_SUFFIX)
            temp = name.startswith(".") and name.endswith(TEMP_SUFFIX)
            if not (ours or temp):
                raise InputError(
                    f"{out}: holds {name!r}, which is not a file of a {self.files.kind} run; "
                    "use a new or empty folder"
                )

    @contextlib.contextmanager
    def writing(
        self,
        fields: Mapping[str, Any],
        *,
        wait: bool,
        report: Callable[[str], None],
        on_change: OnChange = "beside",
        kept: Callable[[], str] = lambda: "finished parts are kept",
    ) -> Iterator[RunWriter]:
        """Hold the output's lock and write this run (`fields`: everything that changes a number)."""
        with output_lock(self.location, wait=wait, report=report):
            writer = RunWriter(self, dict(fields), report)
            try:
                if on_change == "refuse":
                    writer.refuse_other_runs()
                writer.clean()
                yield writer
            except OSError as exc:
                if exc.errno not in WRITE_ERRORS:
                    raise
                raise InputError(
                    f"{self.location}: cannot write ({exc.strerror}); {kept()}, rerun to resume"
                ) from None


@dataclass
class Commit:
    part: str
    chunks: dict[str, list[str]]
    meta: dict[str, Any] = field(default_factory=dict)  # what the part's writer noted beside its tables


@dataclass
class RunWriter:
    """One run of a folder, holding its lock: what is finished and committed under this key, and how to add to it."""

    run: RunFolder
    fields: dict[str, Any]
    report: Callable[[str], None]
    key: str = ""
    _finished: dict[str, Any] | None = field(default=None, repr=False)
    _looked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.key = run_key(self.fields)
        self.staging = self.run.staging(self.key)
        self.chunked = {name: ChunkedTable(self.staging / name) for name in self.run.files.tables}

    # --- what exists -----------------------------------------------------------------------------------------

    def finished(self) -> dict[str, Any] | None:
        """The finished tables, if every one is readable and carries this run key; else None (said why, once)."""
        if not self._looked:
            self._looked = True
            self._finished = self._read_finished()
        return self._finished

    def _read_finished(self) -> dict[str, Any] | None:
        import pandas as pd

        paths = {name: self.run.table(name) for name in self.run.files.tables}
        if not any(p.exists() for p in paths.values()):
            return None
        manifests = {name: read_manifest(p) if p.is_file() else None for name, p in paths.items()}
        keys = {name: (m or {}).get("run_key") for name, m in manifests.items()}
        if all(k == self.key for k in keys.values()):
            try:
                return {name: pd.read_parquet(p) for name, p in paths.items()}
            except Exception as exc:  # a torn file despite a readable footer: recomputed, never fatal
                self._say_unreadable(exc)
                return None
        torn = [p for name, p in paths.items() if p.is_file() and manifests[name] is None and not _readable(p)]
        if torn:
            self._say_unreadable(f"{torn[0].name} is not a complete Parquet file")
            return None
        old = self.run.read_settings()
        if old is not None:
            old.pop("run_key", None)
        self.report(
            f"{self.run.location} was computed another way ({describe_change(old, self.fields)}): computing beside "
            "it; it is replaced when this run finishes"
        )
        return None

    def _say_unreadable(self, exc: Any) -> None:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        self.report(f"{self.run.location}: cannot read the finished table ({reason}); recomputing it")

    def refuse_other_runs(self) -> None:
        """`on_change="refuse"`: a finished (or, with none, an unfinished) run with another key is an InputError."""
        old = self.run.read_settings()
        if old is not None:
            if old.get("run_key") != self.key:
                old.pop("run_key", None)
                raise InputError(
                    f"{self.run.location}: holds a run with other settings ({describe_change(old, self.fields)}); "
                    "use another folder"
                )
            return
        others = [p for p in self.run.stagings() if p != self.staging]
        if others:
            raise InputError(
                f"{self.run.location}: holds an unfinished run with other settings ({others[0].name}); "
                "use another folder"
            )

    def commits(self) -> list[Commit]:
        """The committed parts, in the order they were committed."""
        folder = self.staging / COMMITS
        found = []
        for path in sorted(folder.glob("commit-*.json")) if folder.is_dir() else []:
            raw = json.loads(path.read_text(encoding="utf-8"))
            chunks = {t: list(n) for t, n in raw["chunks"].items()}
            found.append(Commit(str(raw["part"]), chunks, dict(raw.get("meta") or {})))
        return found

    def done_parts(self) -> set[str]:
        return {c.part for c in self.commits()}

    def committed(self, table: str) -> Any:
        """The committed rows of `table` (None: none)."""
        names = [n for c in self.commits() for n in c.chunks.get(table, [])]
        return self.chunked[table].read(names)

    def table(self, name: str, *more: Any) -> Any:
        """`name` as it would be finished now: the finished rows (same key), the committed ones, then `more`."""
        finished = self.finished()
        base = finished[name] if finished is not None else None
        return self.run.files.tables[name].merge([base, self.committed(name), *more])

    # --- writing ---------------------------------------------------------------------------------------------

    def commit(self, part: str, frames: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
        """Write one part: a chunk per non-empty table, then the marker that makes them count (last)."""
        chunks = {t: [self.chunked[t].append(f).name] for t, f in frames.items() if f is not None and len(f)}
        marker = {"part": part, "chunks": chunks, "meta": dict(meta or {})}
        name = f"commit-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        atomic_write_text(self.staging / COMMITS / name, json.dumps(marker, default=str))

    def finish(self, tables: Mapping[str, Any], manifest: Mapping[str, Any], texts: Mapping[str, str] = ()) -> None:
        """Write every table (with its manifest), then `texts` (file name -> text), then the settings file;
        only then remove what was staged."""
        missing = set(self.run.files.tables) - set(tables)
        if missing:
            raise ValueError(f"{self.run.location}: finishing without table(s) {', '.join(sorted(missing))}")
        for name, frame in tables.items():
            spec = self.run.files.tables[name]
            kind = spec.kind or f"{self.run.files.kind}.{name}"
            write_parquet(frame, self.run.table(name), {**manifest, "kind": kind, "run_key": self.key})
        for name, text in dict(texts).items():
            atomic_write_text(self.run.folder / name, text)
        settings = json.dumps({"run_key": self.key, **self.fields}, indent=1, sort_keys=True, default=str)
        atomic_write_text(self.run.settings_file, settings)
        self._finished, self._looked = dict(tables), True
        self.discard_staging()

    def discard_staging(self) -> None:
        """Remove this key's staged work: the markers first (so no marker ever lists a removed chunk), then every
        chunk, temp file and folder."""
        commits = self.staging / COMMITS
        for path in sorted(commits.glob("commit-*.json")) if commits.is_dir() else []:
            path.unlink(missing_ok=True)
        ChunkedTable(commits).remove([])
        for table in self.chunked.values():
            table.remove(table.chunks())
        remove_temp_files(self.staging)
        remove_empty_folder(self.staging)
        self.clean()

    def clean(self) -> None:
        """Remove what a killed writer of this folder left: temp files, and staged chunks no marker lists."""
        remove_temp_files(self.run.folder, self.run.own_names() if self.run.stem else None)
        if not self.staging.is_dir():
            return
        remove_temp_files(self.staging / COMMITS)
        listed = {t: {n for c in self.commits() for n in c.chunks.get(t, [])} for t in self.chunked}
        for name, table in self.chunked.items():
            table.remove([n for n in table.chunks() if n not in listed[name]])


def _as_stored(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` as the settings file and manifests hold them (JSON: tuples as lists, the rest as text)."""
    return json.loads(json.dumps(dict(values), default=str))


def _readable(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_schema(path)
    except Exception:  # pyarrow raises ArrowInvalid/OSError on a torn file
        return False
    return True
