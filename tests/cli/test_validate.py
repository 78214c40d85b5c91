"""`lg-pipeline validate`: the statistics check outside Dagster; exit 0 when good, 1 naming each failed rule."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.cli import main
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


def test_a_good_table_passes_with_its_data_and_model(computed, capsys):
    args = ["validate", str(computed["out"]), "--data", str(computed["data"]), "--model", str(computed["model"])]
    assert main(args) == 0
    assert "passed" in capsys.readouterr().out


def test_a_table_missing_an_example_of_the_data_fails_naming_the_rule(computed, capsys, tmp_path):
    more = tmp_path / "more.json"
    more.write_text(json.dumps([*ROWS, {"instruction": "One more?", "output": "Yes, one more."}]))
    assert main(["validate", str(computed["out"]), "--data", str(more)]) == 1
    assert "has_outcome" in capsys.readouterr().err


def test_a_table_missing_the_last_layer_fails_only_when_the_model_is_known(computed, capsys, tmp_path):
    cut = tmp_path / "cut.parquet"
    frame = pd.read_parquet(computed["out"])
    frame[frame.layer < 2].to_parquet(cut)
    pd.read_parquet(computed["out"].with_name("stats.status.parquet")).to_parquet(tmp_path / "cut.status.parquet")
    assert main(["validate", str(cut)]) == 0  # within itself the table is consistent
    capsys.readouterr()
    assert main(["validate", str(cut), "--model", str(computed["model"])]) == 1
    assert "ok_has_all_rows" in capsys.readouterr().err
