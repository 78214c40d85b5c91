"""The demo's added runs: a short DPO run and a two-seed zero-shot run, each handed to its asset as run config."""

from __future__ import annotations

import dagster as dg

from lg_pipeline.cli import demo


def test_the_demos_dpo_and_seed_runs_are_valid_configs_of_their_assets():
    from assets.dynamics.learning import DEMO_DPO, DEMO_DPO_VARIANT, DEMO_VARIANTS, DynamicsConfig
    from assets.dynamics.zero_shot import DEMO_CONFIG, DEMO_SEEDS, DEMO_SEEDS_ORDERINGS, ZeroShotConfig

    assert DynamicsConfig(**DEMO_DPO).steps > 0 and DEMO_DPO_VARIANT in DEMO_VARIANTS
    assert ZeroShotConfig(**DEMO_CONFIG).generation_metrics is False
    assert len(ZeroShotConfig(**DEMO_SEEDS).seeds) == 2 and set(DEMO_SEEDS_ORDERINGS) <= {"rt", "nft", "fft"}


def test_a_config_reaches_the_selected_assets_op(monkeypatch):
    from assets.dynamics.learning import training_dynamics_dpo

    seen = {}

    class Result:
        success = True
        all_events = ()

    def materialize(assets, **kwargs):
        seen.update(kwargs)
        return Result()

    monkeypatch.setattr(dg, "materialize", materialize)
    assert demo._materialize("dpo", [training_dynamics_dpo], None, None, {}, {"steps": 6})
    assert seen["run_config"] == {"ops": {"training_dynamics_dpo": {"config": {"steps": 6}}}}
    assert demo._materialize("sft", [training_dynamics_dpo], None, None, {})
    assert seen["run_config"] is None
