"""Offline zero-shot tasks: catalog datasets at their CoT levels, reasoning-gym generators, bad levels named."""

from __future__ import annotations

import pytest

from data_sources.datasets.zero_shot_tasks import OfflineTasks
from lg_pipeline.errors import InputError


@pytest.fixture
def tasks(tmp_path) -> OfflineTasks:
    return OfflineTasks(cache_dir=tmp_path)


def test_catalog_levels_choose_the_responses_of_the_same_instructions(tasks):
    none = tasks.draw("commonsense_demo", "none", 3, 0)
    detailed = tasks.draw("commonsense_demo", "detailed", 3, 0)
    assert [e.instruction for e in none] == [e.instruction for e in detailed]
    assert all(len(d.response) > len(n.response) for n, d in zip(none, detailed, strict=True))


def test_generators_are_seeded_and_answer_only(tasks):
    first, again = tasks.draw("gcd", None, 4, 0), tasks.draw("gcd", "detailed", 4, 0)
    other = tasks.draw("gcd", None, 4, 1)
    assert first == again and first != other and len(first) == 4
    assert all(e.response.strip().isdigit() for e in first)
    assert tasks.describe("gcd") == "reasoning-gym generator, answer only"


def test_catalog_names_shadow_generators_and_missing_levels_are_named(tasks):
    assert tasks.names().count("gsm_symbolic") == 1 and "levels none, simplified" in tasks.describe("gsm_symbolic")
    with pytest.raises(InputError, match="task 'gsm_symbolic' has no offline level 'detailed'"):
        tasks.draw("gsm_symbolic", "detailed", 2, 0)
    assert not tasks.has("no_such_task")
