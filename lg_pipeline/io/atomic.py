"""Atomic files and chunked tables: the only module that names temp files.

Every file appears whole or not at all (write to a temp name beside it, then `os.replace`), so a run killed
midway never leaves a half-written table that a later run trusts. A write that fails names the file it was
writing, never its temp name. A killed writer can leave its temp file behind; `remove_temp_files` (called by the
owner of the folder, holding its lock) is the one place that knows what those look like.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TEMP_SUFFIX = ".tmp"
CHUNK_GLOB = "chunk-*.parquet"


def _temp_prefix(name: str) -> str:
    return f".{name}."


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the new name never points at data still only in the page cache
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error about `path` (what the user asked to write), not the temp file beside it."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_parquet(frame: pd.DataFrame, path: str | Path, manifest: Mapping[str, Any] | None = None) -> Path:
    """`frame` as a Parquet file, atomically; `manifest` (where it came from) in its key-value metadata."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lg_pipeline.io.manifest import with_manifest

    buf = io.BytesIO()
    pq.write_table(with_manifest(pa.Table.from_pandas(frame, preserve_index=False), manifest), buf)
    return atomic_write_bytes(path, buf.getvalue())


def temp_files(folder: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Temp files left in `folder` by writes that never finished: of the files `names`, or of any file."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = [_temp_prefix(n) for n in names] if names is not None else ["."]
    return sorted(
        p for prefix in prefixes for p in folder.glob(f"{prefix}*{TEMP_SUFFIX}") if p.name.endswith(TEMP_SUFFIX)
    )


def remove_temp_files(folder: str | Path, names: Iterable[str] | None = None) -> int:
    """Remove `temp_files(folder, names)`; only safe for the folder's one writer (holding its lock)."""
    found = temp_files(folder, names)
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


class ChunkedTable:
    """One table written chunk by chunk into its own folder: finished chunks survive a crash.

    Each chunk is named by time, process and a random tag, so two writers never overwrite each other's chunk and
    the names sort in the order they were written. Which chunks count is the caller's business (a run folder's
    commit markers); this class only writes, lists, reads and removes them.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def append(self, frame: pd.DataFrame) -> Path:
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        return write_parquet(frame, self.folder / name)

    def chunks(self) -> list[str]:
        """Names of the chunks on disk, in the order they were written."""
        return sorted(p.name for p in self.folder.glob(CHUNK_GLOB)) if self.folder.is_dir() else []

    def read(self, names: Iterable[str]) -> pd.DataFrame | None:
        import pandas as pd

        frames = [pd.read_parquet(self.folder / n) for n in sorted(names)]
        return pd.concat(frames, ignore_index=True) if frames else None

    def remove(self, names: Iterable[str]) -> None:
        """Remove the chunks `names`, the temp files of unfinished chunks, then the folder if nothing is left."""
        for name in names:
            (self.folder / name).unlink(missing_ok=True)
        remove_temp_files(self.folder)
        remove_empty_folder(self.folder)


def remove_empty_folder(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or still holding files (another key's, a writer's)
