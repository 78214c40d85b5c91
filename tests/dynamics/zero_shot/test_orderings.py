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


def test_cluster_keeps_each_task_together_in_the_given_task_order():
    tasks = ["b", "b", "a", "c", "a", "c"]
    order, score = od.cluster(tasks)
    assert list(order) == [0, 1, 2, 4, 3, 5]  # b first (it comes first), each task's items in their order
    assert np.isnan(score).all()


def test_cluster_shuffled_keeps_each_task_together_in_a_seeded_task_order():
    for seed in range(4):
        order, _ = od.cluster_shuffled(TASKS, seed)
        blocks = [TASKS[i] for i in order]
        runs = [t for k, t in enumerate(blocks) if k == 0 or blocks[k - 1] != t]
        assert sorted(runs) == ["a", "b", "c"] and len(runs) == 3  # each task one contiguous block
        task_order = list(np.random.default_rng([seed, sum(map(ord, "cluster"))]).permutation(3))
        expected = [i for t in task_order for i in range(6) if TASKS[i] == "abc"[t]]
        assert list(order) == expected
    assert len({tuple(od.cluster_shuffled(TASKS, s)[0]) for s in range(8)}) > 1  # the seed matters


def test_coarse_orders_tasks_by_the_wsd_of_their_mean_embedding():
    means = {t: [sum(TRAIN[i][k] for i in range(6) if TASKS[i] == t) / 2 for k in range(3)] for t in "abc"}
    task_wsd = dict(zip("abc", reference_wsd([means[t] for t in "abc"], TEST), strict=True))
    task_order = sorted("abc", key=lambda t: task_wsd[t])
    order, score = od.coarse(TRAIN, TASKS, TEST)
    assert list(order) == [i for t in task_order for i in range(6) if TASKS[i] == t]
    assert np.allclose(score, [task_wsd[TASKS[i]] for i in order])


def reference_tma(d: list[list[float]], farthest: bool = False, until: int | None = None) -> list[list[int]]:
    """Algorithm 1 restated: every test item picks its nearest (farthest) unused training item; the picks form a
    turn; stop once `until` items are used."""
    used: set[int] = set()
    turns = []
    sign = -1 if farthest else 1
    while len(used) < (len(d) if until is None else until):
        picks = set()
        for j in range(len(d[0])):
            free = [i for i in range(len(d)) if i not in used]
            picks.add(min(free, key=lambda i: (sign * d[i][j], i)))
        turns.append(sorted(picks))
        used |= picks
    return turns


def flat(turns) -> list[int]:
    return [i for turn in turns for i in turn]


def without_repeats(items) -> list[int]:
    out = []
    for i in items:
        if i not in out:
            out.append(i)
    return out


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


def test_tma_far_turns_are_each_test_items_farthest_remaining_item():
    d = reference_d(TRAIN, TEST)
    order, score = od.tma_far(od.distances(TRAIN, TEST))
    assert list(order) == flat(reference_tma(d, farthest=True))
    # by hand: the farthest items of the three test items are 4, 0 and 4 (turn 1); then 2, 1, 1; then 3 and 5
    assert list(order) == [0, 4, 1, 2, 3, 5]
    assert np.allclose(score, [reference_wsd(TRAIN, TEST)[i] for i in order])


def test_tma_maxmin_and_minmax_are_one_half_then_the_other_direction_reversed():
    d = reference_d(TRAIN, TEST)
    half = 3
    near, far = flat(reference_tma(d)), flat(reference_tma(d, farthest=True))
    maxmin = without_repeats(flat(reference_tma(d, farthest=True, until=half)) + near[::-1])
    minmax = without_repeats(flat(reference_tma(d, until=half)) + far[::-1])
    assert list(od.tma_maxmin(od.distances(TRAIN, TEST))[0]) == maxmin
    assert list(od.tma_minmax(od.distances(TRAIN, TEST))[0]) == minmax
    # by hand: farthest-first turns {0, 4}, {1, 2} reach half; then nearest-first [1, 2, 4, 0, 3, 5] reversed
    assert maxmin == [0, 4, 1, 2, 5, 3]
    assert minmax == [1, 2, 4, 5, 3, 0]  # nearest turn {1, 2, 4}; then farthest [0, 4, 1, 2, 3, 5] reversed


@pytest.mark.parametrize("seed", [0, 1])
def test_tma_maxmin_is_the_authors_list_where_their_halves_cover_every_item(seed):
    rng = np.random.default_rng(seed)
    train, test = rng.normal(size=(10, 4)), rng.normal(size=(3, 4))
    d = reference_d(train.tolist(), test.tolist())
    max_half = flat(reference_tma(d, farthest=True, until=5))
    min_half = flat(reference_tma(d, until=5))
    authors = without_repeats(max_half + min_half[::-1])  # their max-min: both halves, repeats dropped
    ours = list(od.tma_maxmin(od.distances(train, test))[0])
    assert is_permutation(ours, 10)
    if seed == 1:  # the halves cover all 10 items: their list exactly
        assert len(authors) == 10 and ours == authors
    else:  # seed 0: one item neither half reaches (they drop it); it sits between the halves
        missing = set(range(10)) - set(authors)
        assert len(missing) == 1 and ours == [*max_half, *missing, *[i for i in authors if i not in max_half]]


def test_tma_random_takes_one_random_remaining_item_per_test_item_each_turn():
    dist = od.distances(TRAIN, TEST)
    order, _ = od.tma_random(dist, 0)
    noise = np.random.default_rng([0, sum(map(ord, "tma_random"))]).random(dist.shape)
    assert list(order) == flat(reference_tma(noise.tolist()))
    assert is_permutation(order, 6)
    assert len({tuple(od.tma_random(dist, s)[0]) for s in range(8)}) > 1  # the seed matters


@pytest.mark.parametrize("k", [1, 2, 6])
def test_tma_subset_is_the_k_nearest_items_of_each_test_item_in_tma_order(k):
    d = reference_d(TRAIN, TEST)
    nearest = {i for j in range(3) for i in sorted(range(6), key=lambda i: (d[i][j], i))[:k]}
    order, score = od.tma_subset(od.distances(TRAIN, TEST), k)
    assert list(order) == [i for i in flat(reference_tma(d)) if i in nearest]
    assert nearest <= set(flat(reference_tma(d)[:k]))  # the first k turns hold them all
    assert np.allclose(score, [reference_wsd(TRAIN, TEST)[i] for i in order])
    if k == 1:  # by hand: test item 0 is nearest to item 1, test 1 to item 4, test 2 to item 2
        assert list(order) == [1, 2, 4]
    if k == 6:
        assert list(order) == list(od.tma(od.distances(TRAIN, TEST))[0])


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
    if name in od.SUBSET_ORDERINGS:
        assert len(set(order.tolist())) == len(order) and set(order.tolist()) <= set(range(len(TASKS)))
    else:
        assert is_permutation(order, len(TASKS))
    assert len(score) == len(order)
