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
    tmp_path.mkdir(exist_ok=True)
    data = _json(tmp_path / "train.json", ROWS)
    return ["dynamics", "--model", str(model_dir), "--data", data, "--out", str(tmp_path / "out"), *extra]


def _error(capsys) -> list[str]:
    err = capsys.readouterr().err.replace("\r", "\n")
    return [line for line in err.split("\n") if line.startswith("lg-pipeline: error")]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--objective", "dpo", "--rejected", "shuffled"], "--objective dpo needs --wrong"),
        (["--objective", "dpo", "--rejected", "nope"], "--rejected: invalid choice"),
        (["--n-probes", "7"], "--n-probes: 7 probes but the training data has 6 rows"),
        (["--also", "detailed"], "--also: 'detailed' is not LEVEL=FILE.json"),
    ],
)
def test_bad_settings_end_with_one_line_and_exit_2(model_dir, tmp_path, capsys, extra, expected):
    assert main(_dynamics(model_dir, tmp_path, *extra)) == 2
    lines = _error(capsys)
    assert len(lines) == 1 and expected in lines[0]


def test_companion_files_are_matched_by_instruction_and_an_incomplete_one_is_left_out_saying_so(
    model_dir, tmp_path, capsys
):
    detailed = [{**r, "output": "Step by step: " + r["output"]} for r in ROWS]
    small = ["--steps", "1", "--eval-every", "1", "--n-probes", "2"]
    aligned = _json(tmp_path / "aligned.json", detailed)
    assert main([*_dynamics(model_dir, tmp_path / "a", "--also", f"detailed={aligned}"), *small]) == 0
    rotated = _json(tmp_path / "rotated.json", detailed[1:] + detailed[:1])
    assert main([*_dynamics(model_dir, tmp_path / "b", "--also", f"detailed={rotated}"), *small]) == 0
    probes = [pd.read_parquet(tmp_path / run / "out" / "probes.parquet") for run in ("a", "b")]
    pd.testing.assert_frame_equal(*probes)
    assert "other_level:detailed" in set(probes[0].probe_type)
    shorter = _json(tmp_path / "shorter.json", detailed[1:])
    capsys.readouterr()
    assert main([*_dynamics(model_dir, tmp_path / "c", "--also", f"detailed={shorter}"), *small]) == 0
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "--also detailed: 1 of 6 training instructions not found; left out" in said
    assert "other_level:detailed" not in set(pd.read_parquet(tmp_path / "c" / "out" / "probes.parquet").probe_type)


def test_a_loss_that_is_not_finite_is_one_line_naming_the_step_and_the_flag_exit_1(model_dir, tmp_path, capsys):
    args = _dynamics(model_dir, tmp_path, "--steps", "3", "--eval-every", "1", "--n-probes", "2", "--lr", "1e30")
    assert main(args) == 1
    (line,) = _error(capsys)
    assert "step 0" in line and "not finite" in line and "lower --lr (it is 1e+30)" in line
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_a_second_writer_is_refused_at_once_naming_the_holder(model_dir, tmp_path):
    import os
    import subprocess
    import sys

    from lg_pipeline.io.locks import output_lock

    out = tmp_path / "out"
    args = _dynamics(model_dir, tmp_path)
    with output_lock(out):
        proc = subprocess.run([sys.executable, "-m", "lg_pipeline.cli", *args], capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("lg-pipeline")]
    assert len(lines) == 1 and f"{out} is being written by pid {os.getpid()}" in lines[0]
    assert "Loading weights" not in proc.stderr, "refused before the model loads"
    assert not out.exists()


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
    assert (pd.read_parquet(out / "probes.parquet").cut_tokens == 0).all()
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    stem = f"{model_dir.name}_train_sft"
    assert figures == sorted(f"{model_dir.name}_{f}.png" for f in ("logprobs", "agreement", "nuclear", "squeezing")) + [
        f"{stem}_kernel.png", f"{stem}_layers.png"
    ]
    assert all((out / "figures" / f).read_bytes().startswith(b"\x89PNG") for f in figures)
    assert main(args) == 0  # the figures are the run's own files: a rerun is not refused for them
    assert "finished with these settings; nothing to do" in capsys.readouterr().out


