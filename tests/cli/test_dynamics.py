"""`lg-pipeline dynamics`: bad input ends with exit 2 and one line naming it; a tiny local model runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.cli import main
from tests.helpers.builders import make_tokenizer
from tests.helpers.tiny_models import save_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
ROWS = [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}, so {2 * i}."} for i in range(6)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", layers=2)


def _json(path: Path, rows) -> str:
    path.write_text(json.dumps(rows))
    return str(path)


def _dynamics(model_dir, tmp_path, *extra) -> list[str]:
    data = _json(tmp_path / "train.json", ROWS)
    return ["dynamics", "--model", str(model_dir), "--data", data, "--out", str(tmp_path / "out"), *extra]


def _error(capsys) -> list[str]:
    err = capsys.readouterr().err.replace("\r", "\n")
    return [line for line in err.split("\n") if line.startswith("lg-pipeline: error")]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--objective", "dpo"], "--objective dpo needs --wrong"),
        (["--n-probes", "7"], "--n-probes: 7 probes but the training data has 6 rows"),
        (["--also", "detailed"], "--also: 'detailed' is not LEVEL=FILE.json"),
    ],
)
def test_bad_settings_end_with_one_line_and_exit_2(model_dir, tmp_path, capsys, extra, expected):
    assert main(_dynamics(model_dir, tmp_path, *extra)) == 2
    lines = _error(capsys)
    assert len(lines) == 1 and expected in lines[0]


def test_an_unaligned_also_file_is_named(model_dir, tmp_path, capsys):
    other = _json(tmp_path / "detailed.json", ROWS[1:] + ROWS[:1])
    assert main(_dynamics(model_dir, tmp_path, "--also", f"detailed={other}")) == 2
    assert "--also detailed: row 0 has another instruction" in _error(capsys)[0]


def test_a_model_without_attention_projections_is_named(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=300, n_positions=64)).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    assert main(_dynamics(folder, tmp_path, "--steps", "1")) == 2
    assert "--trainable attention: no linear layer of GPT2LMHeadModel ends in q_proj" in _error(capsys)[0]


def test_a_tiny_run_writes_every_table_and_prints_r2(model_dir, tmp_path, capsys):
    wrong = _json(tmp_path / "wrong.json", [{**r, "output": "It is 99."} for r in ROWS])
    args = _dynamics(model_dir, tmp_path, "--wrong", wrong, "--steps", "2", "--eval-every", "1", "--n-probes", "2")
    assert main(args) == 0
    out = tmp_path / "out"
    for table in (
        "probes",
        "logprobs",
        "influence",
        "influence_summary",
        "kernel",
        "train_log",
        "train_gradient_stats",
    ):
        assert len(pd.read_parquet(out / f"{table}.parquet")) > 0, table
    printed = capsys.readouterr().out
    assert "R² of predicted vs measured over probes:" in printed
    assert json.loads((out / "summary.json").read_text())["eval_steps"] == [0, 1]
