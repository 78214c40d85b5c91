"""One writer per output: an exclusive `flock` per output file, in a lock directory of this user's own.

Why our own (the `filelock` package has no holder information and follows symlinks): a second writer must be
told *who* holds the output, and on a shared host the lock files must not be a way for another user to make a
run write into a file of theirs. So the lock directory belongs to the user (mode 0o700, checked, never a
symlink), each lock file is opened with `O_NOFOLLOW` and mode 0o600, and a file not owned by this user is never
written. The kernel drops a `flock` when its holder exits, so a crashed or killed run never leaves an output
locked (no stale-lock clean-up). The lock is re-entrant within one thread (the CLI takes it before loading the
model; the runner takes it again).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lg_pipeline.errors import InputError

_HELD: dict[str, tuple[int, int, int]] = {}  # lock file -> (fd, thread id, depth)
_GUARD = threading.Lock()


def lock_dir() -> Path:
    """`LG_LOCK_DIR`, else `<temp dir>/lg-pipeline-<uid>`: this user's own folder (created 0o700, checked)."""
    explicit = os.environ.get("LG_LOCK_DIR")
    folder = Path(explicit) if explicit else Path(tempfile.gettempdir()) / f"lg-pipeline-{os.getuid()}"
    return private_dir(folder)


def private_dir(folder: Path) -> Path:
    """`folder`, created 0o700 if missing; refused unless it is a real directory of this user, closed to others."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise InputError(f"lock folder {folder} is not a directory (a symlink?); set LG_LOCK_DIR to a folder of yours")
    if info.st_uid != os.getuid():
        raise InputError(f"lock folder {folder} belongs to another user; set LG_LOCK_DIR to a folder of yours")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open (creating 0o600) a file of this user's, never through a symlink; refuse one owned by someone else."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"lock file {path} is a symlink: refused") from None
        raise
    info = os.fstat(fd)
    if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputError(f"lock file {path} is not a plain file of this user: refused")
    return fd


def lock_file_for(output: str | Path, folder: Path | None = None) -> Path:
    """The lock file of one output: named by a hash of its absolute path (plus its name, for people reading)."""
    resolved = Path(os.path.realpath(output))  # one lock whatever symlinked path names the output
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:16]
    return (folder or lock_dir()) / f"{resolved.name[:60]}.{digest}.lock"


def holder_of(lock_file: Path) -> str:
    """What the holder wrote into its lock file: pid, host, since when and the command."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return "another process"
    try:
        text = os.read(fd, 400).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    return text.splitlines()[0] if text else "another process"


@contextlib.contextmanager
def output_lock(
    output: str | Path,
    wait: bool = False,
    report: Callable[[str], None] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> Iterator[Path]:
    """Hold the one exclusive lock of `output` for the block.

    `wait=False` (CLI): a held lock is an InputError at once, naming the holder. `wait=True` (a Dagster run):
    wait for it, saying so once through `report`.
    """
    path = lock_file_for(output)
    key = str(path)
    me = threading.get_ident()
    with _GUARD:
        held = _HELD.get(key)
        if held and held[1] == me:
            _HELD[key] = (held[0], me, held[2] + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            _leave(key)
        return
    fd = _acquire(path, output, wait, report, poll_s, timeout_s)
    with _GUARD:
        _HELD[key] = (fd, me, 1)
    try:
        yield path
    finally:
        _leave(key)


def _acquire(
    path: Path,
    output: str | Path,
    wait: bool,
    report: Callable[[str], None] | None,
    poll_s: float,
    timeout_s: float | None,
) -> int:
    fd = open_private(path)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = holder_of(path)
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                os.close(fd)
                raise InputError(
                    f"{output} is being written by {holder}; wait for it to finish or use another --out"
                ) from None
            if not told and report is not None:
                report(f"waiting for {output}: it is being written by {holder}")
                told = True
            time.sleep(poll_s)
    # Only the holder writes, after taking the lock: a waiting process never truncates the holder's note.
    note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}: {' '.join(sys.argv)[:200]}"
    os.ftruncate(fd, 0)
    os.pwrite(fd, (note + "\n").encode(), 0)
    return fd


def _leave(key: str) -> None:
    with _GUARD:
        fd, owner, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (fd, owner, depth - 1)
            return
        del _HELD[key]
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
