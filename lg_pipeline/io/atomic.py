"""Atomic files and resumable per-partition result stores.

Every file appears whole or not at all (write to a temp name, then `os.replace`), so a
run killed midway never leaves a half-written table that a later run trusts.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the new name never points at data still only in the page cache
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


class ChunkedTable:
    """A table built chunk by chunk: finished chunks survive a crash and are skipped on resume.

    Chunks live in `parts` (default `<path>.parts/`), each named by time, process and a random tag, so two
    writers never overwrite each other's chunk and the names sort in the order they were written.
    `finish()` joins them into `path` and then removes exactly the chunks it joined.
    """

    def __init__(self, path: str | Path, parts: str | Path | None = None):
        self.path = Path(path)
        self.parts = Path(parts) if parts else self.path.with_name(self.path.name + ".parts")

    def chunks(self) -> list[Path]:
        return sorted(self.parts.glob("chunk-*.parquet")) if self.parts.is_dir() else []

    def read_chunks(self, chunks: list[Path] | None = None) -> pd.DataFrame | None:
        import pandas as pd

        frames = [pd.read_parquet(p) for p in (self.chunks() if chunks is None else chunks)]
        return pd.concat(frames, ignore_index=True) if frames else None

    def append(self, frame: pd.DataFrame) -> Path:
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        return write_parquet(frame, self.parts / name)

    def finish(
        self,
        keep: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        empty: pd.DataFrame | None = None,
        base: pd.DataFrame | None = None,
    ) -> Path:
        """Join `base` (earlier finished rows) and the chunks, filtered by `keep`, into the final file; then
        drop the chunks joined (only once the file is in place, so a crash before leaves them to resume from)."""
        import pandas as pd

        chunks = self.chunks()
        frames = [f for f in (base, self.read_chunks(chunks)) if f is not None]
        frame = pd.concat(frames, ignore_index=True) if frames else empty
        if frame is None:
            raise ValueError(f"{self.path}: no chunks to finish")
        write_parquet((keep(frame) if keep else frame).reset_index(drop=True), self.path)
        self.drop(chunks)
        return self.path

    def drop(self, chunks: list[Path] | None = None) -> None:
        """Remove `chunks` (default all), then the parts folder if nothing else is left in it."""
        for chunk in self.chunks() if chunks is None else chunks:
            chunk.unlink(missing_ok=True)
        try:
            self.parts.rmdir()
        except OSError:
            pass  # missing, or still holding another writer's files
