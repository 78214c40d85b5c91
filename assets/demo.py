"""The main job on the offline default: curation -> gradients (+ checks) -> summaries, as Dagster runs.

Runs in one process against the persistent instance ($DAGSTER_HOME), so every step is a
run with lineage in the UI and the model is loaded once. `make demo` then materializes
`figures` with the Dagster CLI.
"""

import os
import sys
import time

import dagster as dg

from assets.partitions import MODEL, multi_key
from assets.resources import PROJECT_ROOT, resources_for

# One dataset per family keeps the demo within ~15 minutes on 2 CPU cores (gsm_symbolic is curated too).
DEMO_DATASETS = ("champ", "commonsense_demo", "wiki")


def _instance() -> dg.DagsterInstance:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    return dg.DagsterInstance.get()


def _materialize(label: str, selection: list, partition_key, instance, resources) -> bool:
    from lg_pipeline.definitions import defs

    started = time.monotonic()
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        tags={"lg/source": "demo"},
    )
    state = "ok" if result.success else "FAILED"
    print(f"[{state}] {label} ({time.monotonic() - started:.0f}s)", flush=True)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                print(f"    {event.step_failure_data.error.message.strip().splitlines()[0]}", file=sys.stderr)
    return result.success


def run_demo(models: list[str] | None = None, n_examples: int | None = None) -> int:
    """Materialize everything the offline default needs; returns a process exit code."""
    from assets.curation import curated_dataset
    from assets.gradients import gradient_stats
    from assets.summaries import layer_summary
    from data_sources.catalog import variant_keys
    from data_sources.model_catalog import get_model_spec, model_catalog

    models = models or [n for n, s in model_catalog().items() if s.offline_default]
    for name in models:
        get_model_spec(name)  # unknown names fail here, before any work
    instance = _instance()
    instance.add_dynamic_partitions(MODEL, models)
    resources = resources_for()
    if n_examples:
        resources["curation"] = resources["curation"].model_copy(update={"n_offline_examples": n_examples})
    curated = variant_keys(offline_only=True)
    ok = all([_materialize(f"curated {v}", [curated_dataset], v, instance, resources) for v in curated])
    variants = [v for v in curated if v.split("__")[0] in DEMO_DATASETS]
    for model in models:
        for v in variants:
            ok &= _materialize(f"gradients {model} {v}", [gradient_stats], multi_key(model, v), instance, resources)
        ok &= _materialize(f"summary {model}", [layer_summary], model, instance, resources)
    return 0 if ok else 1
