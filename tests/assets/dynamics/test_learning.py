"""Learning dynamics in Dagster on a tiny local model: curated variants -> training_dynamics + checks -> figures."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.vocabulary import StatsKey
from tests.helpers.tiny_models import materialize, tiny_world

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
VARIANTS = ["champ__none__correct", "champ__detailed__correct", "champ__none__wrong"]
RUN = {"steps": 2, "eval_every": 1, "n_probes": 2, "max_length": 192, "learning_rate": 1e-4}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with tiny_world(tmp_path_factory.mktemp("dynamics"), 2, 6) as world:
        yield world


def _materialize(world, selection, partition_key=None, config=None):
    run_config = {"ops": {"training_dynamics": {"config": config}}} if config else None
    return materialize(world, selection, partition_key, run_config)


def test_training_dynamics_runs_is_checked_and_drawn(world):
    from assets.curation.assets import curated_dataset
    from assets.dynamics.figures import dynamics_figures
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key

    store = world[1]["store"]
    for variant in VARIANTS:
        assert _materialize(world, [curated_dataset], variant).success
    for variant, objective in (
        ("champ__none__correct", "sft"),
        ("champ__none__correct", "dpo"),
        ("champ__detailed__correct", "sft"),
    ):
        result = _materialize(world, [training_dynamics], multi_key("tiny", variant), {**RUN, "objective": objective})
        assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["training_dynamics_complete"].passed, checks["training_dynamics_complete"].metadata
        assert "scatter" in checks["training_dynamics_agreement"].metadata
        out = store.dynamics(StatsKey.of("tiny", variant), objective)
        summary = pd.read_parquet(out / "influence_summary.parquet")
        assert sorted(summary.step.unique()) == [0, 1]
    probe_types = set(pd.read_parquet(out / "probes.parquet").probe_type)
    assert "other_level:none" in probe_types  # the aligned None-CoT table gave the same prompts' short answers
    figures = _materialize(world, [dynamics_figures])
    assert figures.success
    meta = figures.asset_materializations_for_node("dynamics_figures")[0].metadata
    titles = [k for k in meta if k.startswith("figure:")]
    assert any("log-probabilities" in t for t in titles) and any("layer shares" in t for t in titles)
    assert "data:image/png;base64," in meta[titles[0]].value


def test_dpo_without_a_wrong_set_is_one_line(world):
    from assets.curation.assets import curated_dataset
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key

    assert _materialize(world, [curated_dataset], "champ__simplified__correct").success
    result = _materialize(
        world, [training_dynamics], multi_key("tiny", "champ__simplified__correct"), {**RUN, "objective": "dpo"}
    )
    assert not result.success
    messages = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert any("objective dpo needs the aligned wrong set of 'champ__simplified__correct'" in m for m in messages)
