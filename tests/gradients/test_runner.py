"""Resumable runs: an interrupted run resumes where it stopped; failures are recorded, counted and retried."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from lg_pipeline.example import Example
from lg_pipeline.gradients.engine import EngineConfig
from lg_pipeline.gradients.runner import run_to_parquet, status_path
from lg_pipeline.schema import GRADIENT_COLUMNS, PROVENANCE_COLUMNS
from tests.helpers.builders import example, poison_forward, stats_mismatches

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLES = [example(f"ex{i}", 5 + i, 10 + 7 * i) for i in range(6)]
CONFIG = EngineConfig(batch_size=2, targets=("q_proj", "o_proj", "down_proj"))
EXTRA = {"model": "tiny", "dataset": "unit"}


def count_forwards(model: Any, monkeypatch: Any, interrupt_at: int | None = None) -> list[int]:
    """Count forward passes (at the embedding, which every path calls once per batch); with `interrupt_at`,
    that call raises KeyboardInterrupt (a killed run)."""
    calls: list[int] = []
    embeddings = model.get_input_embeddings()
    original = embeddings.forward

    def forward(input_ids: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(input_ids.shape[0])
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return original(input_ids, *args, **kwargs)

    monkeypatch.setattr(embeddings, "forward", forward)
    return calls


def run(model, tokenizer, examples: list[Example], out, config: EngineConfig = CONFIG, **options: Any):
    return run_to_parquet(model, tokenizer, examples, config, out, EXTRA, report=options.pop("report", None)
                          or (lambda msg: None), **options)


def indexed(path) -> pd.DataFrame:
    return pd.read_parquet(path).set_index(["example_id", "parameter"]).sort_index()


@pytest.fixture(scope="module")
def uninterrupted(llama, tokenizer, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("whole") / "stats.parquet"
    summary = run(llama, tokenizer, EXAMPLES, out)
    assert summary.counts == {"ok": 6, "skipped": 0, "failed": 0} and summary.resumed == 0
    return indexed(out)


def test_interrupted_run_resumes_only_the_rest(llama, tokenizer, tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "stats.parquet"
    with monkeypatch.context() as patch:
        count_forwards(llama, patch, interrupt_at=3)
        with pytest.raises(KeyboardInterrupt):
            run(llama, tokenizer, EXAMPLES, out)
    assert not out.exists()  # only the chunks of the two finished batches are on disk

    calls = count_forwards(llama, monkeypatch)
    summary = run(llama, tokenizer, EXAMPLES, out)
    assert calls == [2], "the rerun must compute only the last batch"
    assert summary.resumed == 4 and summary.counts == {"ok": 6, "skipped": 0, "failed": 0}
    resumed = indexed(out)
    assert not resumed.index.duplicated().any()
    assert stats_mismatches(resumed, uninterrupted, rel=1e-6) == []
    assert list(pd.read_parquet(out).columns) == [*GRADIENT_COLUMNS, *PROVENANCE_COLUMNS, *EXTRA]
    status = pd.read_parquet(status_path(out))
    assert sorted(status.example_id) == sorted(e.example_id for e in EXAMPLES) and set(status.status) == {"ok"}
    assert not list(tmp_path.glob("*.parts")), "the chunks go once the table is in place"


def test_rerunning_a_finished_run_gives_the_same_table(llama, tokenizer, tmp_path, uninterrupted):
    out = tmp_path / "stats.parquet"
    run(llama, tokenizer, EXAMPLES, out)
    run(llama, tokenizer, EXAMPLES, out)
    again = indexed(out)
    assert not again.index.duplicated().any() and stats_mismatches(again, uninterrupted, rel=1e-6) == []


def test_failed_example_is_recorded_counted_and_retried(llama, tokenizer, tmp_path, monkeypatch, uninterrupted):
    bad = Example("bad", "prompt", "a ~ response")
    examples = [*EXAMPLES[:3], bad, *EXAMPLES[3:]]
    out = tmp_path / "stats.parquet"
    with monkeypatch.context() as patch:
        poison_forward(llama, patch)
        summary = run(llama, tokenizer, examples, out)
    assert summary.counts == {"ok": 6, "skipped": 0, "failed": 1}
    assert summary.problems == [{"example_id": "bad", "status": "failed", "reason": "ValueError: poisoned example"}]
    first = indexed(out)
    assert "bad" not in first.index.get_level_values("example_id")
    assert stats_mismatches(first, uninterrupted) == []

    calls = count_forwards(llama, monkeypatch)
    summary = run(llama, tokenizer, examples, out)
    assert calls == [1] and summary.resumed == 6
    assert summary.counts == {"ok": 7, "skipped": 0, "failed": 0} and summary.problems == []
    status = pd.read_parquet(status_path(out))
    assert len(status) == 7 and set(status.status) == {"ok"}, "status log must hold each example's latest outcome"
    assert len(indexed(out).loc["bad"]) == 3 * 2  # 3 targets x 2 layers


def test_skipped_examples_are_counted_and_not_retried(llama, tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "stats.parquet"
    examples = [Example("too-long", "x" * 50, "answer"), *EXAMPLES[:2]]
    config = EngineConfig(batch_size=2, targets=("q_proj",), max_length=40)
    summary = run(llama, tokenizer, examples, out, config)
    assert summary.counts == {"ok": 2, "skipped": 1, "failed": 0}
    assert summary.problems[0]["example_id"] == "too-long" and "max_length=40" in summary.problems[0]["reason"]
    assert set(pd.read_parquet(out).example_id) == {"ex0", "ex1"}


def test_subset_then_full_set_computes_only_the_new_examples(llama, tokenizer, tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "stats.parquet"
    run(llama, tokenizer, EXAMPLES[:4], out)  # e.g. `--limit 4`, finished
    calls = count_forwards(llama, monkeypatch)
    summary = run(llama, tokenizer, EXAMPLES, out)
    assert calls == [2] and summary.resumed == 4 and summary.counts["ok"] == 6
    assert stats_mismatches(indexed(out), uninterrupted, rel=1e-6) == []


def test_a_smaller_limit_keeps_earlier_examples_and_says_so(llama, tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "stats.parquet"
    run(llama, tokenizer, EXAMPLES, out)
    calls, said = count_forwards(llama, monkeypatch), []
    summary = run(llama, tokenizer, EXAMPLES[:1], out, report=said.append)
    assert calls == [] and summary.counts["ok"] == 1 and summary.kept_earlier == 5
    assert set(pd.read_parquet(out).example_id) == {e.example_id for e in EXAMPLES}
    assert any("kept 5 earlier examples" in line for line in said)


def test_prune_leaves_exactly_the_examples_asked_for(llama, tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "stats.parquet"
    run(llama, tokenizer, EXAMPLES, out)
    calls = count_forwards(llama, monkeypatch)
    summary = run(llama, tokenizer, EXAMPLES[:3], out, prune=True)
    assert calls == [] and summary.n_examples == 3 and summary.counts["ok"] == 3 and summary.pruned == 3
    assert set(pd.read_parquet(out).example_id) == set(pd.read_parquet(status_path(out)).example_id) == {
        "ex0", "ex1", "ex2"
    }


def test_work_done_another_way_is_never_mixed_in(llama, tokenizer, tmp_path, monkeypatch):
    """Other targets (or engine version, model, max_length, chat) invalidate earlier chunks and tables."""
    out = tmp_path / "stats.parquet"
    with monkeypatch.context() as patch:
        count_forwards(llama, patch, interrupt_at=2)
        with pytest.raises(KeyboardInterrupt):
            run(llama, tokenizer, EXAMPLES, out)
    calls = count_forwards(llama, monkeypatch)
    other = EngineConfig(batch_size=2, targets=("k_proj",))
    summary = run(llama, tokenizer, EXAMPLES, out, other)
    assert calls == [2, 2, 2] and summary.resumed == 0
    assert set(pd.read_parquet(out).module) == {"k_proj"}


def test_progress_reports_every_example_with_its_tokens_rate_and_eta(llama, tokenizer, tmp_path):
    lines: list[str] = []
    run_to_parquet(llama, tokenizer, EXAMPLES[:5], CONFIG, tmp_path / "p.parquet", EXTRA, report=lines.append)
    assert lines[0] == "computing 5 examples in 3 batch(es) of up to 2"
    per_example = [line for line in lines if line.startswith("example ")]
    assert [line.split()[1] for line in per_example] == [f"{k}/5" for k in range(1, 6)]
    stats = pd.read_parquet(tmp_path / "p.parquet").groupby("example_id").n_tokens.first()
    for line, ex in zip(per_example, EXAMPLES[:5], strict=True):
        assert f"({ex.example_id}): {stats[ex.example_id]} tokens" in line
        assert " ex/s, " in line and "ETA " in line
    assert per_example[-1].endswith("ETA 0s")


@pytest.mark.parametrize("schedule", ["after-backward", "in-hook"])
def test_progress_inside_a_batch_comes_before_its_examples_lines(llama, tokenizer, tmp_path, schedule):
    lines: list[str] = []
    config = EngineConfig(batch_size=4, targets=("q_proj", "o_proj", "down_proj"), stats_schedule=schedule,
                          stats_workers=2)
    run_to_parquet(llama, tokenizer, EXAMPLES[:4], config, tmp_path / "p.parquet", EXTRA, report=lines.append)
    first_example = next(i for i, line in enumerate(lines) if line.startswith("example 1/4"))
    inside = lines[1:first_example]
    backward = [line for line in inside if ": backward done in " in line]
    quarters = [line for line in inside if ": statistics " in line]
    assert backward and backward[0].startswith("batch 1 (4 examples): backward done in ")
    # 3 targets x 2 layers = 6 matrices' gradients: lines at 1/4 (2 of 6) and 3/4 (5 of 6); 4/4 is "backward done".
    arriving = [line for line in inside if ": backward " in line and "% (" in line]
    assert [line.split(": backward ")[1].split(",")[0] for line in arriving] == [
        "25% (2/6 matrices' gradients)", "50% (3/6 matrices' gradients)", "75% (5/6 matrices' gradients)"]
    assert inside.index(arriving[-1]) < inside.index(backward[0]) and all(" elapsed, ETA " in x for x in arriving)
    # 3 targets x 2 layers x 4 examples = 24 matrices, reported at each quarter they cross, the last at 100%.
    assert quarters and quarters[-1].startswith("batch 1 (4 examples): statistics 100% (24/24 matrices)")
    percents = [int(line.split("statistics ")[1].split("%")[0]) for line in quarters]
    assert percents == sorted(set(percents)) and all(p in (25, 50, 75, 100) for p in percents)
    assert all("s elapsed, ETA " in line for line in quarters)
    if schedule == "after-backward":  # the statistics follow the backward
        assert inside.index(backward[0]) < inside.index(quarters[0])


def test_nothing_to_do_is_told_without_the_model_only_when_a_run_would_change_nothing(llama, tokenizer, tmp_path):
    import dataclasses

    from lg_pipeline.gradients.runner import nothing_to_do

    out, examples = tmp_path / "n.parquet", EXAMPLES[:3]
    provenance = {"data_hash": "d1", "weights_file": {"files": {"w.safetensors": [10, 1]}}}
    plain = {"dtype": "float32", "device_type": "cpu"}
    assert nothing_to_do(out, examples, CONFIG, EXTRA, **plain, provenance=provenance) is None  # nothing yet
    run(llama, tokenizer, examples, out, prune=True, provenance=provenance)
    why = nothing_to_do(out, examples, CONFIG, EXTRA, **plain, provenance=provenance)
    assert why is not None and why.startswith("all 3 examples already done under run key ")
    scheduling = dataclasses.replace(CONFIG, batch_size=1)  # changes no number
    assert nothing_to_do(out, examples, scheduling, EXTRA, **plain, provenance=provenance) == why
    other_weights = {**provenance, "weights_file": {"files": {"w.safetensors": [10, 2]}}}
    for changed in (
        {"examples": EXAMPLES[:4]},  # one more to compute
        {"examples": EXAMPLES[:2]},  # one to prune
        {"config": dataclasses.replace(CONFIG, max_length=64)},
        {"extra_columns": {**EXTRA, "dataset": "other"}},
        {"dtype": "bfloat16"},
        {"device_type": "cuda"},
        {"provenance": other_weights},
        {"provenance": {**provenance, "data_hash": "d2"}},
        {"provenance": {**provenance, "weights_file": None}},  # unknown without loading: never skipped
    ):
        asked = {"examples": examples, "config": CONFIG, "extra_columns": EXTRA, **plain, "provenance": provenance,
                 **changed}
        out_of = asked.pop("examples"), asked.pop("config"), asked.pop("extra_columns")
        assert nothing_to_do(out, *out_of, **asked) is None, changed


def test_the_table_and_its_outcomes_say_where_they_came_from(llama, tokenizer, tmp_path):
    import json

    from lg_pipeline.gradients.engine import ENGINE_VERSION
    from lg_pipeline.gradients.runner import key_path
    from lg_pipeline.gradients.targets import find_targets
    from lg_pipeline.io.manifest import read_manifest

    out = tmp_path / "stats.parquet"
    provenance = {"data_file": "d.json", "data_hash": "abc", "limit": 3, "n_examples": 6, "model_source": "local"}
    run_to_parquet(llama, tokenizer, EXAMPLES[:3], CONFIG, out, EXTRA, lambda m: None, provenance=provenance)
    stats, status = read_manifest(out), read_manifest(status_path(out))
    assert stats["kind"] == "gradient_stats" and status["kind"] == "gradient_status"
    key = json.loads(key_path(out).read_text())["run_key"]
    for manifest in (stats, status):
        assert manifest["run_key"] == key and manifest["model"] == "tiny" and manifest["dataset"] == "unit"
        assert {k: manifest[k] for k in provenance} == provenance
        assert manifest["example_ids"] == ["ex0", "ex1", "ex2"] and manifest["targets"] == list(CONFIG.targets)
        assert manifest["engine_version"] == ENGINE_VERSION and manifest["dtype"] == "float32"
        assert manifest["parameters"] == [t.parameter for t in find_targets(llama, CONFIG.targets)]
        assert manifest["columns"] == {"model": "tiny", "dataset": "unit"}
    assert set(pd.read_parquet(out).parameter) == set(stats["parameters"])


def test_bad_engine_settings_are_named_all_at_once():
    from lg_pipeline.errors import SettingsError
    from lg_pipeline.gradients.runner import check_engine_settings

    with pytest.raises(SettingsError) as caught:
        check_engine_settings(EngineConfig(batch_size=0, max_length=1, max_batch_tokens=0))
    assert caught.value.settings() == ["batch_size", "max_length", "max_batch_tokens"]
    assert str(caught.value).startswith("batch_size must be at least 1, got 0; max_length must be at least 2 tokens")
