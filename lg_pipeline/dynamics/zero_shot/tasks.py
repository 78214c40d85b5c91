"""Tasks for zero-shot dynamics: named pools of (instruction, response) items, split into train and held-out test.

A task comes from a `TaskProvider` (the composition root injects one built on reasoning-gym and the dataset
catalog: `data_sources.datasets.zero_shot_tasks`) or from any study-format JSON file, given as `name=FILE.json`.
Items keep one id per (task, index), whatever the level, so the same instruction at another CoT level is the
same item and runs at different levels compare directly. Test tasks are always read at their first level
(the responses the held-out loss is measured on must not change with the training level).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lg_pipeline.errors import InputError, SettingsError, int_at_least, one_of, raise_problems, setting
from lg_pipeline.example import Example
from lg_pipeline.io.study_json import load_study_json
from lg_pipeline.vocabulary import REASONING_LEVELS

TRAIN, TEST = "train", "test"
# The offline default: 12 training and 3 held-out reasoning-gym tasks with short items (CPU-sized); each held-out
# task has relatives among the training tasks (sums, primes, reversing words).
DEMO_TRAIN_TASKS: tuple[str, ...] = (
    "basic_arithmetic", "gcd", "lcm", "prime_factorization", "count_bits", "spell_backward", "letter_counting",
    "caesar_cipher", "family_relationships", "syllogism", "simple_equations", "coin_flip",
)
DEMO_TEST_TASKS: tuple[str, ...] = ("chain_sum", "count_primes", "word_sequence_reversal")


@dataclass(frozen=True)
class Task:
    """One task's drawn items (ids `<task>/<index>`)."""

    name: str
    items: tuple[Example, ...]


@dataclass(frozen=True)
class TaskSplit:
    """Training and held-out tasks, disjoint."""

    train: tuple[Task, ...]
    test: tuple[Task, ...]
    level: str

    def train_items(self) -> list[tuple[str, Example]]:
        """(task, item) of every training item, tasks in the given order, items in drawn order."""
        return [(t.name, e) for t in self.train for e in t.items]

    def test_items(self) -> list[tuple[str, Example]]:
        return [(t.name, e) for t in self.test for e in t.items]


class TaskProvider(Protocol):
    """Where named tasks come from (an adapter; the core never imports one)."""

    def names(self) -> list[str]:
        """Every task available offline."""
        ...

    def has(self, name: str) -> bool: ...

    def draw(self, name: str, level: str | None, n: int, seed: int) -> list[Example]:
        """Up to n items of the task, seeded; `level` None: the task's first level. May return fewer than n."""
        ...


def parse_task(spec: str) -> tuple[str, str | None]:
    """`name` or `name=FILE.json` -> (name, file or None)."""
    name, sep, file = spec.strip().partition("=")
    name = name.strip()
    if not name or (sep and not file.strip()):
        raise InputError(f"task {spec!r}: expected a task name or name=FILE.json")
    return name, file.strip() if sep else None


def parse_task_list(specs: str | Sequence[str], flag: str) -> list[str]:
    """`"a,b,c"` or a list -> task specs; an empty list is an error naming the flag."""
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    out = [s.strip() for s in items if s.strip()]
    if not out:
        raise InputError(f"{flag}: no task given")
    return out


def _json_items(name: str, file: str, n: int, seed: int) -> list[Example]:
    """A seeded sample of n rows of a study-format file, in file order."""
    rows = load_study_json(file)
    if len(rows) <= n:
        return rows
    keep = sorted(random.Random(f"{seed}:{name}").sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def draw_task(spec: str, provider: TaskProvider | None, level: str | None, n: int, seed: int, name: str) -> Task:
    """One task with exactly n items, or a SettingsError naming the task and the setting `name` that lists it."""
    task, file = parse_task(spec)
    if file is not None:
        drawn = _json_items(task, file, n, seed)
    elif provider is not None and provider.has(task):
        drawn = provider.draw(task, level, n, seed)
    else:
        hint = "lg-pipeline zero-shot --list-tasks lists the offline ones"
        raise SettingsError([setting(name, f"unknown task {task!r} ({hint})")])
    if len(drawn) < n:
        raise SettingsError([setting(name, f"task {task!r} has {len(drawn)} item(s), {n} asked")])
    items = tuple(Example(f"{task}/{i}", e.instruction.strip(), e.response.strip()) for i, e in enumerate(drawn[:n]))
    return Task(task, items)


def split_problems(
    train: Sequence[str], test: Sequence[str], level: str, per_task: int, per_test_task: int
) -> list[str | None]:
    """What is wrong with a split before any task is drawn (problem templates naming the settings)."""
    problems = [one_of("level", level, REASONING_LEVELS), int_at_least("per_task", per_task, 1),
                int_at_least("per_test_task", per_test_task, 1)]
    names = {}
    for tasks, name in ((train, "train_tasks"), (test, "test_tasks")):
        try:
            names[name] = [parse_task(s)[0] for s in tasks]
        except InputError as exc:
            problems.append(setting(name, str(exc)))
            names[name] = []
        if not tasks:
            problems.append(setting(name, "no task given"))
        repeated = sorted({n for n in names[name] if names[name].count(n) > 1})
        if repeated:
            problems.append(setting(name, f"task {repeated[0]!r} is given twice"))
    both = [n for n in names["train_tasks"] if n in names["test_tasks"]]
    if both:
        problems.append(f"task {both[0]!r} is in both {{train_tasks}} and {{test_tasks}}")
    return problems


def build_split(
    train: Sequence[str],
    test: Sequence[str],
    provider: TaskProvider | None,
    level: str = "none",
    per_task: int = 5,
    per_test_task: int = 4,
    seed: int = 0,
) -> TaskSplit:
    """Draw the training tasks at `level` and the test tasks at their first level; reject overlapping splits."""
    raise_problems(split_problems(train, test, level, per_task, per_test_task))
    train_tasks = tuple(draw_task(s, provider, level, per_task, seed, "train_tasks") for s in train)
    test_tasks = tuple(draw_task(s, provider, None, per_test_task, seed, "test_tasks") for s in test)
    return TaskSplit(train_tasks, test_tasks, level)


def split_frame(split: TaskSplit):
    """`tasks.parquet`: example_id, task, split, instruction, response."""
    import pandas as pd

    rows = [
        {"example_id": e.example_id, "task": task, "split": part, "instruction": e.instruction, "response": e.response}
        for part, items in ((TRAIN, split.train_items()), (TEST, split.test_items()))
        for task, e in items
    ]
    return pd.DataFrame(rows, columns=["example_id", "task", "split", "instruction", "response"])
