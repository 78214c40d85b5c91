"""Check outcomes: a verdict decides only about the data it judged."""

from __future__ import annotations

from assets import gates
from assets.resources import OutputStore
from lg_pipeline.vocabulary import StatsKey

KEY = StatsKey.of("m", "champ__none__correct")


def test_a_passed_verdict_on_other_data_blocks_the_summary(tmp_path):
    store = OutputStore(root=str(tmp_path))
    assert "not validated" in gates.stats_gate(store, KEY)
    store.gradients(KEY).parent.mkdir(parents=True)
    store.gradients(KEY).write_bytes(b"v1")
    gates.record_stats(store, KEY, True, [])
    assert gates.stats_gate(store, KEY) is None
    store.gradients(KEY).write_bytes(b"v2")
    assert gates.stats_gate(store, KEY) == "statistics changed since the check ran"
    gates.record_stats(store, KEY, False, ["expect_x(loss)"])
    assert gates.stats_gate(store, KEY) == "check failed: expect_x(loss)" and gates.stats_check_failed(store, KEY)
    gates.forget_stats(store, KEY)
    assert not gates.stats_check_failed(store, KEY)


def test_a_curated_failure_blocks_only_the_table_it_judged(tmp_path):
    store = OutputStore(root=str(tmp_path))
    variant = KEY.variant
    store.curated(variant).parent.mkdir(parents=True)
    store.curated(variant).write_bytes(b"table")
    gates.record_curated(store, variant, ["curated_ids_unique"])
    assert gates.curated_gate(store, variant) == ["curated_ids_unique"]
    store.curated(variant).write_bytes(b"rebuilt")
    assert gates.curated_gate(store, variant) == []


def test_summary_blocks_are_recorded_and_cleared(tmp_path):
    store = OutputStore(root=str(tmp_path))
    gates.record_summary_blocked(store, "m", {"champ__none__correct": "check failed: x"})
    assert gates.summary_blocked(store, "m") == {"champ__none__correct": "check failed: x"}
    gates.clear_summary_blocked(store, "m")
    assert gates.summary_blocked(store, "m") == {}


def test_a_zero_shot_run_enters_the_figures_only_after_its_check_passed_on_those_tables(tmp_path):
    store = OutputStore(root=str(tmp_path))
    losses = store.zero_shot("m", "none", "rt") / "zero_shot.parquet"
    losses.parent.mkdir(parents=True)
    losses.write_bytes(b"v1")
    assert "not validated" in gates.zero_shot_gate(store, "m", "none", "rt")
    gates.record_zero_shot(store, "m", "none", "rt", ["rt: non-finite held-out loss"])
    assert gates.zero_shot_gate(store, "m", "none", "rt") == "check failed: rt: non-finite held-out loss"
    gates.record_zero_shot(store, "m", "none", "rt", [])
    assert gates.zero_shot_gate(store, "m", "none", "rt") is None
    assert "not validated" in gates.zero_shot_gate(store, "m", "none", "nft")  # another ordering's folder
    losses.write_bytes(b"v2")
    assert gates.zero_shot_gate(store, "m", "none", "rt") == "tables changed since the check ran"


def test_a_verdict_on_a_run_whose_table_is_gone_blocks_it(tmp_path):
    store = OutputStore(root=str(tmp_path))
    store.zero_shot("m", "none", "rt").mkdir(parents=True)
    gates.record_zero_shot(store, "m", "none", "rt", ["missing zero_shot"])
    assert gates.zero_shot_gate(store, "m", "none", "rt") == "check failed: missing zero_shot"


def test_the_zero_shot_figures_draw_only_runs_the_gate_lets_through(tmp_path):
    from assets.dynamics.figures import _complete_runs
    from lg_pipeline.dynamics.zero_shot.checks import check_run_folder
    from tests.helpers.planted import zero_shot_folder

    store = OutputStore(root=str(tmp_path))
    out = zero_shot_folder(store.zero_shot("m", "none", "rt"))
    assert _complete_runs(store) is None  # complete on disk, but not checked yet
    gates.record_zero_shot(store, "m", "none", "rt", check_run_folder(out, ["rt"]).details())
    losses, seen = _complete_runs(store)
    assert set(losses.model) == {"m"} and set(seen.level) == {"none"}
    gates.record_zero_shot(store, "m", "none", "rt", ["rt: non-finite held-out loss"])
    assert _complete_runs(store) is None
