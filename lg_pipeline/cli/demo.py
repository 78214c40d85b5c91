"""The main job on the offline default: curation -> gradients (+ checks) -> summaries -> dynamics -> figures, as
Dagster runs.

Runs in one process against the persistent instance ($DAGSTER_HOME), so every step is a run with lineage in the UI
and each model is loaded once; `figures` is materialized last in the same process (a `dagster asset materialize`
after it would start Python and load the code location again, ~15 s of the demo's budget).
"""

import os
import sys
import time

import dagster as dg

from assets.partitions import MODEL, multi_key, variant_partition_key, zero_shot_key
from assets.pools import store_pool_limit
from assets.resources import PROJECT_ROOT, resources_for
from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import VariantKey

# One dataset per family keeps the demo within ~15 minutes on 2 CPU cores. The whole-article wiki cuts (~10 more
# minutes) are left to `--datasets wiki` or to the nightly fill in the UI.
DEMO_DATASETS = ("champ", "commonsense_demo", "wiki")
DEMO_LEFT_OUT = (("wiki", "len500"), ("wiki", "len1000"))  # (dataset, level)


def _instance() -> dg.DagsterInstance:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    instance = dg.DagsterInstance.get()
    store_pool_limit(instance)
    return instance


def _release_dead_runs(instance: dg.DagsterInstance) -> None:
    """Mark demo runs whose process died (killed, crashed) as failed and free their `gpu` pool slots.

    An in-process run that is killed never reports its end, so its pool slot would block every later step.
    """
    active = dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING], tags={"lg/source": "demo"}
    )
    for run in instance.get_runs(active):
        pid = int(run.tags.get("lg/pid", "0"))
        if pid and _alive(pid):
            continue
        instance.report_run_failed(run)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        print(f"released run {run.run_id[:8]} of a demo process that is gone", flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _materialize(label: str, selection: list, partition_key, instance, resources, config=None) -> bool:
    """`config`: the run config of the (one) selected asset, as its launchpad takes it."""
    from lg_pipeline.definitions import defs

    started = time.monotonic()
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        run_config={"ops": {selection[0].key.to_python_identifier(): {"config": config}}} if config else None,
        raise_on_error=False,
        tags={"lg/source": "demo", "lg/pid": str(os.getpid())},
    )
    state = "ok" if result.success else "FAILED"
    print(f"[{state}] {label} ({time.monotonic() - started:.0f}s)", flush=True)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                print(f"    {event.step_failure_data.error.message.strip().splitlines()[0]}", file=sys.stderr)
    return result.success


def demo_variants(buildable: list[VariantKey], datasets: list[str] | None) -> list[VariantKey]:
    """The variants the demo materializes: all buildable ones of the named datasets, or the default selection."""
    left_out = () if datasets else DEMO_LEFT_OUT
    chosen = datasets or DEMO_DATASETS
    return [v for v in buildable if v.dataset in chosen and (v.dataset, v.level) not in left_out]


def check_demo_arguments(models: list[str] | None, datasets: list[str] | None, n_examples: int | None) -> None:
    """What would silently mean something else: `--models` with no name is not "the default models"."""
    if models is not None and not models:
        raise InputError("--models: no model named (leave the flag out for the offline-default models)")
    if datasets is not None and not datasets:
        raise InputError("--datasets: no dataset named (leave the flag out for one dataset per family)")
    if n_examples is not None and n_examples < 1:
        raise InputError(f"--n-examples must be at least 1, got {n_examples}")


