"""`lg-pipeline gradients`: bad input ends with exit 2 and one line naming it; a tiny local model runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.cli import main
from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import encode
from lg_pipeline.schema import GRADIENT_COLUMNS, PROVENANCE_COLUMNS
from tests.helpers.builders import make_tokenizer
from tests.helpers.tiny_models import save_tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")

GOOD_ROWS = [
    {"instruction": "What is 2+2?", "input": "", "output": "2+2 is four."},
    {"instruction": "Name a colour.", "input": "Any will do.", "output": "Blue, like the sky at noon."},
    {"instruction": "Say hi.", "output": "Hi!"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A transformers folder: tiny Llama + byte tokenizer with a chat template (so it counts as instruct)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", layers=2)


def write_json(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload) if not isinstance(payload, str) else payload)
    return path


def gradients(model: Path | str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["gradients", "--model", str(model), "--data", str(data), "--out", str(out), *extra]


def error_lines(capsys) -> list[str]:
    """stderr split on newlines and carriage returns (progress bars redraw with \\r)."""
    captured = capsys.readouterr()
    return [line for line in captured.err.replace("\r", "\n").split("\n") if line.strip()]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"instruction": "x", "output": "y"}, "expected a JSON list of objects, got dict"),
        ([["x", "y"]], "row 0: expected an object, got list"),
        ([GOOD_ROWS[0], {"instruction": "no answer"}], "row 1: missing field 'output'"),
        ([GOOD_ROWS[0], {"instruction": "blank", "output": "  \n"}], "row 1: empty response ('output')"),
        ("[{\"instruction\": ", "not valid JSON"),
    ],
    ids=["not-a-list", "row-not-object", "no-output", "empty-response", "broken-json"],
)
def test_bad_data_is_one_line_naming_the_file(tmp_path, capsys, model_dir, payload, expected):
    data = write_json(tmp_path / "bad.json", payload)
    assert main(gradients(model_dir, data, tmp_path / "out.parquet")) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("lg-pipeline: error: ") and str(data) in line and expected in line
    assert not (tmp_path / "out.parquet").exists()


def test_unknown_model_is_one_line_naming_it(tmp_path, capsys):
    data = write_json(tmp_path / "data.json", GOOD_ROWS)
    assert main(gradients("no-such-model-7b", data, tmp_path / "out.parquet")) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("lg-pipeline: error: ") and "unknown model 'no-such-model-7b'" in line


def test_targets_matching_nothing_exit_2_naming_the_suffix(tmp_path, capsys, model_dir):
    data = write_json(tmp_path / "data.json", GOOD_ROWS)
    assert main(gradients(model_dir, data, tmp_path / "out.parquet", "--targets", "q,fc9")) == 2
    (line,) = [line for line in error_lines(capsys) if "error" in line]
    assert "lg-pipeline: error: --targets:" in line and line.endswith("ends in fc9")
    assert not (tmp_path / "out.parquet").exists()


def test_targets_error_starts_its_own_line(tmp_path, capsys, model_dir):
    data = write_json(tmp_path / "data.json", GOOD_ROWS)
    assert main(gradients(model_dir, data, tmp_path / "out.parquet", "--targets", "fc9")) == 2
    (line,) = [line for line in error_lines(capsys) if "error" in line]
    assert line.startswith("lg-pipeline: error: --targets:")


@pytest.mark.slow
def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    data = write_json(tmp_path / "bad.json", {"not": "a list"})
    cmd = [sys.executable, "-m", "lg_pipeline.cli", *gradients("any", data, tmp_path / "o.parquet")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    expected = f"lg-pipeline: error: {data}: expected a JSON list of objects, got dict"
    assert proc.stderr.strip().splitlines() == [expected]


def test_happy_path_writes_the_documented_columns(tmp_path, capsys, model_dir):
    data = write_json(tmp_path / "data.json", GOOD_ROWS)
    out = tmp_path / "stats.parquet"
    args = gradients(model_dir, data, out, "--targets", "q,k,v,o,gate,up,down", "--batch-size", "2", "--limit", "2")
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert list(frame.columns) == [*GRADIENT_COLUMNS, *PROVENANCE_COLUMNS]
    assert len(frame) == 2 * 7 * 2 and frame.groupby("example_id").size().eq(14).all()
    assert set(pd.read_parquet(out.with_name("stats.status.parquet")).status) == {"ok"}
    # A folder whose tokenizer has a chat template is run as an instruct model: prompts are chat-formatted.
    row = GOOD_ROWS[0]
    enc = encode(make_tokenizer(), Example("x", row["instruction"], row["output"]), chat=True, max_length=1024)
    assert enc.n_tokens in set(frame.n_tokens)
