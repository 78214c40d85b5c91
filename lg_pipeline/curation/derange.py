"""Seeded derangement for wrong-answer sets.

Each instruction gets the response of another instance of the same dataset and level: never its own, never an
identical response text, and never one whose final answer equals the instruction's gold answer (when both are
known). A random cyclic permutation (a derangement by construction) is repaired by swaps; instructions that no
swap can fix (e.g. 5 of 6 questions answered "yes") are returned as unpaired so the caller drops and counts them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Derangement:
    donor: dict[int, int]  # recipient index -> donor index, for every paired recipient
    unpaired: tuple[int, ...]  # recipients left without a valid donor


def _sattolo(n: int, rng: random.Random) -> list[int]:
    """A uniformly random single-cycle permutation: p[i] != i for all i when n > 1."""
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        p[i], p[j] = p[j], p[i]
    return p


def derange(
    gold: Sequence[str | None],
    donor_answer: Sequence[str | None],
    texts: Sequence[str],
    seed: int,
    max_passes: int = 20,
) -> Derangement:
    """Pair recipient i with donor p[i]; `gold[i]` is recipient i's answer, `donor_answer[j]` the answer donor j's
    response gives (None = unknown, which never conflicts)."""
    n = len(texts)
    if n < 2:
        return Derangement({}, tuple(range(n)))

    def ok(i: int, j: int) -> bool:
        if i == j or texts[i] == texts[j]:
            return False
        return gold[i] is None or donor_answer[j] is None or gold[i] != donor_answer[j]

    rng = random.Random(seed)
    p = _sattolo(n, rng)
    for _ in range(max_passes):
        bad = [i for i in range(n) if not ok(i, p[i])]
        if not bad:
            break
        for i in bad:
            if ok(i, p[i]):
                continue
            partners = list(range(n))
            rng.shuffle(partners)
            for j in partners:
                if ok(i, p[j]) and ok(j, p[i]):
                    p[i], p[j] = p[j], p[i]
                    break
    paired = {i: p[i] for i in range(n) if ok(i, p[i])}
    return Derangement(paired, tuple(i for i in range(n) if i not in paired))
