"""Launch-time checks of the dynamics runs' settings: a run asked to do what cannot run fails as it is submitted,
every problem named at once, before it waits in the queue for the `gpu` pool (granularity `run`) or loads a model.

Dagster's config schema refuses what is not one of a field's choices (`objective: ppo`) before a run is created;
ranges (`steps: -3`) are not in the schema, so the run coordinator builds each dynamics asset's settings object
from the run's config, as the asset does first thing, and fails the run with the settings' own message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun

from assets.automation.daemon_log import ReadableQueuedRunCoordinator
from lg_pipeline.errors import SettingsError

# One asset per objective and per zero-shot level (`assets.dynamics`): the objective or level is the asset's.
CHECKED_OBJECTIVES = {"training_dynamics": "sft", "training_dynamics_dpo": "dpo"}
CHECKED_LEVELS = {"zero_shot_dynamics": "none", "zero_shot_dynamics_simplified": "simplified",
                  "zero_shot_dynamics_detailed": "detailed"}
CHECKED_ASSETS = (*CHECKED_OBJECTIVES, *CHECKED_LEVELS)


def _checks() -> dict[str, Callable[[Mapping[str, Any], Any], Any]]:
    """Each checked asset's settings from its config, as the asset builds them. Imported only when a run configures
    one: the webserver and the daemon load this coordinator, and the assets' modules import torch."""
    from assets.dynamics.learning import DynamicsConfig, learning_settings
    from assets.dynamics.zero_shot import ZeroShotConfig, zero_shot_settings

    # The partition's ordering is checked by the partitions definition; any valid one stands in for it here.
    def learning(objective: str) -> Callable[[Mapping[str, Any], Any], Any]:
        return lambda config, compute: learning_settings(DynamicsConfig(**config), compute.max_length, objective)

    def zero_shot(level: str) -> Callable[[Mapping[str, Any], Any], Any]:
        return lambda config, compute: zero_shot_settings(ZeroShotConfig(**config), "rt", compute, level)

    return {
        **{name: learning(objective) for name, objective in CHECKED_OBJECTIVES.items()},
        **{name: zero_shot(level) for name, level in CHECKED_LEVELS.items()},
    }


def launch_problems(run_config: Mapping[str, Any]) -> list[str]:
    """`<asset>: <every problem of its settings>` for each dynamics asset the run configures; [] when all can run."""
    ops = run_config.get("ops") or {}
    checked = [name for name in CHECKED_ASSETS if isinstance(ops.get(name), Mapping)]
    if not checked:
        return []
    checks, compute = _checks(), _compute(run_config)
    problems = []
    for name in checked:
        try:
            checks[name](ops[name].get("config") or {}, compute)
        except SettingsError as exc:
            problems.append(f"{name}: {exc}")
    return problems


def _compute(run_config: Mapping[str, Any]) -> Any:
    """The run's compute settings where they are plain values (an `env` reference is resolved in the run)."""
    from assets.resources import ComputeResource

    config = ((run_config.get("resources") or {}).get("compute") or {}).get("config") or {}
    plain = {k: v for k, v in config.items() if not isinstance(v, Mapping)}
    try:
        return ComputeResource(**plain)
    except Exception:  # pydantic's ValidationError: the run's own resource init reports it
        return ComputeResource()


class CheckedQueuedRunCoordinator(ReadableQueuedRunCoordinator):
    """The queued run coordinator (readable daemon lines), failing at submission a run whose dynamics settings
    cannot run, with every problem in the failure's message."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        problems = launch_problems(run.run_config or {})
        if not problems:
            return super().submit_run(context)
        self._instance.report_run_failed(run, message="settings cannot run: " + " | ".join(problems))
        return self._instance.get_run_by_id(run.run_id) or run
