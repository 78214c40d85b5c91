"""The Kubernetes profile (LG_ENV=k8s): the Definitions load with the k8s executor, GPU steps, and the instance
in deploy/k8s/dagster.yaml is valid. Skips when the `[k8s]` extra is not installed (`make test` installs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dagster_k8s")
pytest.importorskip("dagster_postgres")

pytestmark = pytest.mark.slow  # starts the dagster CLI

ROOT = Path(__file__).resolve().parents[2]


def test_k8s_profile_selects_the_k8s_executor_with_a_gpu_per_gradient_step():
    from lg_pipeline.definitions import definitions_for

    defs = definitions_for("k8s")
    for job in ("gradients", "curate", "__ASSET_JOB"):
        executor = defs.resolve_job_def(job).executor_def
        assert executor.name == "k8s_gpu"
    from assets.executors import K8S_EXECUTOR_CONFIG

    gpu_step = K8S_EXECUTOR_CONFIG["per_step_k8s_config"]["gradient_stats"]["container_config"]["resources"]
    assert gpu_step["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in str(K8S_EXECUTOR_CONFIG["step_k8s_config"])  # CPU pods for everything else
    compute = defs.resources["compute"]
    assert (compute.device, compute.dtype) == ("cuda", "bfloat16")
    assert {"store", "curation", "compute"} <= set(defs.resources)


def test_the_executor_config_is_accepted_by_dagster_k8s():
    from dagster._config import process_config
    from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA

    from assets.executors import K8S_EXECUTOR_CONFIG

    result = process_config(_K8S_EXECUTOR_CONFIG_SCHEMA, K8S_EXECUTOR_CONFIG)
    assert result.success, result.errors


def test_code_location_validates_with_lg_env_k8s(tmp_path):
    """What a user deployment runs: the module, loaded with the profile selected in the environment."""
    env = {**os.environ, "LG_ENV": "k8s", "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "lg_pipeline.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Validation successful" in done.stdout + done.stderr


def test_deploy_instance_yaml_is_a_valid_dagster_instance(monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(var, "x")
    config, custom_class = dagster_instance_config(str(ROOT / "deploy" / "k8s"))
    assert custom_class is None
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert "postgres" in config["storage"]
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    launcher = process_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, launcher.errors


def test_unknown_environment_is_refused():
    from assets.resources import resources_for

    with pytest.raises(ValueError, match="LG_ENV must be one of local, gpu, k8s"):
        resources_for("cloud")
