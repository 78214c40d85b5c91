"""A learning-dynamics run: complete tables, resume, and the faults it must survive (kill -9 at every write boundary,
two writers, a full disk, other weights / dtype / settings, a loss that is not finite, fp16)."""

import json
import time

import pandas as pd
import pytest
import torch

from lg_pipeline.dynamics.learning import run as run_module
from lg_pipeline.dynamics.learning.checks import agreement, completeness_failures
from lg_pipeline.dynamics.learning.run import (
    LearningDynamicsSettings,
    TrainingData,
    learning_run,
    run_learning_dynamics,
)
from lg_pipeline.dynamics.training import TrainSettings
from lg_pipeline.errors import InputError, RunStopped
from lg_pipeline.io.locks import output_lock
from lg_pipeline.io.manifest import read_manifest
from tests.helpers import faults
from tests.helpers.builders import make_model, make_tokenizer
from tests.helpers.dynamics import assert_a_complete_dpo_folder, loader, rows, wrong_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
SETTINGS = LearningDynamicsSettings(TrainSettings(steps=4, batch_size=2, learning_rate=1e-4), eval_every=2, n_probes=3)
# The fault tests' run: two measured steps of two rows, two probe prompts (every table written twice).
SMALL = LearningDynamicsSettings(TrainSettings(steps=2, batch_size=2, learning_rate=1e-3), eval_every=1, n_probes=2)
QUIET = {"report": lambda m: None}


class Stop(Exception):
    pass


def _run(out, progress=None, settings=SETTINGS, data=None, model=None, **options):
    data = data or TrainingData(rows(), wrong=wrong_rows())
    load = loader(model if model is not None else make_model("llama-gqa"), make_tokenizer())
    return run_learning_dynamics(settings, data, load, out, progress=progress, **{**QUIET, **options})


def _small(out, model=None, **options):
    return _run(out, settings=SMALL, data=TrainingData(rows(4), wrong=wrong_rows(4)), model=model, **options)


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    _small(out)
    return faults.tables(out)


def test_a_run_writes_complete_finite_tables_and_reports_r2(tmp_path):
    summary = _run(tmp_path)
    assert completeness_failures(tmp_path, 4, 2) == []
    assert summary.eval_steps == [0, 2] and summary.r2 == pytest.approx(agreement(tmp_path))
    assert summary.r2 > 0.99
    probes = pd.read_parquet(tmp_path / "probes.parquet")
    assert set(probes.columns) >= {"probe_id", "prompt_id", "probe_type", "cut_tokens"}
    assert (probes.cut_tokens == 0).all()
    stats = pd.read_parquet(tmp_path / "train_gradient_stats.parquet")
    assert {"step", "example_id", "nuclear_norm", "sigma_max", "loss"} <= set(stats.columns)
    assert summary.companions == {"wrong": "same_prompt: each row's response with its final answer changed"}


def test_steps_and_evals_are_reported_as_they_happen_with_an_eta(tmp_path):
    from lg_pipeline.progress import StepProgress

    lines: list[str] = []
    _run(tmp_path, progress=StepProgress(lines.append), report=lines.append)
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(",")[0] for line in steps] == [f"step {k}/4" for k in range(1, 5)]
    assert all(" elapsed, ETA " in line for line in steps) and steps[-1].endswith("ETA 0s")
    evals = [i for i, line in enumerate(lines) if line.startswith("eval at step ")]
    n_probes = len(pd.read_parquet(tmp_path / "probes.parquet"))
    assert [lines[i] for i in evals] == [f"eval at step {s}: {n_probes} probes measured and committed" for s in (0, 2)]
    # As they happen: step 0's eval before step 1's line, step 2's before step 3's.
    assert evals[0] < lines.index(steps[0]) and lines.index(steps[1]) < evals[1] < lines.index(steps[2])


def test_every_table_says_where_it_came_from(tmp_path):
    _run(tmp_path, provenance={"data_file": "train.json", "dataset": "unit"})
    folder = learning_run(tmp_path)
    key = json.loads(folder.settings_file.read_text())["run_key"]
    for table in (*run_module.TABLES, "probes"):
        manifest = read_manifest(folder.table(table))
        assert manifest["kind"] == f"dynamics.{table}" and manifest["run_key"] == key, table
        assert manifest["data_file"] == "train.json" and manifest["dataset"] == "unit"
        assert manifest["dtype"] == "float32" and manifest["device_type"] == "cpu"
        assert manifest["engine_version"] == run_module.LEARNING_DYNAMICS_VERSION
        assert len(manifest["weights_fingerprint"]) == 16 and manifest["settings"]["eval_every"] == 2
    influence = pd.read_parquet(folder.table("influence"))
    assert set(influence.parameter) == set(read_manifest(folder.table("influence"))["parameters"])


