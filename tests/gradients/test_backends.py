"""The CUDA-only functions' CPU twins (what every test run exercises) and the CPU/accelerator eigensolves."""

from __future__ import annotations

import pytest
import torch

from lg_pipeline.gradients import backends


@pytest.mark.parametrize(("rows", "cols"), [(40, 64), (64, 40), (48, 48)])
def test_numpy_and_torch_eigensolves_of_the_gram_agree(rows, cols):
    """The CPU route (numpy) and the accelerator route (torch), both on this CPU, on an ill-conditioned matrix."""
    gen = torch.Generator().manual_seed(2)
    u, _ = torch.linalg.qr(torch.randn(rows, min(rows, cols), generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, min(rows, cols), generator=gen, dtype=torch.float64))
    m = (u * torch.logspace(0, -6, min(rows, cols), dtype=torch.float64)) @ v.T
    on_numpy, on_torch = backends.gram_eigenvalues_numpy(m), backends.gram_eigenvalues_torch(m)
    assert on_numpy.shape == on_torch.shape == (min(rows, cols),)
    assert torch.allclose(on_numpy, on_torch, rtol=0, atol=1e-14)
    assert on_numpy[-1] == pytest.approx(1.0, rel=1e-12)  # σ_max² of the made spectrum


@pytest.mark.parametrize(("rows", "cols"), [(6, 9), (9, 6)])
def test_a_stack_of_grams_is_solved_as_each_one_alone(rows, cols):
    """One batched call (numpy's stacked eigvalsh, torch's batched one) per stack: each matrix's own spectrum."""
    gen = torch.Generator().manual_seed(3)
    stack = torch.randn(5, rows, cols, generator=gen, dtype=torch.float64)
    for solve in (backends.gram_eigenvalues_numpy, backends.gram_eigenvalues_torch):
        together = solve(stack)
        assert together.shape == (5, min(rows, cols))
        for got, m in zip(together, stack, strict=True):
            assert torch.allclose(got, solve(m), rtol=1e-12, atol=1e-13)


def test_on_a_cpu_the_side_stream_and_the_joins_are_no_ops():
    x = torch.ones(3)
    with backends.side_stream("cpu", [x]):
        y = x * 2
    backends.join_side_stream("cpu")
    backends.synchronize(torch.device("cpu"))
    assert torch.equal(y, torch.full((3,), 2.0))
    assert not backends.is_cuda("cpu") and backends.is_cuda("cuda:1") and backends.is_cuda(torch.device("cuda"))


def test_the_cpu_twin_of_peak_memory_is_the_process_peak_resident_set():
    backends.reset_peak_memory("cpu")
    before = backends.peak_memory_mib("cpu")
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert float(block.sum()) > 0
    after = backends.peak_memory_mib("cpu")
    assert 1 < before <= after
