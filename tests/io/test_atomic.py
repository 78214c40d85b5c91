"""Atomic files: a write appears whole or not at all."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from lg_pipeline.io.atomic import atomic_write_bytes, atomic_write_text, write_parquet


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "a" / "f.txt", "old")
    real = os.replace

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    monkeypatch.setattr(os, "replace", real)
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_parquet_round_trips(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert pd.read_parquet(write_parquet(frame, tmp_path / "t.parquet")).equals(frame)


def test_a_failed_write_names_the_target_not_its_temp_file(tmp_path, monkeypatch):
    import errno

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "t.parquet"
    monkeypatch.setattr(os, "fsync", lambda fd: full(fd, b""))
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"data")
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_temp_files_of_named_targets_only_are_removed(tmp_path):
    from lg_pipeline.io.atomic import remove_temp_files, temp_files

    for name in (".a.parquet.x.tmp", ".b.parquet.y.tmp", "a.parquet", ".hidden"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in temp_files(tmp_path, ["a.parquet"])] == [".a.parquet.x.tmp"]
    assert remove_temp_files(tmp_path, ["a.parquet"]) == 1
    assert remove_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "a.parquet"]


def test_a_chunked_table_lists_reads_and_removes_its_chunks_in_write_order(tmp_path):
    from lg_pipeline.io.atomic import ChunkedTable

    table = ChunkedTable(tmp_path / "t")
    names = [table.append(pd.DataFrame({"a": [i]})).name for i in range(3)]
    assert table.chunks() == names and list(table.read(names[::-1]).a) == [0, 1, 2]
    table.remove(names[:2])
    assert table.chunks() == names[2:]
    table.remove(names[2:])
    assert not (tmp_path / "t").exists()
