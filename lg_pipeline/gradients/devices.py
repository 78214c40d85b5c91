"""Device leases: concurrent gradient steps on one multi-GPU machine each get a device of their own.

The Dagster `gpu` pool caps *how many* gradient steps run at once; it does not say *which* GPU each
one should use, so two steps configured with `device: cuda` would both land on `cuda:0`. A lease is
an exclusive, non-blocking `flock` on `<lock_dir>/<device>.lock`: the first free device wins. The
kernel drops the lock when its holder exits, so a step that raises, crashes or is killed never
leaves a device reserved (no stale-lock clean-up, no PID files to trust).

The lock folder is this user's own (created 0o700 and checked, `lg_pipeline.io.locks.private_dir`); lock files
are opened with `O_NOFOLLOW`, mode 0o600, and one owned by another user is refused, so a planted symlink or file
can never make a run write elsewhere. Only one machine's processes coordinate this way; across machines
(Kubernetes) each pod is given its own GPU by the scheduler and the lease is trivially uncontended.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lg_pipeline.errors import InputError
from lg_pipeline.io.locks import open_private, private_dir

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / f"lg-pipeline-{os.getuid()}" / "devices"
DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got '{name}'")
    return getattr(torch, name)


def check_device(device: str) -> str:
    """Accept `cpu`, `cuda`, `cuda:N`; fail clearly when CUDA is asked for but absent."""
    import torch

    if device == "cpu":
        return device
    if not device.startswith("cuda") or (device != "cuda" and not device[5:].isdigit()):
        raise InputError(f"device must be cpu, cuda or cuda:N, got '{device}'")
    if not torch.cuda.is_available():
        raise InputError(f"device '{device}' requested but CUDA is not available on this machine")
    return device


class DeviceLease:
    """A held device; `release()` (or leaving the `with` block) frees it for the next step."""

    def __init__(self, device: str, fd: int | None = None, lock_file: Path | None = None):
        self.device = device
        self.lock_file = lock_file
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Idempotent: safe in `finally` blocks and teardown hooks that may run twice."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> DeviceLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DeviceLease({self.device!r}, held={self.held})"


def candidate_devices(device: str, devices: str | Sequence[str] = "") -> list[str]:
    """The devices a step configured with `device` may lease.

    An explicit list (`LG_DEVICES=cuda:0,cuda:1`, also how tests simulate GPUs) wins; `cuda` means every
    visible GPU; `cpu` and an explicit `cuda:N` are used as they are (nothing to choose between).
    """
    explicit = [d.strip() for d in (devices.split(",") if isinstance(devices, str) else devices) if d.strip()]
    if explicit:
        return explicit
    if device == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(count)] or [device]
    return [device]


def lease_device(
    candidates: Sequence[str],
    lock_dir: str | Path = DEFAULT_LOCK_DIR,
    timeout_s: float | None = 600.0,
    poll_s: float = 0.2,
) -> DeviceLease:
    """Hold the first free device of `candidates`, waiting up to `timeout_s` (None: forever) for one.

    A single candidate that is the CPU needs no lock: CPU steps share the machine's cores.
    """
    if not candidates:
        raise InputError("no device to lease: the candidate list is empty")
    if list(candidates) == ["cpu"]:
        return DeviceLease("cpu")
    folder = private_dir(Path(lock_dir))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for device in candidates:
            lease = _try_lock(device, folder)
            if lease is not None:
                return lease
        if deadline is not None and time.monotonic() >= deadline:
            raise InputError(
                f"no free device among {', '.join(candidates)} after {timeout_s:.0f}s "
                f"(leases in {folder}); is the `gpu` pool limit above the number of devices?"
            )
        time.sleep(poll_s)


def _try_lock(device: str, folder: Path) -> DeviceLease | None:
    path = folder / (device.replace(":", "_").replace("/", "_") + ".lock")
    fd = open_private(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # Who holds it, for a person looking at the lock folder (the lock itself is the flock, not this text);
    # written only once held, into a file `open_private` has shown to be this user's own.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {device}\n".encode())
    return DeviceLease(device, fd, path)
