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
from collections.abc import Callable, Sequence
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


def kill_at_every_boundary(run: Callable[[], Any], root: Path, check: Callable[[], None], minimum: int) -> list[str]:
    """Kill `run()` before each of its boundaries in turn, run it again, then `check()` and look for leftovers;
    the boundaries where that failed, one line each (empty: it resumed every time)."""
    import shutil

    total = boundaries(run, root)
    shutil.rmtree(root)
    assert total >= minimum, f"only {total} boundaries: the run writes less than expected"
    wrong = []
    for boundary in range(1, total + 1):
        assert wait(fork_run(run, root, kill_at=boundary)) == -signal.SIGKILL, f"boundary {boundary}: not killed"
        run()
        try:
            check()
            assert leftovers(root) == [], leftovers(root)
        except AssertionError as exc:
            wrong.append(f"boundary {boundary}/{total}: {str(exc).splitlines()[0] if str(exc) else 'failed'}")
        shutil.rmtree(root)
    return wrong


def two_writers(run: Callable[[bool], Any], root: Path, apart_s: float, wait_: bool = False) -> list[int]:
    """Two processes running `run(wait_)` on one output, the second started `apart_s` later: their exit codes."""
    first = fork_run(lambda: run(wait_), root)
    second = fork_run(lambda: run(wait_), root, delay_s=apart_s)
    return sorted([wait(first), wait(second)])


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


def full_disk_then_rerun(monkeypatch: Any, run: Callable[[], Any], root: Path, writes: Sequence[int], kept: str,
                         check: Callable[[], None]) -> None:
    """For each n of `writes`: a disk full from the n-th write on is one line naming `root` (never a temp file)
    and saying what is `kept`; the rerun then completes (`check()`), leaving nothing behind."""
    import shutil

    for n in writes:
        with monkeypatch.context() as patch:
            full_disk_at(patch, n)
            try:
                run()
            except InputError as exc:
                message = str(exc)
            else:
                raise AssertionError(f"write {n}: the run did not fail")
        assert "\n" not in message and "No space left on device" in message and str(root) in message, message
        assert ".tmp" not in message and kept in message, message
        run()
        check()
        assert leftovers(root) == [], (n, leftovers(root))
        shutil.rmtree(root)


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
