"""`lg-pipeline validate PATH`: any output outside Dagster; exit 0 when good, 1 naming each failed rule and file, 2 on
bad input or when a table cannot be checked completely (never a bare "passed")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.cli import main
from lg_pipeline.io.atomic import write_parquet
from lg_pipeline.io.manifest import read_manifest
from lg_pipeline.vocabulary import ATTENTION
from tests.helpers.builders import make_model
from tests.helpers.planted import add_manifest, edit, gradient_manifest, learning_folder, zero_shot_folder
from tests.helpers.tiny_models import save_tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS = [
    {"instruction": "What is 2+2?", "output": "2+2 is four."},
    {"instruction": "Name a colour.", "output": "Blue, like the sky at noon."},
    {"instruction": "Say hi.", "output": "Hi there, friend."},
]


@pytest.fixture(scope="module")
def computed(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("validate")
    model = save_tiny_model(root / "tiny", layers=3)
    data = root / "data.json"
    data.write_text(json.dumps(ROWS))
    out = root / "stats.parquet"
    assert main(["gradients", "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    return {"model": model, "data": data, "out": out, "root": root}


@pytest.fixture
def copied(computed, tmp_path) -> Path:
    """The table and its outcome log copied alone (no run key beside them), with the manifest a run writes."""
    status = pd.read_parquet(computed["out"].with_name("stats.status.parquet"))
    shutil.copy(computed["out"].with_name("stats.status.parquet"), tmp_path / "copy.status.parquet")
    path = Path(shutil.copy(computed["out"], tmp_path / "copy.parquet"))
    return add_manifest(path, gradient_manifest(make_model(layers=3), list(status.example_id), ATTENTION))


def _err(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_good_table_passes_with_its_data_and_model(computed, capsys):
    args = ["validate", str(computed["out"]), "--data", str(computed["data"]), "--model", str(computed["model"])]
    assert main(args) == 0
    assert "passed" in capsys.readouterr().out


def test_a_table_missing_an_example_of_the_data_fails_naming_the_rule(computed, capsys, tmp_path):
    more = tmp_path / "more.json"
    more.write_text(json.dumps([*ROWS, {"instruction": "One more?", "output": "Yes, one more."}]))
    assert main(["validate", str(computed["out"]), "--data", str(more)]) == 1
    err = capsys.readouterr().err
    assert "has_outcome" in err and "3 of 4 examples of --data have an outcome" in err


def test_a_table_missing_the_last_layer_fails_only_when_the_model_is_known(computed, capsys, tmp_path):
    cut = tmp_path / "cut.parquet"
    frame = pd.read_parquet(computed["out"])
    frame[frame.layer < 2].to_parquet(cut)
    pd.read_parquet(computed["out"].with_name("stats.status.parquet")).to_parquet(tmp_path / "cut.status.parquet")
    # Within itself the table is consistent, but without a manifest or --model its matrices cannot be checked.
    assert main(["validate", str(cut)]) == 2
    (line,) = _err(capsys)
    assert "not checked" in line and "expected_matrix" in line and "--model" in line and "passed (" not in line
    assert main(["validate", str(cut), "--model", str(computed["model"])]) == 1
    assert "ok_has_all_rows" in capsys.readouterr().err


def test_a_copied_table_validates_from_its_manifest_alone(copied, capsys):
    assert main(["validate", str(copied)]) == 0
    assert f"{copied}: passed" in capsys.readouterr().out


def test_a_copied_table_with_o_proj_dropped_fails_naming_the_rule(copied, capsys):
    edit(copied.parent, "copy", lambda f: f[f.module != "o_proj"])
    assert main(["validate", str(copied)]) == 1
    (line,) = _err(capsys)
    assert line.startswith(f"{copied}: failed ok_has_all_rows") and "lacks e.g." in line and "o_proj" in line


def test_a_table_stripped_of_its_manifest_never_says_passed(copied, capsys):
    pd.read_parquet(copied).to_parquet(copied)
    assert main(["validate", str(copied)]) == 2
    out, err = capsys.readouterr()
    assert "passed (" not in out and "has_outcome" in err and "--data" in err and "expected_matrix" in err


def test_data_of_a_limited_run_is_counted_in_numbers(copied, computed, capsys, tmp_path):
    manifest = read_manifest(copied)
    add_manifest(copied, {**manifest, "limit": 3})
    more = tmp_path / "more.json"
    more.write_text(json.dumps([*ROWS, *[{"instruction": f"Q{i}?", "output": f"Answer {i}."} for i in range(497)]]))
    assert main(["validate", str(copied), "--data", str(more)]) == 1
    assert "3 of 500 examples of --data have an outcome; the run was limited to 3" in capsys.readouterr().err


@pytest.mark.parametrize("change, rule", [
    (lambda f: f.drop(columns=["sigma_min"]), "columns"),
    (lambda f: f.assign(nuclear_norm=f.nuclear_norm.astype(str)), "numeric_columns"),
    (lambda f: f.assign(layer=f.layer + 0.5), "integer_columns"),
])
def test_a_malformed_table_is_one_line_per_rule_never_a_traceback(copied, capsys, change, rule):
    edit(copied.parent, "copy", change)
    assert main(["validate", str(copied)]) == 1
    err = _err(capsys)
    assert any(line.startswith(f"{copied}: failed {rule}") for line in err), err
    assert not any("Traceback" in line for line in err)


def test_a_missing_outcome_log_is_named(copied, capsys):
    copied.with_name("copy.status.parquet").unlink()
    assert main(["validate", str(copied)]) == 1
    assert f"{copied.with_name('copy.status.parquet')}: failed status_file" in capsys.readouterr().err


def test_a_good_learning_folder_passes_and_a_defect_names_its_file(tmp_path, capsys):
    folder = learning_folder(tmp_path / "run")
    assert main(["validate", str(folder)]) == 0
    assert "learning-dynamics folder" in capsys.readouterr().out
    edit(folder, "logprobs", lambda f: f.assign(logp_sum=-f.logp_sum))
    assert main(["validate", str(folder)]) == 1
    assert f"{folder / 'logprobs.parquet'}: failed logp_nonpositive" in capsys.readouterr().err


def test_a_good_zero_shot_folder_passes_and_a_torn_table_names_its_file(tmp_path, capsys):
    folder = zero_shot_folder(tmp_path / "run")
    assert main(["validate", str(folder)]) == 0
    assert "zero-shot folder" in capsys.readouterr().out
    (folder / "zero_shot.parquet").write_bytes((folder / "zero_shot.parquet").read_bytes()[:100])
    assert main(["validate", str(folder)]) == 1
    (line,) = _err(capsys)
    assert line.startswith(f"{folder / 'zero_shot.parquet'}: failed readable")


def test_the_agreement_warning_is_shown_and_passes(tmp_path, capsys):
    folder = learning_folder(tmp_path / "run")
    edit(folder, "influence", lambda f: f.assign(predicted_delta=f.predicted_delta[::-1].to_numpy()))
    totals = pd.read_parquet(folder / "influence.parquet").groupby(["step", "probe_id"]).predicted_delta.sum()
    edit(folder, "influence_summary", lambda f: f.assign(
        predicted_delta=[totals[k] for k in zip(f.step, f.probe_id, strict=True)]).assign(
        chosen_share=lambda u: u.predicted_delta))  # an SFT run: all of the predicted change is the chosen term's
    assert main(["validate", str(folder)]) == 0
    assert "warning: agreement" in capsys.readouterr().err


def test_a_table_of_a_run_folder_points_at_its_folder(tmp_path, capsys):
    folder = learning_folder(tmp_path / "run")
    assert main(["validate", str(folder / "kernel.parquet")]) == 2
    assert f"validate its folder {folder}" in capsys.readouterr().err


def test_a_manifest_of_a_foreign_kind_is_bad_input(tmp_path, capsys):
    path = write_parquet(pd.DataFrame({"example_id": ["a"], "loss": [1.0]}), tmp_path / "t.parquet",
                         manifest={"kind": "curated"})
    assert main(["validate", str(path)]) == 2
    assert "curated" in capsys.readouterr().err
