"""Faults a run must survive: kill -9 at every write boundary and at random points, two writers, a torn table, a
full disk (at every write), settings changed between runs (chat/no-chat, weights, dtype), a NaN weight, responses cut
at max_length."""

from __future__ import annotations

import errno
import os
import random
import signal
import time
from typing import Any

import pandas as pd
import pytest
import torch

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.gradients import runner as runner_module
from lg_pipeline.gradients.engine import EngineConfig
from lg_pipeline.gradients.runner import key_path, run_to_parquet, status_path
from lg_pipeline.io import atomic
from lg_pipeline.io.locks import output_lock
from tests.helpers import faults
from tests.helpers.builders import example, make_model, stats_mismatches

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLES = [example(f"ex{i}", 5 + i, 10 + 4 * i) for i in range(8)]
CONFIG = EngineConfig(batch_size=1, targets=("q_proj", "v_proj"), max_length=256)
QUIET = {"report": lambda m: None}


def indexed(path) -> pd.DataFrame:
    return pd.read_parquet(path).set_index(["example_id", "parameter"]).sort_index()


@pytest.fixture(scope="module")
def reference(llama, tokenizer, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("ref") / "stats.parquet"
    run_to_parquet(llama, tokenizer, EXAMPLES, CONFIG, out, **QUIET)
    return indexed(out)


def _child(target, *args: Any, slow_s: float = 0.0) -> int:
    """Fork a process running `target(*args)`; exit 0 on success, 3 on InputError (refused), 1 otherwise."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        if slow_s:  # spread the run over time so that kills land at varied points (also inside writes)
            original = atomic.write_parquet

            def slow_write(frame, path, *args):
                time.sleep(slow_s)
                return original(frame, path, *args)

            atomic.write_parquet = slow_write
            runner_module.write_parquet = slow_write
        target(*args)
        code = 0
    except InputError:
        code = 3
    finally:
        os._exit(code)


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.slow
def test_kill_9_at_every_write_boundary_then_a_rerun_equals_an_uninterrupted_run(llama, tokenizer, tmp_path):
    import shutil

    folder = tmp_path / "out"
    out = folder / "stats.parquet"
    examples, config = EXAMPLES[:3], EngineConfig(batch_size=1, targets=("q_proj", "v_proj"), max_length=256)
    run = lambda: run_to_parquet(llama, tokenizer, examples, config, out, **QUIET)  # noqa: E731
    run()
    stats, status = indexed(out), pd.read_parquet(status_path(out)).set_index("example_id").sort_index()
    shutil.rmtree(folder)

    def check() -> None:
        assert stats_mismatches(indexed(out), stats, rel=1e-6) == []
        pd.testing.assert_frame_equal(pd.read_parquet(status_path(out)).set_index("example_id").sort_index(), status)
        assert set(pd.read_parquet(status_path(out)).status) == {"ok"}

    assert faults.kill_at_every_boundary(run, folder, check, minimum=20) == []


@pytest.mark.slow
def test_a_full_disk_at_every_write_is_one_line_and_the_rerun_completes(llama, tokenizer, tmp_path, monkeypatch):
    examples, config = EXAMPLES[:3], EngineConfig(batch_size=1, targets=("q_proj",), max_length=256)
    reference_out = tmp_path / "reference.parquet"
    run_to_parquet(llama, tokenizer, examples, config, reference_out, **QUIET)
    reference = indexed(reference_out)
    for n in range(1, 13):  # 3 batches of (statistics, outcomes, marker), then the three finished files
        out = tmp_path / f"run{n}" / "stats.parquet"
        with monkeypatch.context() as patch:
            faults.full_disk_at(patch, n)
            with pytest.raises(InputError) as caught:
                run_to_parquet(llama, tokenizer, examples, config, out, **QUIET)
        message = str(caught.value)
        assert "\n" not in message and f"{out}: cannot write (No space left on device)" in message, message
        assert ".tmp" not in message
        summary = run_to_parquet(llama, tokenizer, examples, config, out, **QUIET)
        assert summary.counts["ok"] == 3 and stats_mismatches(indexed(out), reference, rel=1e-6) == [], n
        assert faults.leftovers(out.parent) == []


def test_other_weights_are_computed_beside_and_never_mixed(tokenizer, tmp_path):
    out = tmp_path / "stats.parquet"
    config = EngineConfig(batch_size=2, targets=("q_proj",))
    run_to_parquet(make_model("llama-gqa"), tokenizer, EXAMPLES[:2], config, out, **QUIET)
    said: list[str] = []
    other = make_model("llama-gqa", seed=1)
    summary = run_to_parquet(other, tokenizer, EXAMPLES[:2], config, out, report=said.append)
    assert summary.resumed == 0 and any("computed another way (weights:" in line for line in said)
    fresh = tmp_path / "fresh.parquet"
    run_to_parquet(other, tokenizer, EXAMPLES[:2], config, fresh, **QUIET)
    assert stats_mismatches(indexed(out), indexed(fresh), rel=0) == [] and pd.read_parquet(out).run_key.nunique() == 1


@pytest.mark.slow
def test_kill_9_at_random_points_resumes_to_the_uninterrupted_table(llama, tokenizer, tmp_path, reference):
    out = tmp_path / "stats.parquet"
    rng = random.Random(11)
    mid_run = 0
    for _ in range(10):
        pid = _child(run_to_parquet, llama, tokenizer, EXAMPLES, CONFIG, out, None, lambda m: None, slow_s=0.05)
        time.sleep(rng.uniform(0.05, 0.5))
        finished = os.waitpid(pid, os.WNOHANG)[0] == pid
        if not finished:
            os.kill(pid, signal.SIGKILL)
            mid_run += _wait(pid) == -signal.SIGKILL
        if out.exists():  # whatever the moment, a table on disk is whole
            pd.read_parquet(out)
        out.unlink(missing_ok=True) if finished else None  # a run that got to the end starts over
        status_path(out).unlink(missing_ok=True) if finished else None
    assert mid_run >= 5, f"only {mid_run} of 10 kills landed mid-run"
    summary = run_to_parquet(llama, tokenizer, EXAMPLES, CONFIG, out, **QUIET)
    assert summary.counts == {"ok": 8, "skipped": 0, "failed": 0}
    resumed = indexed(out)
    assert not resumed.index.duplicated().any()
    assert stats_mismatches(resumed, reference, rel=1e-6) == []
    assert not list(tmp_path.glob("*.parts")), "chunks of finished work are removed"


@pytest.mark.slow
def test_two_processes_on_one_output_one_refuses_at_once_or_both_complete(llama, tokenizer, tmp_path, reference):
    out = tmp_path / "stats.parquet"
    args = (llama, tokenizer, EXAMPLES, CONFIG, out, None, lambda m: None)
    first = _child(lambda *a: run_to_parquet(*a, wait=False), *args, slow_s=0.02)
    time.sleep(0.3)
    started = time.monotonic()
    second = _child(lambda *a: run_to_parquet(*a, wait=False), *args)
    second_code = _wait(second)
    second_took = time.monotonic() - started
    assert _wait(first) == 0
    assert second_code in (0, 3)
    if second_code == 3:
        assert second_took < 30  # refused at once, not after computing
    assert stats_mismatches(indexed(out), reference, rel=1e-6) == []


@pytest.mark.slow
def test_two_processes_that_wait_both_end_with_the_complete_table(llama, tokenizer, tmp_path, reference):
    out = tmp_path / "stats.parquet"
    args = (llama, tokenizer, EXAMPLES, CONFIG, out, None, lambda m: None)
    pids = [_child(run_to_parquet, *args, slow_s=0.01) for _ in range(2)]
    assert [_wait(p) for p in pids] == [0, 0]
    table = indexed(out)
    assert not table.index.duplicated().any() and stats_mismatches(table, reference, rel=1e-6) == []


@pytest.mark.slow
def test_a_second_cli_writer_fails_at_once_naming_the_holder(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "stats.parquet"
    with output_lock(out):
        cmd = [sys.executable, "-m", "lg_pipeline.cli", "gradients", "--model", str(tmp_path), "--data",
               str(tmp_path / "d.json"), "--out", str(out)]
        (tmp_path / "d.json").write_text('[{"instruction": "q", "output": "a"}]')
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"{out} is being written by pid {os.getpid()}" in line


def test_chat_and_no_chat_rows_are_never_mixed(llama, tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "stats.parquet"
    chat = EngineConfig(batch_size=2, targets=("q_proj",), chat=True)
    run_to_parquet(llama, tokenizer, EXAMPLES[:4], chat, out, **QUIET)
    chat_table = pd.read_parquet(out)
    said: list[str] = []
    summary = run_to_parquet(llama, tokenizer, EXAMPLES[:4], EngineConfig(batch_size=2, targets=("q_proj",)), out,
                             report=said.append)
    assert summary.resumed == 0, "rows computed with the chat template must not be reused"
    table = pd.read_parquet(out)
    assert set(table.chat) == {False} and table.run_key.nunique() == 1
    assert any("chat: True -> False" in line for line in said)
    merged = table.merge(chat_table, on=["example_id", "parameter"], suffixes=("", "_chat"))
    assert (merged.loss != merged.loss_chat).all()


def test_a_changed_key_computes_beside_the_finished_table_and_swaps_on_success(
    llama, tokenizer, tmp_path, monkeypatch
):
    out = tmp_path / "stats.parquet"
    run_to_parquet(llama, tokenizer, EXAMPLES[:4], CONFIG, out, **QUIET)
    before = out.read_bytes(), status_path(out).read_bytes()
    other = EngineConfig(batch_size=1, targets=("k_proj",))
    calls = []
    embeddings = llama.get_input_embeddings()  # every forward path starts here (the chunked loss skips model.forward)
    original = embeddings.forward

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(embeddings, "forward", forward)
        with pytest.raises(KeyboardInterrupt):
            run_to_parquet(llama, tokenizer, EXAMPLES[:4], other, out, **QUIET)
    assert (out.read_bytes(), status_path(out).read_bytes()) == before, "finished table deleted before replaced"
    run_to_parquet(llama, tokenizer, EXAMPLES[:4], other, out, **QUIET)
    assert set(pd.read_parquet(out).module) == {"k_proj"}


def test_a_torn_finished_table_is_recomputed_not_fatal(llama, tokenizer, tmp_path, reference):
    out = tmp_path / "stats.parquet"
    run_to_parquet(llama, tokenizer, EXAMPLES, CONFIG, out, **QUIET)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    said: list[str] = []
    summary = run_to_parquet(llama, tokenizer, EXAMPLES, CONFIG, out, report=said.append)
    assert summary.counts["ok"] == 8 and summary.resumed == 0
    assert any("cannot read the finished table" in line for line in said)
    assert stats_mismatches(indexed(out), reference, rel=1e-6) == []


def test_a_full_disk_is_one_line_and_finished_rows_are_kept(llama, tokenizer, tmp_path, monkeypatch, reference):
    out = tmp_path / "stats.parquet"
    original, appended = atomic.ChunkedTable.append, []

    def append(self, frame):
        if len(appended) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        appended.append(1)
        return original(self, frame)

    with monkeypatch.context() as patch:
        patch.setattr(atomic.ChunkedTable, "append", append)
        with pytest.raises(InputError) as caught:
            run_to_parquet(llama, tokenizer, EXAMPLES, CONFIG, out, **QUIET)
    message = str(caught.value)
    assert "\n" not in message and "No space left on device" in message and "2 finished examples are kept" in message
    summary = run_to_parquet(llama, tokenizer, EXAMPLES, CONFIG, out, **QUIET)
    assert summary.resumed == 2 and summary.counts["ok"] == 8
    assert stats_mismatches(indexed(out), reference, rel=1e-6) == []


def test_a_nan_weight_is_reported_as_a_loss_that_is_not_finite(tokenizer, tmp_path):
    model = make_model("llama-gqa")
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[0, 0] = float("nan")
    out = tmp_path / "stats.parquet"
    summary = run_to_parquet(model, tokenizer, EXAMPLES[:2], EngineConfig(batch_size=2), out, **QUIET)
    assert summary.counts["failed"] == 2
    for problem in summary.problems:  # the logits (one example) or only the gradient (the other) hold NaN
        reason = problem["reason"]
        assert "loss is not finite" in reason or "model.layers.0.self_attn.q_proj.weight" in reason, reason
        assert "not finite" in reason and "linalg" not in reason


def test_responses_cut_at_max_length_are_flagged_and_counted(llama, tokenizer, tmp_path):
    out = tmp_path / "stats.parquet"
    fits, cut = example("fits", 6, 10), Example("cut", "short q", "a long answer " * 10)
    exact = example("exact", 6, 34)  # 40 tokens: fills max_length exactly, nothing cut
    said: list[str] = []
    summary = run_to_parquet(llama, tokenizer, [fits, cut, exact], EngineConfig(batch_size=3, max_length=40), out,
                             report=said.append)
    table = pd.read_parquet(out).groupby("example_id").truncated.first()
    assert table.to_dict() == {"cut": True, "exact": False, "fits": False}
    assert summary.truncated == 1 and any("1 responses were cut" in line for line in said)


def test_the_run_key_names_every_setting_that_changes_a_number(llama, tokenizer, tmp_path):
    out = tmp_path / "stats.parquet"
    run_to_parquet(llama, tokenizer, EXAMPLES[:1], CONFIG, out, {"dataset": "d"}, **QUIET)
    import json

    fields = json.loads(key_path(out).read_text())
    for name in ("engine", "weights", "dtype", "device_type", "targets", "max_length", "chat", "extra"):
        assert name in fields, name
    assert fields["dtype"] == "float32" and fields["device_type"] == "cpu"
    other_weights = make_model("llama-gqa", seed=1)
    assert runner_module.weights_fingerprint(other_weights) != fields["weights"]


def test_rows_computed_in_another_dtype_are_never_reused(tokenizer, tmp_path):
    model = make_model("llama-gqa")
    out = tmp_path / "stats.parquet"
    config = EngineConfig(batch_size=2, targets=("q_proj",))
    run_to_parquet(model, tokenizer, EXAMPLES[:2], config, out, **QUIET)
    summary = run_to_parquet(model.to(torch.bfloat16), tokenizer, EXAMPLES[:2], config, out, **QUIET)
    assert summary.resumed == 0 and set(pd.read_parquet(out).dtype) == {"bfloat16"}
