"""Device leases (two simulated GPUs, threads and processes) and the compute resource that holds them."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import dagster as dg
import pytest

from assets.resources import ComputeResource
from lg_pipeline.errors import InputError
from lg_pipeline.gradients.devices import candidate_devices, lease_device

DEVICES = ["sim:0", "sim:1"]


def test_two_threads_get_distinct_devices_and_a_third_waits_for_a_release(tmp_path):
    got: list[str] = []
    first = lease_device(DEVICES, tmp_path)
    second = lease_device(DEVICES, tmp_path)
    assert {first.device, second.device} == set(DEVICES)

    def third() -> None:
        with lease_device(DEVICES, tmp_path, timeout_s=10, poll_s=0.02) as lease:
            got.append(lease.device)

    waiter = threading.Thread(target=third)
    waiter.start()
    time.sleep(0.3)
    assert got == []  # both devices busy
    second.release()
    waiter.join(5)
    assert got == [second.device]
    first.release()


def test_no_free_device_fails_clearly_after_the_timeout(tmp_path):
    with lease_device(["sim:0"], tmp_path):
        with pytest.raises(InputError, match="no free device among sim:0"):
            lease_device(["sim:0"], tmp_path, timeout_s=0.2, poll_s=0.05)


def test_a_failing_step_releases_its_device(tmp_path):
    with pytest.raises(RuntimeError):
        with lease_device(["sim:0"], tmp_path):
            raise RuntimeError("step failed")
    with lease_device(["sim:0"], tmp_path, timeout_s=0) as lease:
        assert lease.device == "sim:0"


def _hold(lock_dir: str, out) -> None:
    """A gradient step: lease a device, report it, work until killed (no shared lock to corrupt when killed)."""
    lease = lease_device(DEVICES, lock_dir)
    out.put(lease.device)
    time.sleep(60)


@pytest.mark.slow
def test_two_processes_get_distinct_devices_and_a_killed_holder_frees_its_own(tmp_path):
    ctx = mp.get_context("spawn")
    procs, devices = [], []
    try:
        for _ in DEVICES:
            out = ctx.Queue()
            proc = ctx.Process(target=_hold, args=(str(tmp_path), out), daemon=True)
            proc.start()
            procs.append(proc)
            devices.append(out.get(timeout=60))
        assert sorted(devices) == DEVICES
        with pytest.raises(InputError):
            lease_device(DEVICES, tmp_path, timeout_s=0.2)
        procs[0].kill()  # a crashed step: the kernel drops its lock
        procs[0].join(10)
        with lease_device(DEVICES, tmp_path, timeout_s=5) as lease:
            assert lease.device == devices[0]
    finally:
        for proc in procs:
            proc.kill()
            proc.join(10)


def test_candidates():
    assert candidate_devices("cpu") == ["cpu"]
    assert candidate_devices("cuda:1") == ["cuda:1"]
    assert candidate_devices("cuda", "cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert lease_device(["cpu"]).held is False  # CPU steps share the cores: no lock


@pytest.mark.slow
def test_compute_resource_holds_a_lease_for_the_run_and_releases_it(tmp_path):
    seen: list[str] = []

    @dg.asset
    def step(compute: ComputeResource) -> None:
        seen.append(compute.leased_device)
        try:
            lease_device(["sim:0"], tmp_path, timeout_s=0)
            seen.append("free during the run")
        except InputError:
            seen.append("busy")
        raise RuntimeError("boom")

    compute = ComputeResource(device="cuda", devices="sim:0", lock_dir=str(tmp_path))
    result = dg.materialize([step], resources={"compute": compute}, raise_on_error=False)
    assert not result.success
    assert seen == ["sim:0", "busy"]
    with lease_device(["sim:0"], tmp_path, timeout_s=0):  # released although the step failed
        pass


@pytest.mark.slow
def test_two_gradient_runs_at_once_get_different_simulated_gpus(tmp_path, monkeypatch):
    """Two runs of the real `gradient_stats` asset at the same time, with two simulated GPUs: one device each.

    Each run has its own thread and instance (as two run processes of `dagster dev` would: the lease is
    coordinated by its lock folder, not by Dagster). The simulated devices are leased like GPUs but the model
    is computed on the CPU. Both runs meet in `load`, which a step calls while its lease is held, so they
    hold their devices at the same moment (a lease given twice, or never released, breaks the barrier).
    That the `gpu` pool makes such runs wait for each other: `tests/test_ui_e2e.py`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from assets.partitions import multi_key, variant_partition_key
    from assets.resources import CurationResource, OutputStore
    from data_sources.models.catalog import open_model
    from lg_pipeline.definitions import defs
    from tests.helpers.tiny_models import save_tiny_model, write_catalog

    variant, models = "commonsense_demo__none__correct", ["tiny-a", "tiny-b"]
    folder = save_tiny_model(tmp_path / "tiny", layers=2)
    monkeypatch.setenv("LG_MODEL_CATALOG", str(write_catalog(tmp_path / "models.yaml", dict.fromkeys(models, folder))))
    both_hold = threading.Barrier(len(models), timeout=60)

    class TwoSimulatedGpus(ComputeResource):
        def load(self, model_name: str):
            both_hold.wait()
            return open_model(model_name, "cpu", None, self.cache_dir)

    cache = str(tmp_path / "cache")
    resources = {
        "store": OutputStore(root=str(tmp_path / "out")),
        "curation": CurationResource(n_offline_examples=2, cache_dir=cache),
        "compute": TwoSimulatedGpus(
            device="cuda",
            devices=",".join(DEVICES),
            lock_dir=str(tmp_path / "locks"),
            lease_timeout_s=20,
            cache_dir=cache,
            batch_size=2,
        ),
    }
    assets = [*defs.assets, *defs.asset_checks]
    curated = variant_partition_key(variant)
    assert dg.materialize(assets, selection=["curated_dataset"], partition_key=curated, resources=resources).success

    def gradient_run(model: str) -> str:
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("model", [model])
        result = dg.materialize(
            assets,
            selection=["gradient_stats"],
            partition_key=multi_key(model, variant),
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        return result.asset_materializations_for_node("gradient_stats")[0].metadata["device"].value

    with ThreadPoolExecutor(len(models)) as pool:
        devices = list(pool.map(gradient_run, models))
    assert sorted(devices) == DEVICES  # recorded in each materialization's metadata, as the UI shows it
    for _ in DEVICES:  # both released when their runs ended
        lease_device(DEVICES, tmp_path / "locks", timeout_s=0)


# ------------------------------------------------------------------------------------------------ out of memory
def _oom_on_batches_over_one(model, targets, batch, pad_id, *scheduling, sizes=None):
    import torch

    from lg_pipeline.gradients.engine import ExampleResult

    if sizes is not None:
        sizes.append(len(batch))
    if len(batch) > 1:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return [ExampleResult(batch[0].example_id, "ok")]


def _run_examples(monkeypatch, n: int = 4, sizes: list[int] | None = None) -> list[object]:
    """The engine's batching on n examples (batch size 4) with a core step that runs out of memory above 1."""
    from functools import partial
    from types import SimpleNamespace

    from lg_pipeline.gradients import engine

    monkeypatch.setattr(engine, "_core_batch", partial(_oom_on_batches_over_one, sizes=sizes))
    monkeypatch.setattr(engine, "find_targets", lambda model, suffixes: [])
    import torch

    monkeypatch.setattr(engine, "encode", lambda tok, example, *settings: example)
    model = SimpleNamespace(
        zero_grad=lambda set_to_none: None,
        eval=lambda: None,
        parameters=lambda: iter([torch.zeros(1)]),  # fp32: the dtype check passes
        config=SimpleNamespace(model_type="fake"),
    )
    examples = [SimpleNamespace(example_id=f"e{i}", n_tokens=8) for i in range(n)]
    config = engine.EngineConfig(batch_size=4, stats_workers=0)
    return list(engine.compute_gradient_stats(model, SimpleNamespace(pad_token_id=0, eos_token_id=0), examples, config))


def test_out_of_memory_retries_smaller_batches_and_says_so(monkeypatch, caplog):
    from lg_pipeline.gradients.engine import is_out_of_memory

    sizes: list[int] = []
    with caplog.at_level("WARNING", logger="lg_pipeline.gradients.engine"):
        results = _run_examples(monkeypatch, 8, sizes)
    assert [(r.example_id, r.status) for r in results] == [(f"e{i}", "ok") for i in range(8)]
    assert [r.getMessage() for r in caplog.records] == [
        "out of memory on a batch of 4: retrying as 2 + 2, later batches at most 2",
        "out of memory on a batch of 2: retrying as 1 + 1, later batches at most 1",
        "out of memory on a batch of 2: retrying as 1 + 1, later batches at most 1",
    ]
    # The first batch found the size that fits; the next four examples go one at a time, with no retry.
    assert sizes == [4, 2, 1, 1, 2, 1, 1] + [1] * 4
    assert not is_out_of_memory(ValueError("bad token"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 9 GB"))


@pytest.mark.slow
def test_out_of_memory_splits_show_in_the_dagster_run_log(monkeypatch):
    @dg.asset
    def gradients(compute: ComputeResource) -> None:
        _run_examples(monkeypatch)

    with dg.instance_for_test() as instance:
        result = dg.materialize([gradients], resources={"compute": ComputeResource()}, instance=instance)
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert sum("out of memory on a batch of" in m for m in messages) == 3