def run_demo(models: list[str] | None = None, datasets: list[str] | None = None, n_examples: int | None = None) -> int:
    """Materialize curated tables, gradients (+ checks), summaries, the dynamics runs and every figure; returns a
    process exit code.

    Defaults: the offline-default models on one dataset per family (wiki without its 500/1000-token
    cuts; naming `wiki` in `datasets` includes them). With `LG_RELEASE_DIR` set, the
    study's datasets (e.g. `--datasets gsm8k`) come from its release folder.
    """
    from assets.analysis.figures import figures
    from assets.analysis.summaries import layer_summary
    from assets.curation.assets import curated_dataset
    from assets.gradients.assets import gradient_stats
    from data_sources.datasets.catalog import buildable_variant_keys, dataset_catalog
    from data_sources.models.catalog import get_model_spec, model_catalog

    check_demo_arguments(models, datasets, n_examples)
    models = models or [n for n, s in model_catalog().items() if s.offline_default]
    for name in models:
        get_model_spec(name)  # unknown names fail here, before any work
    unknown = set(datasets or ()) - set(dataset_catalog())
    if unknown:
        raise InputError(f"unknown dataset(s) {sorted(unknown)} (known: {', '.join(dataset_catalog())})")
    instance = _instance()
    _release_dead_runs(instance)
    instance.add_dynamic_partitions(MODEL, models)
    resources = resources_for()
    if n_examples:
        update = {"n_offline_examples": n_examples, "n_examples": n_examples}
        curation = resources["curation"]  # rebuilt, not model_copy'd: Dagster reads a resource's own config
        resources["curation"] = type(curation)(
            **{**{k: getattr(curation, k) for k in type(curation).model_fields}, **update}
        )
    buildable = buildable_variant_keys(resources["curation"].release_dir)
    variants = demo_variants(buildable, datasets)
    if not variants:
        wanted = datasets or DEMO_DATASETS
        raise InputError(f"none of {wanted} can be built here (offline; set LG_RELEASE_DIR for the study's data)")
    curate = [(v, variant_partition_key(v)) for v in variants]
    ok = all([_materialize(f"curated {v}", [curated_dataset], key, instance, resources) for v, key in curate])
    for model in models:
        for v in variants:
            key = multi_key(model, v)
            ok &= _materialize(f"gradients {model} {v}", [gradient_stats], key, instance, resources)
        ok &= _materialize(f"summary {model}", [layer_summary], model, instance, resources)
    ok &= _dynamics_demo(models, variants, instance, resources)
    ok &= _zero_shot_demo(models, instance, resources)
    ok &= _materialize("figures", [figures], None, instance, resources)
    return 0 if ok else 1


def _dynamics_demo(models: list[str], variants: list[VariantKey], instance, resources) -> bool:
    """Learning dynamics of the offline-default instruct model on None vs Detailed CoT (SFT, the asset's default
    config), a short DPO run on None CoT beside it (`DEMO_DPO`), then the figures; other levels and longer runs
    are left to the UI."""
    from assets.dynamics.figures import dynamics_figures
    from assets.dynamics.learning import (
        DEMO_DPO,
        DEMO_DPO_VARIANT,
        DEMO_MODEL,
        DEMO_VARIANTS,
        training_dynamics,
        training_dynamics_dpo,
    )

    # The CPU-sized max_length (256) cuts CHAMP's Detailed probes: the demo measures what is left, knowingly (each
    # probe's cut is in its `probes.cut_tokens`); a run of one's own refuses cut probes unless told otherwise.
    DEMO_CONFIG = {"allow_probe_truncation": True}  # noqa: N806

    chosen = [v for v in variants if v in DEMO_VARIANTS]
    if DEMO_MODEL not in models or not chosen:
        return True
    ok = True
    for v in chosen:
        key = multi_key(DEMO_MODEL, v)
        ok &= _materialize(f"dynamics {DEMO_MODEL} {v}", [training_dynamics], key, instance, resources, DEMO_CONFIG)
    if DEMO_DPO_VARIANT in chosen:
        key = multi_key(DEMO_MODEL, DEMO_DPO_VARIANT)
        label = f"dynamics {DEMO_MODEL} {DEMO_DPO_VARIANT} dpo"
        ok &= _materialize(label, [training_dynamics_dpo], key, instance, resources, {**DEMO_CONFIG, **DEMO_DPO})
    return _materialize("dynamics figures", [dynamics_figures], None, instance, resources) and ok


def _zero_shot_demo(models: list[str], instance, resources) -> bool:
    """Zero-shot dynamics of the offline-default instruct model (rt, nft, fft on the default split), a small split
    with two seeds (`DEMO_SEEDS`, drawn with a band), then the figures; the other orderings and levels are left to
    the UI."""
    from assets.dynamics.figures import zero_shot_figures
    from assets.dynamics.zero_shot import DEMO_CONFIG as ZERO_SHOT_DEMO_CONFIG
    from assets.dynamics.zero_shot import (
        DEMO_MODEL,
        DEMO_ORDERINGS,
        DEMO_SEEDS,
        DEMO_SEEDS_ORDERINGS,
        zero_shot_dynamics,
    )

    if DEMO_MODEL not in models:
        return True
    ok = True
    for ordering in DEMO_ORDERINGS:
        key = zero_shot_key(DEMO_MODEL, ordering)
        label = f"zero-shot {DEMO_MODEL} {ordering}"
        ok &= _materialize(label, [zero_shot_dynamics], key, instance, resources, ZERO_SHOT_DEMO_CONFIG)
    for ordering in DEMO_SEEDS_ORDERINGS:
        key = zero_shot_key(DEMO_MODEL, ordering)
        label = f"zero-shot {DEMO_MODEL} {ordering} seeds {DEMO_SEEDS['seeds']}"
        ok &= _materialize(label, [zero_shot_dynamics], key, instance, resources, DEMO_SEEDS)
    return _materialize("zero-shot figures", [zero_shot_figures], None, instance, resources) and ok
