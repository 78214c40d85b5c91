"""`lg-pipeline export-study` and `import-study`: our tables to the study's layout and back, exactly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.cli import main
from lg_pipeline.io.atomic import write_parquet
from lg_pipeline.io.manifest import read_manifest
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


def _cli_table(path, **manifest):
    """A table as `lg-pipeline gradients` writes it: no variant columns, where it came from in its manifest."""
    frame = our_stats()
    frame = frame[frame.model == "qwen2-1.5b"].drop(columns=["model", "dataset", "level", "correctness"])
    return write_parquet(frame, path, manifest={"kind": "gradient_stats", **manifest} if manifest else None)


def test_a_cli_table_is_exported_through_its_manifest(tmp_path, capsys):
    table = _cli_table(tmp_path / "cli.parquet", model="/home/me/models/tiny-llama", model_source="local",
                       dataset="gsm8k", level="detailed", correctness="correct")
    assert main(["export-study", str(table), "--out", str(tmp_path / "grads_exp")]) == 0
    written = sorted(p.relative_to(tmp_path / "grads_exp") for p in (tmp_path / "grads_exp").rglob("*.jsonl"))
    assert written == [Path("cot_500/tiny-llama/grads_gsm8k_train_with_cot_gpt4o.jsonl")]


def test_flags_name_what_neither_columns_nor_manifest_say(tmp_path, capsys):
    table = _cli_table(tmp_path / "cli.parquet", model="qwen2-1.5b", model_source="hub")
    assert main(["export-study", str(table), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "dataset, level, correctness" in err and "--dataset" in err and not (tmp_path / "out").exists()
    args = ["--dataset", "math_algebra", "--level", "none", "--correctness", "wrong"]
    assert main(["export-study", str(table), "--out", str(tmp_path / "out"), *args]) == 0
    assert (tmp_path / "out" / "lighteval_math_wrong_answer_shuffle" / "qwen2_1_5b" / "grads_algebra_no_cot.jsonl"
            ).is_file()


@pytest.mark.parametrize("column, value", [
    ("model", "/tmp/ESCAPED_model"),
    ("model", "../../ESCAPED_model"),
    ("model", "a/../../ESCAPED"),
    ("dataset", "../ESCAPED"),
    ("dataset", "x/y"),
    ("level", ".."),
])
def test_a_table_never_chooses_a_folder_outside_out(tmp_path, capsys, column, value):
    stats = our_stats().assign(**{column: value})
    table = tmp_path / "t" / "evil.parquet"
    table.parent.mkdir()
    stats.to_parquet(table, index=False)
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "a" / "b" / "grads_exp"
    assert main(["export-study", str(table), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "evil.parquet" in err and "path component" in err
    assert sorted(tmp_path.rglob("*")) == before and not list(Path("/tmp").glob("ESCAPED*"))


def test_a_manifest_never_chooses_a_folder_outside_out(tmp_path, capsys):
    table = _cli_table(tmp_path / "cli.parquet", model="../../ESCAPED", model_source="hub", dataset="gsm8k",
                       level="none", correctness="correct")
    assert main(["export-study", str(table), "--out", str(tmp_path / "o" / "grads_exp")]) == 2
    assert "path component" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_import_replaces_an_earlier_import_but_never_a_computed_table(tmp_path, capsys):
    stats = our_stats()
    stats.to_parquet(tmp_path / "ours.parquet", index=False)
    assert main(["export-study", str(tmp_path / "ours.parquet"), "--out", str(tmp_path / "grads_exp")]) == 0
    out = tmp_path / "imported.parquet"
    assert main(["import-study", str(tmp_path / "grads_exp"), "--out", str(out)]) == 0
    assert read_manifest(out)["kind"] == "study_import"
    assert main(["import-study", str(tmp_path / "grads_exp"), "--out", str(out)]) == 0  # an import: replaced
    computed = tmp_path / "computed.parquet"
    write_parquet(stats, computed, manifest={"kind": "gradient_stats"})
    before = computed.read_bytes()
    assert main(["import-study", str(tmp_path / "grads_exp"), "--out", str(computed)]) == 2
    assert "refusing to replace" in capsys.readouterr().err and computed.read_bytes() == before
