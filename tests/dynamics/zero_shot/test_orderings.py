"""Each ordering against a direct re-statement of its formula, on small hand-made embeddings."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from lg_pipeline.dynamics.zero_shot import orderings as od

# Six training items of three tasks, three test items, in 3-D: easy to reason about by hand.
TRAIN = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.8, 0.3], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
TASKS = ["a", "a", "b", "b", "c", "c"]
TEST = np.array([[1.0, 0.2, 0.0], [0.0, 0.3, 1.0], [0.2, 1.0, 0.1]])


def cosine(u, v) -> float:
    return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def reference_d(train, test) -> list[list[float]]:
    return [[-cosine(u, v) for v in test] for u in train]


def reference_wsd(train, test) -> list[float]:
    d = reference_d(train, test)
    md = [min(row) for row in d]
    ad = [sum(row) / len(row) for row in d]
    w_avg = (sum(md) / len(md)) / (sum(ad) / len(ad))
    return [m + w_avg * a for m, a in zip(md, ad, strict=True)]


def is_permutation(order, n: int) -> bool:
    return sorted(int(i) for i in order) == list(range(n))


def test_distances_are_minus_cosine():
    assert np.allclose(od.distances(TRAIN, TEST), reference_d(TRAIN, TEST), atol=1e-12)


def test_wsd_weights_the_average_by_the_ratio_of_means():
    assert np.allclose(od.wsd(od.distances(TRAIN, TEST)), reference_wsd(TRAIN, TEST), atol=1e-12)


def test_nft_is_ascending_and_fft_descending_wsd():
    scores = reference_wsd(TRAIN, TEST)
    nearest = sorted(range(len(scores)), key=lambda i: scores[i])
    order, score = od.nft(od.wsd(od.distances(TRAIN, TEST)))
    assert list(order) == nearest
    assert np.allclose(score, [scores[i] for i in nearest])
    far, _ = od.fft(od.wsd(od.distances(TRAIN, TEST)))
    assert list(far) == sorted(range(len(scores)), key=lambda i: -scores[i])
    assert list(far) != list(order)


def test_round_robin_takes_one_item_per_task_in_turn():
    tasks = ["a", "a", "a", "b", "c", "c"]
    order, _ = od.round_robin(tasks)
    assert list(order) == [0, 3, 4, 1, 5, 2]


def test_cluster_keeps_each_task_together_in_a_seeded_task_order():
    for seed in range(4):
        order, _ = od.cluster(TASKS, seed)
        blocks = [TASKS[i] for i in order]
        runs = [t for k, t in enumerate(blocks) if k == 0 or blocks[k - 1] != t]
        assert sorted(runs) == ["a", "b", "c"] and len(runs) == 3  # each task one contiguous block
        task_order = list(np.random.default_rng([seed, sum(map(ord, "cluster"))]).permutation(3))
        expected = [i for t in task_order for i in range(6) if TASKS[i] == "abc"[t]]
        assert list(order) == expected
    assert len({tuple(od.cluster(TASKS, s)[0]) for s in range(8)}) > 1  # the seed matters


def test_coarse_orders_tasks_by_the_wsd_of_their_mean_embedding():
    means = {t: [sum(TRAIN[i][k] for i in range(6) if TASKS[i] == t) / 2 for k in range(3)] for t in "abc"}
    task_wsd = dict(zip("abc", reference_wsd([means[t] for t in "abc"], TEST), strict=True))
    task_order = sorted("abc", key=lambda t: task_wsd[t])
    order, score = od.coarse(TRAIN, TASKS, TEST)
    assert list(order) == [i for t in task_order for i in range(6) if TASKS[i] == t]
    assert np.allclose(score, [task_wsd[TASKS[i]] for i in order])


def reference_tma(d: list[list[float]]) -> list[list[int]]:
    """Algorithm 1 restated: every test item picks its nearest unused training item; the picks form a turn."""
    used: set[int] = set()
    turns = []
    while len(used) < len(d):
        picks = set()
        for j in range(len(d[0])):
            free = [i for i in range(len(d)) if i not in used]
            picks.add(min(free, key=lambda i: (d[i][j], i)))
        turns.append(sorted(picks))
        used |= picks
    return turns


def test_tma_turns_are_each_test_items_nearest_remaining_item():
    d = reference_d(TRAIN, TEST)
    assert od.tma_turns(od.distances(TRAIN, TEST)) == reference_tma(d)
    order, score = od.tma(od.distances(TRAIN, TEST))
    assert list(order) == [i for turn in reference_tma(d) for i in turn]
    assert np.allclose(score, [reference_wsd(TRAIN, TEST)[i] for i in order])


def test_tma_on_random_embeddings_matches_the_restatement():
    rng = np.random.default_rng(3)
    train, test = rng.normal(size=(23, 5)), rng.normal(size=(4, 5))
    turns = od.tma_turns(od.distances(train, test))
    assert turns == reference_tma(reference_d(train.tolist(), test.tolist()))
    assert len(turns) > 1 and all(1 <= len(t) <= 4 for t in turns)


def test_gradient_ordering_puts_the_largest_alignment_first():
    alignment = np.array([0.3, -1.0, 2.5, 0.0, 0.3, 1.0])
    order, score = od.gradient(alignment)
    assert list(order) == [2, 5, 0, 4, 3, 1]
    assert list(score) == [2.5, 1.0, 0.3, 0.3, 0.0, -1.0]


def test_rt_is_a_seeded_shuffle():
    assert list(od.rt(6, 0)[0]) == list(od.rt(6, 0)[0])
    assert len({tuple(od.rt(20, s)[0]) for s in range(5)}) == 5


@pytest.mark.parametrize("name", od.ORDERINGS)
def test_every_ordering_is_a_permutation_of_the_same_items(name):
    rng = random.Random(1)
    alignment = np.array([rng.uniform(-1, 1) for _ in TASKS])
    order, score = od.make_ordering(name, TASKS, 0, TRAIN, TEST, lambda: alignment)
    assert is_permutation(order, len(TASKS))
    assert len(score) == len(TASKS)
