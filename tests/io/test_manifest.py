"""A table's run manifest travels inside the Parquet file."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from lg_pipeline.io.atomic import write_parquet
from lg_pipeline.io.manifest import MANIFEST_VERSION, read_manifest


def test_a_copied_table_keeps_its_manifest_and_its_rows(tmp_path):
    frame = pd.DataFrame({"example_id": ["a", "b"], "loss": [1.0, 2.0]})
    path = write_parquet(frame, tmp_path / "t.parquet", {"kind": "gradient_stats", "model": "m", "limit": 3})
    copy = shutil.copy(path, tmp_path / "copy.parquet")
    assert read_manifest(copy) == {"kind": "gradient_stats", "model": "m", "limit": 3,
                                   "manifest_version": MANIFEST_VERSION}
    assert pd.read_parquet(copy).equals(frame)


def test_no_manifest_and_no_parquet_read_as_none(tmp_path):
    plain = write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "plain.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    assert read_manifest(plain) is None
    assert read_manifest(tmp_path / "text.parquet") is None
    assert read_manifest(tmp_path / "missing.parquet") is None


def test_a_manifest_without_a_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet", {"model": "m"})
