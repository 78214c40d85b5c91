"""Fixtures shared by every test (builders: tests/helpers/)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.builders import make_model, make_tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return make_tokenizer()


@pytest.fixture(scope="session")
def llama() -> Any:
    """A tiny GQA Llama shared by tests that only read it (the engine restores requires_grad after each batch)."""
    return make_model("llama-gqa")


@pytest.fixture
def single_thread():
    """One torch thread for the duration of a test.

    The matrices here are small, so a second thread buys little; on a shared 2-core
    machine it costs a lot: OpenMP threads competing with other processes stall
    (a test measured 4-7x slower under load with 2 threads than with 1).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test`), one share of the cores per worker.

    torch takes every core by default: two workers would each run two OpenMP threads on a 2-core machine, and
    oversubscribed OpenMP threads stall each other (see `single_thread`). Processes the tests start inherit it.
    """
    import os

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    import torch

    threads = max(1, (os.cpu_count() or 1) // int(workers))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
