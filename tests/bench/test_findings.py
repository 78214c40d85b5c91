"""`bench/findings.py` on a hand-built output root: every number it prints is the one the tables hold."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from bench import findings
from tests.helpers.planted import edit, learning_folder, zero_shot_folder

VARIANT = "champ__none__correct"


def _dpo(folder):
    """The planted SFT folder as a DPO run: shares 1.5 and −0.5 of each predicted change, both residual terms."""
    edit(folder, "influence_summary", lambda t: t.assign(chosen_share=1.5 * t.predicted_delta,
                                                         rejected_share=-0.5 * t.predicted_delta))
    edit(folder, "train_residuals", lambda t: pd.concat([t, t.assign(term="rejected", weight=-t.weight)]))
    run = json.loads((folder / "run.json").read_text())
    run["config"]["objective"] = "dpo"
    (folder / "run.json").write_text(json.dumps(run))


@pytest.fixture
def root(tmp_path):
    from assets.resources import OutputStore
    from lg_pipeline.vocabulary import StatsKey

    store = OutputStore(root=str(tmp_path / "outputs"))
    key = StatsKey.of("tiny", VARIANT)
    learning_folder(store.dynamics(key, "sft"))
    _dpo(learning_folder(store.dynamics(key, "dpo")))
    built = zero_shot_folder(tmp_path / "zero_shot_run")
    for ordering in ("rt", "nft", "gradient"):  # the asset's layout: a folder per ordering, each its own rows
        folder = store.zero_shot("tiny", "none", ordering)
        shutil.copytree(built, folder)
        edit(folder, "zero_shot", lambda t, o=ordering: t[t.ordering == o])
    return store


def _row(lines, heading, first_cell):
    """The cells of the table row starting with `first_cell` in the section under `heading`."""
    start = lines.index(heading)
    for line in lines[start + 1:]:
        if line.startswith("### "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} under {heading!r}")


def _cell(value):
    return f"{value:.4g}"


def test_learning_dynamics_numbers_are_the_tables_changes_shares_and_r2(root):
    lines = findings.findings(root.root)
    logprobs = pd.read_parquet(root.root + f"/dynamics/tiny/{VARIANT}/sft/logprobs.parquet")
    trained = logprobs[logprobs.probe_id == "p0"].set_index("step")
    change = trained.logp_sum[3] - trained.logp_sum[0]
    summary = pd.read_parquet(root.root + f"/dynamics/tiny/{VARIANT}/dpo/influence_summary.parquet")
    predicted = summary[summary.probe_id == "p0"].predicted_delta.sum()
    sft = _row(lines, f"### tiny|{VARIANT} sft", "trained")
    dpo = _row(lines, f"### tiny|{VARIANT} dpo", "chosen")  # DPO names the trained response chosen
    assert sft[1] == "1" and sft[2] == _cell(change) and dpo[2] == _cell(change)
    assert sft[3] == _cell(change / trained.n_response_tokens[0])
    assert dpo[6:9] == [_cell(predicted), _cell(1.5 * predicted), _cell(-0.5 * predicted)]
    assert _row(lines, f"### tiny|{VARIANT} dpo", "rejected")[0] == "rejected"
    p = summary.predicted_delta.to_numpy()
    m = summary.measured_delta.to_numpy()
    r2 = 1 - ((m - p) ** 2).sum() / ((m - m.mean()) ** 2).sum()
    assert any(f"R² of predicted vs measured {r2:.4f}; check passed" in line for line in lines)
    said = [line for line in lines if line.startswith("greedy now")]
    assert len(said) == 2 and "at step 2 0% of 1 prompts still give the step-0 response" in said[0]


def test_zero_shot_losses_per_ordering_at_the_first_and_last_eval_step_with_ranks(root):
    from pathlib import Path

    for table in Path(root.root, "zero_shot").rglob("generation_metrics.parquet"):  # a run from before the metrics
        table.unlink()
    lines = findings.findings(root.root)
    losses = pd.read_parquet(root.root + "/zero_shot/tiny/none/nft/zero_shot.parquet")
    total = losses[losses.task == "__all__"].set_index("step").loss
    nft = _row(lines, "### tiny, none CoT", "nft")
    first, last = total[total.index.min()], total[total.index.max()]
    assert nft[1:4] == [_cell(first), _cell(last), _cell(100 * (last / first - 1))]
    # planted: each ordering's loss falls faster than the one before (rt, nft, gradient): gradient lowest after 0
    assert nft[4] == "1 2 2" and _row(lines, "### tiny, none CoT", "gradient")[4] == "1 1 1"
    assert "no generation metrics (no generation_metrics table): the loss alone" in lines
    loss = _row(lines, "### tiny, none CoT", "loss")  # the first spread row: loss, gradient ordering
    assert loss[1] == "gradient" and loss[-1] == "1"  # every task's loss went down


def test_generation_metrics_spread_across_tasks_beside_the_loss():
    steps, tasks = (0, 4), ("a", "b", "c")
    losses = pd.DataFrame([("nft", s, t, 3.0 - 0.5 * (s > 0), 2) for s in steps for t in (*tasks, "__all__")],
                          columns=["ordering", "step", "task", "loss", "n_examples"])
    rouge = {("a", 4): 0.5, ("b", 4): 0.1, ("c", 4): 0.0}
    metrics = pd.DataFrame([("nft", s, t, rouge.get((t, s), 0.2), 0.3, 0.0, 2) for s in steps for t in tasks],
                           columns=["ordering", "step", "task", "rouge1", "rougeL", "exact_match", "n_examples"])
    spread = findings.metric_spread(losses, metrics).set_index("metric")
    assert list(spread.index) == ["loss", "rouge1", "rougeL", "exact_match"]
    assert spread.at["loss", "change mean"] == pytest.approx(-0.5) and spread.at["loss", "change std"] == 0
    assert spread.at["loss", "tasks improved"] == 1.0
    changes = np.array([0.3, -0.1, -0.2])
    assert spread.at["rouge1", "change mean"] == pytest.approx(changes.mean())
    assert spread.at["rouge1", "change std"] == pytest.approx(changes.std(ddof=1))
    assert spread.at["rouge1", "tasks improved"] == pytest.approx(1 / 3)
    assert math.isnan(spread.at["rougeL", "change CV"])  # no change: no coefficient of variation
    assert "reward" not in spread.index  # absent columns are skipped


def test_the_last_steps_loss_across_seeds_per_ordering():
    def run(rt, nft):
        return pd.DataFrame([("rt", 0, "__all__", 3.0), ("nft", 0, "__all__", 3.0), ("rt", 2, "__all__", rt),
                             ("nft", 2, "__all__", nft)], columns=["ordering", "step", "task", "loss"])

    table = findings.across_seeds({0: run(2.9, 2.8), 1: run(2.84, 2.85)}).set_index("ordering")
    assert table.at["nft", "mean"] == pytest.approx(2.825) and table.at["rt", "mean"] == pytest.approx(2.87)
    assert table.at["nft", "std"] == pytest.approx(np.std([2.8, 2.85], ddof=1))
    assert (table.at["nft", "lowest in"], table.at["rt", "lowest in"]) == (1, 1)
    assert table.at["rt", "seed 1"] == 2.84 and table.index[0] == "nft"


def test_the_command_prints_markdown_and_skips_what_is_absent(root, tmp_path, capsys):
    assert findings.main(["--root", root.root]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Findings from {root.root}") and "## Zero-shot dynamics" in out
    assert "no multi-seed zero-shot run: skipped" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert findings.main(["--root", str(empty)]) == 0
    out = capsys.readouterr().out
    assert f"no learning-dynamics run under {empty}" in out and f"no zero-shot run under {empty}" in out
    assert findings.main(["--root", str(tmp_path / "absent")]) == 2
    assert "--root" in capsys.readouterr().err


def test_a_torn_table_is_skipped_not_raised(root):
    from lg_pipeline.vocabulary import StatsKey

    root.dynamics_table(StatsKey.of("tiny", VARIANT), "sft", "logprobs").write_bytes(b"torn")
    lines = findings.findings(root.root)
    assert lines[lines.index(f"### tiny|{VARIANT} sft") + 2] == "tables missing: skipped"


class _SeededStore:
    """The output store with multi-seed zero-shot runs (as `OutputStore.zero_shot_seed_runs` lists them:
    model, level, ordering, seed, run folder) and no single-seed run."""

    def __init__(self, root, runs):
        self.root, self.runs = root, runs

    def zero_shot_runs(self):
        return []

    def zero_shot_seed_runs(self):
        return self.runs


def test_multi_seed_runs_are_shown_per_seed_and_across_seeds(tmp_path):
    runs = []
    for seed, shift in ((0, 0.0), (1, 0.2)):
        folder = zero_shot_folder(tmp_path / f"seed-{seed}")
        edit(folder, "zero_shot", lambda t, d=shift: t.assign(loss=t.loss + d * (t.ordering == "nft") * t.step))
        runs += [("tiny", "none", o, seed, folder) for o in ("rt", "nft", "gradient")]
    lines = findings.zero_shot_findings(_SeededStore(str(tmp_path), runs))
    assert "### tiny, none CoT, seed 0" in lines and "### tiny, none CoT, seed 1" in lines
    nft = _row(lines, "### Across seeds: tiny, none CoT", "nft")
    last = pd.read_parquet(tmp_path / "seed-0" / "zero_shot.parquet").query("task == '__all__' and ordering == 'nft'")
    end = last.loss[last.step == last.step.max()].iloc[0]
    assert nft[1] == "2" and nft[-2:] == [_cell(end), _cell(end + 0.2 * 3)]
    assert nft[3] == _cell(np.std([end, end + 0.6], ddof=1))


def test_run_folders_outside_the_root_are_read_with_their_objective(tmp_path, capsys):
    dpo = learning_folder(tmp_path / "cli-dpo")
    _dpo(dpo)
    zero_shot = zero_shot_folder(tmp_path / "cli-zero-shot")  # one folder holding every ordering (the CLI's)
    empty = tmp_path / "outputs"
    empty.mkdir()
    argv = ["--root", str(empty), "--dynamics-run", str(dpo), "--zero-shot-run", str(zero_shot)]
    assert findings.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _row(lines, f"### {dpo}", "rejected")[0] == "rejected"  # read as the DPO run its run.json names
    assert [_row(lines, f"### {zero_shot}", o)[0] for o in ("gradient", "nft", "rt")]
    assert findings.main([*argv, "--dynamics-run", str(tmp_path / "absent")]) == 2
    assert "--dynamics-run" in capsys.readouterr().err