def test_a_stopped_run_resumes_without_measuring_finished_steps_again(tmp_path):
    fresh = tmp_path / "fresh"
    _run(fresh)

    def stop_after_step_2(step, total):
        if step == 3:
            raise Stop

    stopped = tmp_path / "stopped"
    with pytest.raises(Stop):
        _run(stopped, stop_after_step_2)
    assert not (stopped / "influence_summary.parquet").exists()
    summary = _run(stopped)
    assert summary.resumed_steps == [0, 2]
    for table in ("influence_summary", "logprobs", "kernel", "influence"):
        a, b = pd.read_parquet(fresh / f"{table}.parquet"), pd.read_parquet(stopped / f"{table}.parquet")
        pd.testing.assert_frame_equal(a, b)
    assert faults.leftovers(stopped) == []


def test_a_rerun_of_a_finished_run_trains_nothing(tmp_path, monkeypatch):
    _run(tmp_path)
    before = faults.tables(tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(run_module, "fine_tune", no_training)
    said: list[str] = []
    summary = _run(tmp_path, report=said.append)
    assert summary.resumed_steps == [0, 2] and any("nothing to do" in line for line in said)
    faults.assert_same_tables(faults.tables(tmp_path), before, rtol=0)


def test_changed_settings_start_the_run_over(tmp_path):
    def stop_after_step_1(step, total):
        if step == 1:
            raise Stop

    with pytest.raises(Stop):
        _run(tmp_path, stop_after_step_1)
    other = LearningDynamicsSettings(TrainSettings(steps=4, batch_size=2, learning_rate=2e-4), eval_every=2, n_probes=3)
    summary = _run(tmp_path, settings=other)
    assert summary.resumed_steps == []


def test_completeness_names_what_is_missing_or_not_finite(tmp_path):
    _run(tmp_path)
    frame = pd.read_parquet(tmp_path / "influence_summary.parquet")
    frame.loc[0, "measured_delta"] = float("nan")
    frame[frame.step == 0].to_parquet(tmp_path / "influence_summary.parquet")
    failures = completeness_failures(tmp_path, 4, 2)
    assert any("eval step 2" in f for f in failures)
    assert any("influence_summary: 1 non-finite value(s) in measured_delta" in f for f in failures)
    (tmp_path / "kernel.parquet").unlink()
    assert completeness_failures(tmp_path, 4, 2) == ["missing table(s): kernel"]


def test_kill_9_at_every_write_boundary_then_a_rerun_equals_an_uninterrupted_run(tmp_path, small_reference):
    out = tmp_path / "run"
    check = lambda: faults.assert_same_tables(faults.tables(out), small_reference)  # noqa: E731
    assert faults.kill_at_every_boundary(lambda: _small(out), out, check, minimum=30) == []


@pytest.mark.parametrize("apart_s", [0.0, 1.0], ids=["together", "a second apart"])
def test_two_writers_one_refused_naming_the_holder_or_both_complete(tmp_path, small_reference, apart_s):
    out = tmp_path / "run"
    codes = faults.two_writers(lambda wait: _small(out, wait=wait), out, apart_s)
    assert codes in ([0, 0], [0, faults.REFUSED]), codes
    faults.assert_same_tables(faults.tables(out), small_reference)
    assert faults.leftovers(out) == []


def test_two_waiting_writers_both_end_with_the_complete_tables(tmp_path, small_reference):
    out = tmp_path / "run"
    assert faults.two_writers(lambda wait: _small(out, wait=wait), out, 0.0, wait_=True) == [0, 0]
    faults.assert_same_tables(faults.tables(out), small_reference)


def test_a_held_output_is_refused_at_once_naming_the_holder(tmp_path):
    import os
    import threading

    out, caught = tmp_path / "run", []

    def second_writer():  # another thread: the lock is re-entrant only within the thread that holds it
        try:
            _small(out, wait=False)
        except InputError as exc:
            caught.append(str(exc))

    started = time.monotonic()
    with output_lock(out):
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
    assert time.monotonic() - started < 30 and not out.exists()
    assert len(caught) == 1 and f"{out} is being written by pid {os.getpid()}" in caught[0]


def test_a_full_disk_is_one_line_and_a_rerun_completes_the_tables(tmp_path, small_reference, monkeypatch):
    out = tmp_path / "run"
    check = lambda: faults.assert_same_tables(faults.tables(out), small_reference)  # noqa: E731
    # a chunk, a commit marker, a later step, the train log, the finished tables
    faults.full_disk_then_rerun(monkeypatch, lambda: _small(out), out, (1, 3, 7, 13, 16, 20),
                                "finished eval steps are kept", check)


def test_other_weights_are_computed_beside_and_never_mixed(tmp_path):
    out = tmp_path / "run"
    _small(out)
    before = {p.name: p.read_bytes() for p in out.glob("*.parquet")}

    def stop_after_step_0(step, total):
        if step == 1:
            raise Stop

    other = make_model("llama-gqa", seed=1)
    with pytest.raises(Stop):
        _small(out, model=other, progress=stop_after_step_0)
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == before, "finished tables replaced early"
    said: list[str] = []
    summary = _small(out, model=other, report=said.append)
    assert summary.resumed_steps == [0] and any("computed another way (weights:" in line for line in said)
    keys = {read_manifest(p)["run_key"] for p in out.glob("*.parquet")}
    assert keys == {json.loads(learning_run(out).settings_file.read_text())["run_key"]}
    fresh = tmp_path / "fresh"
    _small(fresh, model=other)
    faults.assert_same_tables(faults.tables(out), faults.tables(fresh))


def test_another_dtype_is_computed_beside(tmp_path):
    out = tmp_path / "run"
    _small(out)
    first = pd.read_parquet(out / "logprobs.parquet")
    summary = _small(out, model=make_model("llama-gqa").to(torch.bfloat16))
    assert summary.resumed_steps == []
    assert read_manifest(out / "logprobs.parquet")["dtype"] == "bfloat16"
    assert not pd.read_parquet(out / "logprobs.parquet").logp_sum.equals(first.logp_sum)


def test_a_loss_that_is_not_finite_stops_the_run_naming_the_step_and_the_learning_rate(tmp_path):
    settings = LearningDynamicsSettings(TrainSettings(steps=3, batch_size=2, learning_rate=1e30), 1, 2)
    with pytest.raises(RunStopped) as caught:
        _run(tmp_path, settings=settings, data=TrainingData(rows(4)))
    message = str(caught.value)
    assert "\n" not in message and "step 0" in message and "not finite" in message
    assert "lower learning_rate (it is 1e+30)" in message
    assert not list(tmp_path.glob("*.parquet")), "no table of NaN is written"


def test_fp16_weights_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="dtype float16"):
        _small(tmp_path / "run", model=make_model("llama-gqa").half())
    assert not (tmp_path / "run").exists()


