"""One writer per output: a held lock refuses at once naming its holder, or is waited for; nothing planted in the
lock folder (a symlink, another user's file) can make a run write elsewhere."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from lg_pipeline.errors import InputError
from lg_pipeline.io.locks import lock_file_for, output_lock, private_dir


@pytest.fixture(autouse=True)
def own_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LG_LOCK_DIR", str(tmp_path / "locks"))


def _hold_in_child(output, seconds: float) -> int:
    """A forked process holding the lock of `output` for `seconds`."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        with output_lock(output):
            os.write(write, b"x")
            time.sleep(seconds)
        os._exit(0)
    os.read(read, 1)
    return pid


@pytest.mark.slow
def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "stats.parquet"
    pid = _hold_in_child(out, 2.0)
    started = time.monotonic()
    with pytest.raises(InputError, match=f"is being written by pid {pid} on "):
        with output_lock(out):
            pass
    assert time.monotonic() - started < 1.0
    os.waitpid(pid, 0)
    with output_lock(out):  # the kernel dropped the lock with its holder
        pass


@pytest.mark.slow
def test_a_waiting_writer_says_so_once_and_goes_on_when_the_holder_ends(tmp_path):
    out = tmp_path / "stats.parquet"
    pid = _hold_in_child(out, 1.0)
    said: list[str] = []
    with output_lock(out, wait=True, report=said.append, poll_s=0.05):
        pass
    os.waitpid(pid, 0)
    assert len(said) == 1 and f"pid {pid}" in said[0]


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_across_threads(tmp_path):
    out = tmp_path / "stats.parquet"
    errors: list[Exception] = []
    with output_lock(out), output_lock(out):
        thread = threading.Thread(target=lambda: _try(out, errors))
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], InputError)


def _try(out, errors):
    try:
        with output_lock(out):
            pass
    except InputError as exc:
        errors.append(exc)


def test_lock_files_are_private_and_never_followed_through_a_symlink(tmp_path):
    out = tmp_path / "stats.parquet"
    with output_lock(out) as lock:
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert stat.S_IMODE(lock.parent.stat().st_mode) == 0o700
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    other = tmp_path / "other.parquet"
    lock_file_for(other).symlink_to(victim)
    with pytest.raises(InputError, match="symlink"):
        with output_lock(other):
            pass
    assert victim.read_text() == "precious"


def test_a_lock_folder_that_is_a_symlink_is_refused(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InputError, match="not a directory"):
        private_dir(tmp_path / "link")
