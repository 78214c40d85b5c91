"""Faults injected into a run: kill -9 at a chosen write boundary (in a forked child), a full disk at the n-th write,
and the checks every run's fault tests share (same tables as an uninterrupted run, nothing left behind).

A *boundary* is every completed file operation under the run's folder: each `os.replace` (a write landing) and each
`os.unlink` / `os.rmdir` (clean-up). Killing the child just before boundary n leaves the folder exactly as it is
between operations n-1 and n (with the temp file of write n, when n is a write).
"""

from __future__ import annotations

import errno
import os
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError, RunStopped

REFUSED, STOPPED = 3, 4  # child exit codes: an InputError (a writer refused), a RunStopped


def _under(path: Any, root: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(root)
    except (TypeError, ValueError):
        return False


def _count_boundaries(root: Path, kill_at: int | None) -> Callable[[], int]:
    """Wrap the file operations of this process; SIGKILL itself just before boundary `kill_at` (1-based)."""
    seen = [0]
    for name in ("replace", "unlink", "rmdir"):
        original = getattr(os, name)

        def wrapped(path, *args, _original=original, _name=name, **kwargs):
            target = args[0] if _name == "replace" and args else path
            if _under(target, root):
                seen[0] += 1
                if seen[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return _original(path, *args, **kwargs)

        setattr(os, name, wrapped)
    return lambda: seen[0]


def fork_run(target: Callable[[], Any], root: Path, kill_at: int | None = None, delay_s: float = 0.0) -> int:
    """Run `target()` in a child (pid returned): killed before boundary `kill_at` under `root`, if given.

    Exit codes: 0 done, REFUSED on an InputError, STOPPED on a RunStopped, 1 on anything else."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        import time

        time.sleep(delay_s)
        _count_boundaries(root.resolve(), kill_at)
        target()
        code = 0
    except InputError:
        code = REFUSED
    except RunStopped:
        code = STOPPED
    finally:
        os._exit(code)


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def boundaries(target: Callable[[], Any], root: Path) -> int:
    """How many boundaries an uninterrupted `target()` crosses under `root` (counted in a child)."""
    read, write = os.pipe()
    pid = os.fork()
    if not pid:
        os.close(read)
        code = 1
        try:
            count = _count_boundaries(root.resolve(), None)
            target()
            os.write(write, struct.pack("<Q", count()))
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    data = os.read(read, 8)
    os.close(read)
    assert wait(pid) == 0, "the uninterrupted run failed in the child"
    return struct.unpack("<Q", data)[0]


def full_disk_at(monkeypatch: Any, n: int) -> list[int]:
    """The n-th atomic write (1-based) and every later one fail with ENOSPC; returns the write counter."""
    from lg_pipeline.io import atomic

    original, calls = atomic.atomic_write_bytes, [0]

    def write(path, data):
        calls[0] += 1
        if calls[0] >= n:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", write)
    return calls


def leftovers(root: Path) -> list[str]:
    """Temp files and staging folders under `root` (a finished run leaves none)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".parts")
    )


def tables(folder: Path) -> dict[str, Any]:
    """Every Parquet table of a run folder, by file name."""
    import pandas as pd

    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def assert_same_tables(actual: dict[str, Any], expected: dict[str, Any], rtol: float = 1e-6) -> None:
    import pandas as pd

    assert sorted(actual) == sorted(expected), (sorted(actual), sorted(expected))
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(actual[name], frame, rtol=rtol, obj=name)
