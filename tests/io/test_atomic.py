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