def test_a_model_is_loaded_only_after_the_inputs_are_checked(tmp_path):
    loads = []

    def load():
        loads.append(1)
        return loader(make_model("llama-gqa"), make_tokenizer())()

    with pytest.raises(InputError, match="n_probes: 9 probes but the training data has 4 rows"):
        run_learning_dynamics(LearningDynamicsSettings(SMALL.train, 1, 9), TrainingData(rows(4)), load, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds 'notes.txt', which is not a file of a dynamics run"):
        run_learning_dynamics(SMALL, TrainingData(rows(4)), load, tmp_path)
    assert loads == [] and (tmp_path / "notes.txt").read_text() == "mine"


DPO = LearningDynamicsSettings(
    TrainSettings(steps=3, batch_size=2, learning_rate=1e-2, objective="dpo", optimizer="sgd", trainable="attention"),
    eval_every=1, n_probes=2, greedy_max_new_tokens=4,
)


def test_a_dpo_run_passes_every_rule_with_greedy_probes_concentration_kernel_and_shares(tmp_path):
    summary = _run(tmp_path, settings=DPO, data=TrainingData(rows(6), wrong=wrong_rows(6)))
    assert summary.eval_steps == [0, 1, 2]
    assert_a_complete_dpo_folder(tmp_path, 3)
