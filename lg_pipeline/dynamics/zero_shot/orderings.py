"""Orderings of the same training items by their similarity to the held-out test set (He et al., arXiv 2406.11721).

Distances follow the authors' `data/split_data_job.py`: D_ij = −cos(e_i^train, e_j^test), MD_i = min_j D_ij,
AD_i = mean_j D_ij, WSD_i = MD_i + w_avg·AD_i with w_avg = mean_i(MD_i) / mean_i(AD_i). TMA follows their
`select_min_data` (`data/convert_flan_data_job.py`): each turn every test item takes its nearest remaining
training item, the turn's distinct picks (in item order, as `np.unique` returns them) form a block. The TMA
variants follow the same file: `tma_far` is their `select_max_data` (each test item takes its farthest remaining
item), `tma_maxmin` / `tma_minmax` their `max-min` / `min-max` lists (the first half by one direction, then the
other direction's list reversed, repeats dropped), `tma_subset` their selection of fewer items than the pool.
Sorts are stable, so ties keep item order (the authors' `np.argsort` leaves them to quicksort).

Every function returns (order, score): `order` a permutation of the item indices, `score[k]` the score of the
item at position k (WSD for the embedding orderings, NaN where an ordering has none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

ORDERINGS: tuple[str, ...] = (
    "rt", "nft", "fft", "round_robin", "cluster", "coarse", "tma", "gradient",
    "cluster_shuffled", "tma_far", "tma_random", "tma_maxmin", "tma_minmax", "tma_subset",
)
TMA_ORDERINGS: tuple[str, ...] = ("tma", "tma_far", "tma_random", "tma_maxmin", "tma_minmax", "tma_subset")
EMBEDDING_ORDERINGS: tuple[str, ...] = ("nft", "fft", "coarse", *TMA_ORDERINGS)
SUBSET_ORDERINGS: tuple[str, ...] = ("tma_subset",)  # a subset of the training items, not a permutation
Ordering = tuple[np.ndarray, np.ndarray]


def distances(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """D_ij = −cos(train_i, test_j), (n_train, n_test), in float64."""
    a = np.asarray(train, dtype=np.float64)
    b = np.asarray(test, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return -(a @ b.T)


def wsd(dist: np.ndarray) -> np.ndarray:
    """Weighted Similarity Distance of each row of D (w_min = 1, w_avg = mean(MD) / mean(AD))."""
    md, ad = dist.min(axis=1), dist.mean(axis=1)
    return md + (md.mean() / ad.mean()) * ad


def _seeded(seed: int, salt: str) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, salt))])


def _nan_scores(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def rt(n: int, seed: int) -> Ordering:
    """Random Training: a seeded shuffle."""
    return _seeded(seed, "rt").permutation(n), _nan_scores(n)


def nft(scores: np.ndarray) -> Ordering:
    """Nearest First: ascending WSD."""
    order = np.argsort(scores, kind="stable")
    return order, scores[order]


def fft(scores: np.ndarray) -> Ordering:
    """Farthest First: descending WSD."""
    order = np.argsort(-scores, kind="stable")
    return order, scores[order]


def _groups(tasks: Sequence[str]) -> dict[str, list[int]]:
    """Item indices per task, tasks in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(task, []).append(i)
    return groups


def round_robin(tasks: Sequence[str]) -> Ordering:
    """One item per task in turn (tasks in their given order), until every task is used up."""
    queues = list(_groups(tasks).values())
    order = [q[k] for k in range(max(map(len, queues))) for q in queues if k < len(q)]
    return np.array(order, dtype=int), _nan_scores(len(order))


def cluster(tasks: Sequence[str]) -> Ordering:
    """Each task's items together, in their order, the tasks in their given order (the authors keep their list's)."""
    order = [i for queue in _groups(tasks).values() for i in queue]
    return np.array(order, dtype=int), _nan_scores(len(order))


def cluster_shuffled(tasks: Sequence[str], seed: int) -> Ordering:
    """Each task's items together, in their order; the order of the tasks is seeded."""
    queues = list(_groups(tasks).values())
    order = [i for t in _seeded(seed, "cluster").permutation(len(queues)) for i in queues[t]]
    return np.array(order, dtype=int), _nan_scores(len(order))


def coarse(train: np.ndarray, tasks: Sequence[str], test: np.ndarray) -> Ordering:
    """Tasks by ascending WSD of their mean embedding (the authors' `split_data_coarse_job.py`); items in order.

    Each item's score is its task's WSD.
    """
    groups = _groups(tasks)
    means = np.stack([np.asarray(train, dtype=np.float64)[idx].mean(axis=0) for idx in groups.values()])
    task_scores = wsd(distances(means, test))
    queues = list(groups.values())
    order, score = [], []
    for t in np.argsort(task_scores, kind="stable"):
        order += queues[t]
        score += [task_scores[t]] * len(queues[t])
    return np.array(order, dtype=int), np.array(score)


