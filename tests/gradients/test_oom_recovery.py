"""Out-of-memory recovery runs outside the `except` block: the failed batch's graph is freed before the halves."""

from __future__ import annotations

import os
import weakref

import pytest
import torch

from lg_pipeline.gradients import engine
from lg_pipeline.gradients.encoding import encode
from lg_pipeline.gradients.targets import find_targets
from tests.helpers.builders import example

pytestmark = pytest.mark.usefixtures("single_thread")

BIG = 64 * 2**20  # 256 MiB of fp32, held by the failed batch's autograd graph


def resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_failed_batch_memory_is_released_before_the_halves_run(llama, tokenizer, monkeypatch):
    real_core = engine._core_batch
    seen: dict[str, object] = {}

    def core_batch(model, targets, batch, pad_id, *schedule):
        if len(batch) > 1:  # a real forward whose graph holds a large activation, then the allocator gives up
            ids, mask, _ = engine.batch_tensors(batch, pad_id, engine.model_device(model))
            logits = model(input_ids=ids, attention_mask=mask).logits
            activation = torch.ones(BIG)
            graph = logits.sum() * activation  # saved for backward: the graph keeps `activation` alive
            seen["activation"] = weakref.ref(activation)
            seen["rss_at_failure"] = resident_bytes()
            del activation
            assert graph.requires_grad
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if "rss_at_half" not in seen:
            seen["alive_at_half"] = seen["activation"]() is not None
            seen["rss_at_half"] = resident_bytes()
        return real_core(model, targets, batch, pad_id, *schedule)

    monkeypatch.setattr(engine, "_core_batch", core_batch)
    targets = find_targets(llama, ("q_proj",))
    runner = engine._BatchRunner(llama, targets, engine.EngineConfig(batch_size=2), 0)
    batch = [encode(tokenizer, example(f"e{i}", 6, 12), False, 64) for i in range(2)]
    results = runner.run(batch)
    assert [r.status for r in results] == ["ok", "ok"] and runner.batch_size == 1
    assert seen["alive_at_half"] is False, "the failed batch's graph was still alive when the halves ran"
    released = seen["rss_at_failure"] - seen["rss_at_half"]
    assert released > BIG * 4 * 0.9, f"only {released / 2**20:.0f} MiB of {BIG * 4 / 2**20:.0f} MiB released"
