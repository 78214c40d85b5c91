"""The launchpad guides: choices are enums Dagster checks at launch, every field says what it is and its unit,
and a dynamics run whose settings cannot run fails as it is submitted (before the pool), every problem named."""

from __future__ import annotations

import typing

import dagster as dg
import pytest

from assets.dynamics.learning import DynamicsConfig
from assets.dynamics.zero_shot import ZeroShotConfig
from assets.launch import launch_problems
from assets.resources import ComputeResource

BAD = {"learning_rate": -1, "steps": -3, "batch_size": 0}


@pytest.fixture(scope="module")
def asset_job():
    from lg_pipeline.definitions import defs

    return defs.resolve_implicit_global_asset_job_def()


@pytest.mark.parametrize("op, field, value", [
    ("training_dynamics", "optimizer", "adam"),
    ("training_dynamics", "trainable", "mlp"),
    ("training_dynamics_dpo", "rejected", "random"),
    ("zero_shot_dynamics", "embedder", "bert"),
])
def test_dagster_refuses_a_value_that_is_not_a_choice_before_any_run_exists(asset_job, op, field, value):
    with pytest.raises(dg.DagsterInvalidConfigError, match=f"{op}:config:{field} not in enum"):
        dg.validate_run_config(asset_job, {"ops": {op: {"config": {field: value}}}})
    dg.validate_run_config(asset_job, {"ops": {op: {"config": {}}}})  # the defaults are fine


@pytest.mark.parametrize("op, field, value", [("training_dynamics", "objective", "ppo"),
                                               ("zero_shot_dynamics", "level", "cot")])
def test_the_objective_and_the_level_are_the_assets_so_no_config_can_name_another(asset_job, op, field, value):
    """One asset per objective and per zero-shot level: `objective: ppo` is refused before any run exists."""
    with pytest.raises(dg.DagsterInvalidConfigError, match=f'unexpected config entry "{field}"'):
        dg.validate_run_config(asset_job, {"ops": {op: {"config": {field: value}}}})


def test_the_choices_are_the_cores_own():
    from lg_pipeline.dynamics.learning.rejected import REJECTED_SOURCES
    from lg_pipeline.dynamics.training import Optimizer, Trainable
    from lg_pipeline.dynamics.zero_shot.embeddings import EMBEDDERS
    from lg_pipeline.dynamics.zero_shot.run import OPTIMIZERS

    def choices(config, name):
        return set(typing.get_args(config.model_fields[name].annotation))

    assert choices(DynamicsConfig, "optimizer") == set(typing.get_args(Optimizer))
    assert choices(DynamicsConfig, "rejected") == set(REJECTED_SOURCES)
    trainable = set(typing.get_args(Trainable))
    assert choices(DynamicsConfig, "trainable") == choices(ZeroShotConfig, "trainable") == trainable
    assert choices(ZeroShotConfig, "optimizer") == set(OPTIMIZERS)
    assert choices(ZeroShotConfig, "embedder") == set(EMBEDDERS)


@pytest.mark.parametrize("config", [DynamicsConfig, ZeroShotConfig, ComputeResource])
def test_every_field_has_a_description(config):
    missing = [name for name, field in config.model_fields.items() if not field.description]
    assert missing == []


def test_every_bad_range_is_named_at_once():
    (line,) = launch_problems({"ops": {"training_dynamics": {"config": BAD}}})
    assert line.startswith("training_dynamics: ")
    assert "learning_rate: must be a finite number above 0, got -1" in line
    assert "steps: give a positive number of steps" in line and "batch_size: must be an integer at least 1" in line
    (line,) = launch_problems({"ops": {"zero_shot_dynamics": {"config": {"per_task": 0, "eval_every": 0}}}})
    assert "per_task: must be an integer at least 1" in line and "eval_every: must be an integer at least 1" in line
    assert launch_problems({"ops": {"training_dynamics": {"config": {"steps": 3}}}}) == []
    assert launch_problems({}) == []


def test_a_run_whose_settings_cannot_run_fails_at_submission_and_never_waits_for_the_pool(asset_job, monkeypatch):
    from dagster._core.run_coordinator.base import SubmitRunContext
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._core.test_utils import instance_for_test

    from assets.automation.daemon_log import ReadableQueuedRunCoordinator
    from assets.launch import CheckedQueuedRunCoordinator

    queued: list[str] = []  # what reaches the queue (where runs wait for the pool)
    monkeypatch.setattr(ReadableQueuedRunCoordinator, "submit_run", lambda self, context: queued.append(
        context.dagster_run.run_id) or context.dagster_run)
    coordinator = {"module": "assets.launch", "class": "CheckedQueuedRunCoordinator"}
    with instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
        assert isinstance(instance.run_coordinator, CheckedQueuedRunCoordinator)
        runs = {}
        for name, config in (("bad", BAD), ("good", {"steps": 3})):
            run = instance.create_run_for_job(asset_job, run_config={"ops": {"training_dynamics": {"config": config}}})
            instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))
            runs[name] = instance.get_run_by_id(run.run_id)
        assert queued == [runs["good"].run_id]
        assert runs["bad"].status == DagsterRunStatus.FAILURE
        (failure,) = [e for e in instance.all_logs(runs["bad"].run_id)
                      if e.is_dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
        assert failure.message.startswith("settings cannot run: training_dynamics: ")
        assert all(f"{name}:" in failure.message for name in BAD)


@pytest.mark.slow  # a Dagster run
def test_the_asset_names_every_bad_setting_before_the_model_loader_is_called(tmp_path, monkeypatch):
    from assets.dynamics.learning import training_dynamics
    from assets.partitions import multi_key
    from tests.helpers.tiny_models import materialize, tiny_world

    loads: list[str] = []
    monkeypatch.setattr(ComputeResource, "load", lambda self, name: loads.append(name))
    with tiny_world(tmp_path, 1, 2) as world:
        result = materialize(world, [training_dynamics], multi_key("tiny", "champ__none__correct"),
                             {"ops": {"training_dynamics": {"config": BAD}}})
    assert not result.success and loads == []
    (message,) = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert all(f"{name}:" in message for name in BAD)
