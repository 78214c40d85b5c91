"""Device leases (two simulated GPUs, threads and processes) and the compute resource that holds them."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import dagster as dg
import pytest

from assets.resources import ComputeResource
from lg_pipeline.devices import candidate_devices, lease_device
from lg_pipeline.examples import InputError

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


# ------------------------------------------------------------------------------------------------ out of memory
def _oom_on_batches_over_one(model, targets, batch, pad_id):
    import torch

    from lg_pipeline.engine import ExampleResult

    if len(batch) > 1:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return [ExampleResult(batch[0].example_id, "ok")]


def _run_batch_of_four(monkeypatch) -> list[object]:
    from types import SimpleNamespace

    from lg_pipeline import engine

    monkeypatch.setattr(engine, "_core_batch", _oom_on_batches_over_one)
    model = SimpleNamespace(zero_grad=lambda set_to_none: None)
    batch = [SimpleNamespace(example_id=f"e{i}") for i in range(4)]
    return engine._run_isolating_failures(model, [], batch, "core", SimpleNamespace(pad_token_id=0, eos_token_id=0))


def test_out_of_memory_retries_smaller_batches_and_says_so(monkeypatch, caplog):
    from lg_pipeline.engine import is_out_of_memory

    with caplog.at_level("WARNING", logger="lg_pipeline.engine"):
        results = _run_batch_of_four(monkeypatch)
    assert [(r.example_id, r.status) for r in results] == [(f"e{i}", "ok") for i in range(4)]
    assert [r.getMessage() for r in caplog.records] == [
        "out of memory on a batch of 4: retrying as 2 + 2",
        "out of memory on a batch of 2: retrying as 1 + 1",
        "out of memory on a batch of 2: retrying as 1 + 1",
    ]
    assert not is_out_of_memory(ValueError("bad token"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 9 GB"))


def test_out_of_memory_splits_show_in_the_dagster_run_log(monkeypatch):
    @dg.asset
    def gradients(compute: ComputeResource) -> None:
        _run_batch_of_four(monkeypatch)

    with dg.instance_for_test() as instance:
        result = dg.materialize([gradients], resources={"compute": ComputeResource()}, instance=instance)
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert sum("out of memory on a batch of" in m for m in messages) == 3
