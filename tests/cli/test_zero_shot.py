"""`lg-pipeline zero-shot`: offline tasks listed, bad input is one line naming it (exit 2), a tiny model runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lg_pipeline.cli import main
from tests.helpers.tiny_models import save_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", layers=2)


def args(model_dir: Path, out: Path, **overrides: str) -> list[str]:
    flags = {
        "--model": str(model_dir), "--train-tasks": "gcd,lcm,spell_backward", "--test-tasks": "chain_sum",
        "--per-task": "2", "--per-test-task": "2", "--batch-size": "2", "--eval-every": "1",
        "--embedder": "model", "--lr": "1e-3", "--out": str(out), **overrides,
    }
    return ["zero-shot", *(x for kv in flags.items() for x in kv)]


def test_list_tasks_names_reasoning_gym_generators_and_catalog_datasets(capsys):
    assert main(["zero-shot", "--list-tasks"]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert "levels none, simplified, detailed" in lines["champ"]
    assert lines["gcd"] == "reasoning-gym generator, answer only"
    assert len(lines) > 100


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"--test-tasks": "gcd"}, "task 'gcd' is in both --train-tasks and --test-tasks"),
        ({"--train-tasks": "gcd,no_such_task"}, "--train-tasks: unknown task 'no_such_task'"),
        ({"--orderings": "rt,backwards"}, "--orderings: unknown ordering 'backwards'"),
        ({"--max-new-tokens": "0"}, "--max-new-tokens"),
        ({"--reward-model": "no/such/folder"}, "--reward-model: 'no/such/folder' is not a transformers model folder"),
    ],
)
def test_bad_input_is_one_line_naming_it(model_dir, tmp_path, capsys, overrides, message):
    assert main(args(model_dir, tmp_path / "out", **overrides)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()  # rejected before any work


def test_a_task_with_fewer_items_than_asked_is_named(model_dir, tmp_path, capsys):
    file = tmp_path / "three.json"
    file.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]))
    assert main(args(model_dir, tmp_path / "out", **{"--train-tasks": f"gcd,three={file}", "--per-task": "4"})) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "task 'three' has 3 item(s), 4 asked" in err


def test_a_tiny_model_runs_every_table(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(model_dir, out, **{"--orderings": "rt,nft,tma,gradient"})) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "held-out loss, all test items:" in printed
    assert (out / "zero_shot.png").stat().st_size > 10_000 and (out / "seen_distance.png").stat().st_size > 10_000
    orders = pd.read_parquet(out / "orderings.parquet")
    assert list(orders.columns) == ["ordering", "position", "example_id", "task", "score"]
    assert set(orders.ordering) == {"rt", "nft", "tma", "gradient"}
    losses = pd.read_parquet(out / "zero_shot.parquet")
    assert list(losses.columns) == ["ordering", "step", "task", "loss", "n_examples"]
    assert set(losses.task) == {"chain_sum", "__all__"} and sorted(losses.step.unique()) == [0, 1, 2, 3]
    seen = pd.read_parquet(out / "seen_distance.parquet")
    assert list(seen.columns) == ["ordering", "step", "test_task", "min", "avg", "max", "centroid"]
    tasks = pd.read_parquet(out / "tasks.parquet")
    assert list(tasks.columns) == ["example_id", "task", "split", "instruction", "response"]
    assert set(pd.read_parquet(out / "alignment.parquet").module) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    metrics = pd.read_parquet(out / "generation_metrics.parquet")
    assert list(metrics.columns) == ["ordering", "step", "task", "rouge1", "rougeL", "exact_match", "reward",
                                     "n_examples"]
    assert len(metrics) == len(losses) and metrics.reward.isna().all()  # no reward model given
    assert (out / "metrics.png").stat().st_size > 10_000 and "Kendall's W" in printed
    assert set(pd.read_parquet(out / "metric_stability.parquet").metric) >= {"loss", "rouge1", "exact_match"}


def test_generation_metrics_can_be_left_out(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(model_dir, out, **{"--orderings": "rt"}) + ["--no-generation-metrics"]) == 0
    assert len(pd.read_parquet(out / "generation_metrics.parquet")) == 0 and not (out / "metrics.png").exists()
    assert set(pd.read_parquet(out / "metric_stability.parquet").metric) == {"loss"}


def test_a_rerun_with_another_dtype_is_refused_naming_it_and_touches_nothing(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    small = {"--orderings": "rt", "--train-tasks": "gcd,lcm", "--per-task": "1", "--per-test-task": "1"}
    assert main(args(model_dir, out, **small)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".parquet"}
    capsys.readouterr()
    assert main([*args(model_dir, out, **small), "--dtype", "bfloat16"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lg-pipeline")]
    assert f"{out}: holds a run with other settings (dtype: 'float32' -> 'bfloat16'" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".parquet"} == before


def test_a_loss_that_is_not_finite_is_one_line_naming_the_flag_exit_1(model_dir, tmp_path, capsys):
    small = {"--orderings": "rt", "--train-tasks": "gcd,lcm", "--per-task": "2", "--lr": "1e30"}
    assert main(args(model_dir, tmp_path / "out", **small)) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lg-pipeline")]
    assert "ordering rt, step 1" in line and "not finite" in line and "lower --lr (it is 1e+30)" in line


def test_two_seeds_give_two_run_folders_and_a_band_figure(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(model_dir, out, **{"--orderings": "rt", "--seeds": "0,1", "--epochs": "0.5"})) == 0
    printed = capsys.readouterr().out
    assert "held-out loss (all test items), mean ± std [min, max] over seeds:" in printed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["seed-0", "seed-1"]
    drawn = [set(pd.read_parquet(out / s / "tasks.parquet").instruction) for s in ("seed-0", "seed-1")]
    assert drawn[0] != drawn[1]  # each seed draws its own items
    steps = sorted(pd.read_parquet(out / "seed-0" / "zero_shot.parquet").step.unique())
    assert steps == [0, 1, 2]  # half of 3 × 2 items in batches of 2: ceil(0.5 × 3) = 2 steps
    table = pd.read_parquet(out / "across_seeds.parquet")
    assert set(table.n_seeds) == {2} and sorted(table.step) == steps
    assert (out / "across_seeds.png").stat().st_size > 10_000


def test_seed_and_seeds_together_are_refused(model_dir, tmp_path, capsys):
    assert main(args(model_dir, tmp_path / "out", **{"--seed": "1", "--seeds": "0,1"})) == 2
    assert "--seed and --seeds: give one" in capsys.readouterr().err
