"""What the engine does differently on CUDA, each beside its CPU twin (the one the tests run).

- Eigenvalues of stacked float64 Grams: one batched `torch.linalg.eigvalsh` call on CUDA (cuSOLVER);
  on a CPU numpy's, which loops LAPACK's `dsyevd` over the stack in C through OpenBLAS (why not
  torch's CPU build: see `gram_eigenvalues_numpy`).
- A side stream for the statistics computed in the backward hook, so the backward's own kernels
  keep the device busy while they run; on a CPU there is nothing to overlap (the twin is a no-op).
- Peak memory of a run: `torch.cuda.max_memory_allocated` on CUDA, the process's peak resident set
  on a CPU.

Why not in `devices.py`: that module leases devices between processes (lock files, no torch kernels)
and is imported by the Dagster resource before any model is loaded; these are the kernels and
counters of one process's computation.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator, Sequence
from typing import Any

_SIDE_STREAMS: dict[Any, Any] = {}


def is_cuda(device: Any) -> bool:
    return getattr(device, "type", str(device).split(":")[0]) == "cuda"


def gram_eigenvalues(m: Any) -> Any:
    """Ascending eigenvalues of each matrix's Gram on its smaller side; m: (..., rows, cols) float64."""
    return gram_eigenvalues_numpy(m) if m.device.type == "cpu" else gram_eigenvalues_torch(m)


def gram_eigenvalues_torch(m: Any) -> Any:
    """By torch: one batched call (cuSOLVER on CUDA)."""
    import torch

    gram = m @ m.mT if m.shape[-2] <= m.shape[-1] else m.mT @ m
    return torch.linalg.eigvalsh(gram)


def gram_eigenvalues_numpy(m: Any) -> Any:
    """The same through numpy (OpenBLAS) on a CPU tensor, rather than torch's CPU build (MKL).

    Why: on this project's AMD EPYC machines MKL's float64 GEMM and dsyevd (the same LAPACK
    routine) took 1.2-1.9× OpenBLAS's on the 192-576-wide Grams of a Detailed-CoT example, and
    numpy's eigensolver releases the GIL, so the statistics' worker threads still run side by
    side (`bench/bench_spectra.py` times both). For one matrix `a @ a.T` on one buffer is a
    symmetric rank-k update.
    """
    import numpy as np
    import torch

    a = m.numpy()
    t = np.swapaxes(a, -1, -2)
    return torch.from_numpy(np.linalg.eigvalsh(a @ t if a.shape[-2] <= a.shape[-1] else t @ a))


@contextlib.contextmanager
def side_stream(device: Any, inputs: Sequence[Any] = ()) -> Iterator[None]:
    """Run the block on a second CUDA stream that starts after the work queued so far; a no-op on a CPU.

    `inputs` (made on the current stream) are marked as used by the side stream, so the caching
    allocator does not hand their memory to the backward before the block's kernels have read them.
    Call `join_side_stream` before reading the block's results on the current stream.
    """
    if not is_cuda(device):
        yield
        return
    import torch

    main = torch.cuda.current_stream(device)
    side = _SIDE_STREAMS.get(main.device)
    if side is None:
        side = _SIDE_STREAMS[main.device] = torch.cuda.Stream(main.device)
    side.wait_stream(main)
    for tensor in inputs:
        tensor.record_stream(side)
    with torch.cuda.stream(side):
        yield


def join_side_stream(device: Any) -> None:
    """Make the current stream wait for everything queued on the side stream; a no-op on a CPU."""
    if not is_cuda(device):
        return
    import torch

    main = torch.cuda.current_stream(device)
    side = _SIDE_STREAMS.get(main.device)
    if side is not None:
        main.wait_stream(side)


def synchronize(device: Any) -> None:
    """Wait for the device to finish (timing); a no-op on a CPU, whose calls return when done."""
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


def reset_peak_memory(device: Any) -> None:
    """Start a new peak on CUDA; on a CPU the process's peak resident set cannot be reset."""
    if is_cuda(device):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: Any) -> float:
    """Peak memory in MiB: allocated on the CUDA device since its last reset, or the process's peak RSS."""
    if is_cuda(device):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)
