"""The executor, configured once per environment (`LG_ENV`: local, gpu, k8s)."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from assets.resources import current_env
from lg_pipeline.errors import InputError

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# Every gradient step asks Kubernetes for one GPU; other steps run on CPU-only pods.
K8S_GPU_STEPS = ("gradient_stats",)
K8S_EXECUTOR_CONFIG: dict[str, Any] = {
    "job_namespace": os.environ.get("LG_K8S_NAMESPACE", "lg-pipeline"),
    "step_k8s_config": {
        "container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}}
    },
    "per_step_k8s_config": {
        step: {
            "container_config": {
                "resources": {
                    "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
                    "limits": {"memory": "64Gi", "nvidia.com/gpu": "1"},
                }
            },
            "pod_spec_config": {"tolerations": [GPU_TOLERATION]},
        }
        for step in K8S_GPU_STEPS
    },
}


def executor_for(env: str | None = None) -> dg.ExecutorDefinition:
    """One executor per environment.

    local: one process per run — a run loads its model once, and a 2-core machine gains nothing from a
    process per step. gpu: a process per step, so steps of one run can use several GPUs (the `gpu` pool and
    the device lease keep them apart). k8s: a pod per step (`pip install 'lg-pipeline[k8s]'`).
    """
    env = current_env(env)
    if env == "local":
        return dg.in_process_executor
    if env == "gpu":
        return dg.multiprocess_executor
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise InputError("LG_ENV=k8s needs the k8s extra: pip install -e '.[k8s]'") from None
    return k8s_job_executor.configured(K8S_EXECUTOR_CONFIG, name="k8s_gpu")