def tma_turns(dist: np.ndarray, until: int | None = None) -> list[list[int]]:
    """Test-centric Multi-turn Arrangement, turn by turn: each test item takes its nearest remaining training
    item; the turn's distinct picks, in item order, are its block. `until`: stop after the turn that reaches that
    many items (the authors' `num`; whole turns)."""
    remaining = np.array(dist, dtype=np.float64)
    taken = np.zeros(len(remaining), dtype=bool)
    turns: list[list[int]] = []
    limit = len(remaining) if until is None else min(until, len(remaining))
    while int(taken.sum()) < limit:
        remaining[taken] = np.inf  # the authors set used rows to max(D) + 1: never picked again while any is left
        picks = [int(i) for i in np.unique(np.argmin(remaining, axis=0))]
        turns.append(picks)
        taken[picks] = True
    return turns


def _flat(turns: list[list[int]]) -> list[int]:
    return [i for turn in turns for i in turn]


def _with_wsd(order: Sequence[int], dist: np.ndarray) -> Ordering:
    order = np.array(order, dtype=int)
    return order, wsd(dist)[order]


def tma(dist: np.ndarray) -> Ordering:
    """The TMA blocks one after the other; each item's score is its WSD."""
    return _with_wsd(_flat(tma_turns(dist)), dist)


def tma_far(dist: np.ndarray) -> Ordering:
    """TMA farthest first: each turn every test item takes its farthest remaining item (the authors'
    `select_max_data`: TMA on −D)."""
    return _with_wsd(_flat(tma_turns(-np.asarray(dist, dtype=np.float64))), dist)


def tma_random(dist: np.ndarray, seed: int) -> Ordering:
    """TMA's turns with random picks: each turn every test item takes a uniformly random remaining item (TMA on
    seeded i.i.d. uniform distances: the smallest of i.i.d. draws is a uniform pick). The authors' own "random"
    arrangement is a plain shuffle, which is `rt` here."""
    noise = _seeded(seed, "tma_random").random(np.shape(dist))
    return _with_wsd(_flat(tma_turns(noise)), dist)


def _first_then_reversed(first: np.ndarray, second: np.ndarray) -> list[int]:
    """The turns of TMA on `first` until half the items are placed, then TMA on `second` reversed, repeats
    dropped. With the authors' halves covering every item this is their list; items neither half reaches (they
    drop them) fall in between, in the reversed order."""
    half = _flat(tma_turns(first, until=math.ceil(len(first) / 2)))
    return list(dict.fromkeys([*half, *reversed(_flat(tma_turns(second)))]))


def tma_maxmin(dist: np.ndarray) -> Ordering:
    """Farthest-first TMA for the first half, then nearest-first TMA reversed: the nearest items come last."""
    d = np.asarray(dist, dtype=np.float64)
    return _with_wsd(_first_then_reversed(-d, d), dist)


def tma_minmax(dist: np.ndarray) -> Ordering:
    """Nearest-first TMA for the first half, then farthest-first TMA reversed: the farthest items come last."""
    d = np.asarray(dist, dtype=np.float64)
    return _with_wsd(_first_then_reversed(d, -d), dist)


def tma_subset(dist: np.ndarray, k: int) -> Ordering:
    """TMA as subset selection: only the k nearest training items of each test item (their union), in TMA's
    order. The first k turns of TMA hold every one of them (a test item's pick is in its k nearest while any of
    those is left), and may hold more, which are dropped."""
    d = np.asarray(dist, dtype=np.float64)
    nearest = set(np.argsort(d, axis=0, kind="stable")[: min(k, len(d))].ravel().tolist())
    return _with_wsd([i for i in _flat(tma_turns(d)) if i in nearest], dist)


def gradient(alignment: np.ndarray) -> Ordering:
    """Descending ⟨∇L_u, ∇L_test⟩ at step 0: the items whose step lowers held-out loss most come first."""
    alignment = np.asarray(alignment, dtype=np.float64)
    order = np.argsort(-alignment, kind="stable")
    return order, alignment[order]


def make_ordering(
    name: str,
    tasks: Sequence[str],
    seed: int,
    train_emb: np.ndarray | None = None,
    test_emb: np.ndarray | None = None,
    alignment: Callable[[], np.ndarray] | None = None,
    subset_k: int = 1,
) -> Ordering:
    """One named ordering of the training items; embeddings for the embedding orderings, alignments for `gradient`,
    `subset_k` nearest items per test item for `tma_subset`."""
    n = len(tasks)
    if name == "rt":
        return rt(n, seed)
    if name == "round_robin":
        return round_robin(tasks)
    if name == "cluster":
        return cluster(tasks)
    if name == "cluster_shuffled":
        return cluster_shuffled(tasks, seed)
    if name == "gradient":
        if alignment is None:
            raise ValueError("the gradient ordering needs the alignments")
        return gradient(alignment())
    if train_emb is None or test_emb is None:
        raise ValueError(f"ordering {name!r} needs the embeddings")
    if name == "coarse":
        return coarse(train_emb, tasks, test_emb)
    dist = distances(train_emb, test_emb)
    if name == "nft":
        return nft(wsd(dist))
    if name == "fft":
        return fft(wsd(dist))
    simple = {"tma": tma, "tma_far": tma_far, "tma_maxmin": tma_maxmin, "tma_minmax": tma_minmax}
    if name in simple:
        return simple[name](dist)
    if name == "tma_random":
        return tma_random(dist, seed)
    if name == "tma_subset":
        return tma_subset(dist, subset_k)
    raise ValueError(f"unknown ordering {name!r}")
