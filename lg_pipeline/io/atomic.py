"""Atomic files and resumable per-partition result stores.

Every file appears whole or not at all (write to a temp name, then `os.replace`), so a
run killed midway never leaves a half-written table that a later run trusts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


class ChunkedTable:
    """A table built chunk by chunk: finished chunks survive a crash and are skipped on resume.

    Chunks live in `<path>.parts/`; `finish()` joins them into `path` and removes the parts.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.parts = self.path.with_name(self.path.name + ".parts")

    def chunks(self) -> list[Path]:
        return sorted(self.parts.glob("chunk-*.parquet")) if self.parts.is_dir() else []

    def read_chunks(self) -> pd.DataFrame | None:
        import pandas as pd

        frames = [pd.read_parquet(p) for p in self.chunks()]
        return pd.concat(frames, ignore_index=True) if frames else None

    def append(self, frame: pd.DataFrame) -> Path:
        return write_parquet(frame, self.parts / f"chunk-{len(self.chunks()):06d}.parquet")

    def finish(
        self, keep: Callable[[pd.DataFrame], pd.DataFrame] | None = None, empty: pd.DataFrame | None = None
    ) -> Path:
        """Join the chunks (filtered by `keep`) into the final file, then drop the parts."""
        frame = self.read_chunks()
        frame = empty if frame is None else frame
        if frame is None:
            raise ValueError(f"{self.path}: no chunks to finish")
        write_parquet((keep(frame) if keep else frame).reset_index(drop=True), self.path)
        shutil.rmtree(self.parts, ignore_errors=True)
        return self.path
