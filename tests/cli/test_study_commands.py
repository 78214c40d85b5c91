"""`lg-pipeline export-study` and `import-study`: our tables to the study's layout and back, exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.cli import main
from lg_pipeline.io.study_stats import LONG_COLUMNS
from lg_pipeline.schema import STUDY_EXTRAS
from tests.io.test_study_stats import our_stats

ORDER = ["model", "dataset", "level", "correctness", "example_id", "layer", "module"]


def test_export_then_import_round_trips_exactly(tmp_path, capsys):
    stats = our_stats().assign(demo=False)  # the pipeline's tables carry more columns than the study's layout
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    half = stats.model == "qwen2-1.5b"
    stats[half].to_parquet(first, index=False)
    stats[~half].to_parquet(second, index=False)
    assert main(["export-study", str(first), str(second), "--out", str(tmp_path / "grads_exp")]) == 0
    assert "wrote 4 study files" in capsys.readouterr().out
    assert main(["import-study", str(tmp_path / "grads_exp"), "--out", str(tmp_path / "back.parquet")]) == 0
    back = pd.read_parquet(tmp_path / "back.parquet").sort_values(ORDER).reset_index(drop=True)
    want = stats[list(LONG_COLUMNS)].assign(**dict.fromkeys(STUDY_EXTRAS, float("nan")))
    pd.testing.assert_frame_equal(back, want.sort_values(ORDER).reset_index(drop=True), check_exact=True,
                                  check_dtype=False)
    assert back[list(STUDY_EXTRAS)].isna().all().all()


def test_a_table_without_variant_columns_is_refused_naming_it(tmp_path, capsys):
    bare = tmp_path / "cli-output.parquet"
    our_stats().drop(columns=["level"]).to_parquet(bare, index=False)
    assert main(["export-study", str(bare), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cli-output.parquet" in err and "level" in err


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_import_of_a_folder_without_study_files_is_an_input_error(tmp_path, capsys, make):
    root = tmp_path / "grads_exp"
    if make == "empty":
        root.mkdir()
    assert main(["import-study", str(root), "--out", str(tmp_path / "x.parquet")]) == 2
    assert str(root) in capsys.readouterr().err and not (tmp_path / "x.parquet").exists()