def test_probes_cut_at_max_length_are_refused_unless_allowed(model_dir, tmp_path, capsys):
    args = _dynamics(model_dir, tmp_path, "--steps", "1", "--eval-every", "1", "--n-probes", "2", "--max-length", "120")
    assert main(args) == 2
    (line,) = _error(capsys)
    assert "--max-length: 120 cuts" in line and "response tokens of probe" in line
    assert "(irrelevant of prompt" in line and "(--allow-probe-truncation)" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main([*args, "--allow-probe-truncation"]) == 0
    assert "probes cut at max_length=120" in capsys.readouterr().out
    probes = pd.read_parquet(tmp_path / "out" / "probes.parquet").set_index("probe_type")
    assert probes.cut_tokens["irrelevant"] > 0 and probes.cut_tokens["trained"] == 0


def test_a_transformers_teacher_writes_the_rephrase_probes_once(model_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    teacher = ["--teacher", "transformers", "--teacher-model", str(model_dir), "--teacher-max-tokens", "6"]
    small = ["--steps", "1", "--eval-every", "1", "--n-probes", "2", "--cache-dir", str(cache)]
    assert main([*_dynamics(model_dir, tmp_path, *teacher, *small)]) == 0
    probes = pd.read_parquet(tmp_path / "out" / "probes.parquet")
    rephrases = probes[probes.probe_type.str.contains("_rephrase:")]
    trained = probes[probes.probe_type == "trained"]
    assert set(rephrases.prompt_id) == set(trained.prompt_id) and len(rephrases) >= 2
    assert {"chosen_rephrase:semantic", "chosen_rephrase:format"} <= set(rephrases.probe_type)
    cached = sorted((cache / "curation" / "teacher").rglob("*.json"))
    assert len(cached) >= len(rephrases)  # the curation's answer cache, one file per prompt asked
    assert "rephrase probes" not in capsys.readouterr().out
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert main([*_dynamics(model_dir, tmp_path, *teacher, *small)]) == 0  # from the cache: the same probes
    assert [p.stat().st_mtime_ns for p in sorted((cache / "curation" / "teacher").rglob("*.json"))] == mtimes
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "probes.parquet"), probes)


def test_two_seeds_give_two_run_folders_and_a_band_figure_and_epochs_set_the_steps(model_dir, tmp_path, capsys):
    command = _dynamics(model_dir, tmp_path, "--seeds", "0,1", "--epochs", "1", "--eval-every", "1", "--n-probes", "2",
                        "--batch-size", "2")
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "mean ± std [min, max] over seeds:" in printed
    out = tmp_path / "out"
    for seed in (0, 1):
        summary = json.loads((out / f"seed-{seed}" / "summary.json").read_text())
        assert summary["steps"] == 3  # 5 trained rows (one held-out probe prompt) in batches of 2: one pass
        settings = json.loads((out / f"seed-{seed}" / "run.json").read_text())
        assert settings["config"]["seed"] == seed and settings["config"]["epochs"] == 1.0
    probes = [set(pd.read_parquet(out / f"seed-{s}" / "probes.parquet").prompt_id) for s in (0, 1)]
    assert probes[0] != probes[1]  # each seed draws its own probes
    table = pd.read_parquet(out / "across_seeds.parquet")
    assert set(table.n_seeds) == {2} and sorted(table.step.unique()) == [0, 1, 2, 3]  # each eval step and after it
    assert (out / "across_seeds.png").stat().st_size > 10_000


def test_a_run_set_by_epochs_passes_its_check(model_dir, tmp_path):
    from lg_pipeline.dynamics.learning.checks import check_run_folder

    command = _dynamics(model_dir, tmp_path, "--epochs", "0.5", "--eval-every", "1", "--n-probes", "2")
    assert main(command) == 0
    report = check_run_folder(tmp_path / "out")
    assert report.passed, report.details()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["steps"] == 2  # half of 3 batches, rounded up
