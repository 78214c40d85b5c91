import pandas as pd
import pytest

from lg_pipeline.dynamics.learning.checks import agreement, completeness_failures
from lg_pipeline.dynamics.learning.probes import build_probes
from lg_pipeline.dynamics.learning.run import run_dynamics
from lg_pipeline.dynamics.training import TrainConfig
from tests.helpers.builders import make_model, make_tokenizer
from tests.helpers.dynamics import rows, wrong_rows

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
CONFIG = TrainConfig(steps=4, batch_size=2, learning_rate=1e-4)


class Stop(Exception):
    pass


def _run(out, progress=None):
    probes = build_probes(rows(), 3, 8, seed=0, wrong=wrong_rows())
    return run_dynamics(make_model("llama-gqa"), make_tokenizer(), rows(), probes, CONFIG, out, 2, progress=progress)


def test_a_run_writes_complete_finite_tables_and_reports_r2(tmp_path):
    summary = _run(tmp_path)
    assert completeness_failures(tmp_path, 4, 2) == []
    assert summary.eval_steps == [0, 2] and summary.r2 == pytest.approx(agreement(tmp_path))
    assert summary.r2 > 0.99
    assert set(pd.read_parquet(tmp_path / "probes.parquet").columns) >= {"probe_id", "prompt_id", "probe_type"}
    stats = pd.read_parquet(tmp_path / "train_gradient_stats.parquet")
    assert {"step", "example_id", "nuclear_norm", "sigma_max", "loss"} <= set(stats.columns)


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


def test_changed_settings_start_the_run_over(tmp_path):
    def stop_after_step_1(step, total):
        if step == 1:
            raise Stop

    with pytest.raises(Stop):
        _run(tmp_path, stop_after_step_1)
    probes = build_probes(rows(), 3, 8, seed=0)
    other = TrainConfig(steps=4, batch_size=2, learning_rate=2e-4)
    summary = run_dynamics(make_model("llama-gqa"), make_tokenizer(), rows(), probes, other, tmp_path, 2)
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
