"""Good outputs to plant defects in: a learning-dynamics folder and a zero-shot folder built from numbers that keep
every identity their runs keep (predicted = Σ terms, measured = Δ log-probability, `__all__` = item mean, equal
step-0 losses, ...), so each check starts from a folder it passes and a defect is the only thing wrong. The real
runs' folders pass the same checks (`tests/dynamics/*/test_checks.py`, marked slow); these are built in
milliseconds, so the defect suites run in `make test-fast`.

`edit(folder, table, change)` rewrites one table of a folder (its manifest kept); `Defect` pairs a plant with the
rules it must break.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lg_pipeline.io.atomic import write_parquet
from lg_pipeline.io.manifest import read_manifest

LAYERS, MODULES = (0, 1), ("q_proj", "o_proj")
PARAMETERS = [(layer, m, f"model.layers.{layer}.self_attn.{m}.weight") for layer in LAYERS for m in MODULES]
STEPS, EVAL_EVERY, EVAL_STEPS = 4, 2, (0, 2)
PROBES = (("p0", "e0", "trained"), ("p1", "e0", "wrong"), ("p2", "e3", "held_out"), ("p3", "e0", "greedy"))
BATCHES = {0: ("e0", "e1"), 2: ("e2", "e0")}


@dataclass(frozen=True)
class Defect:
    """One planted defect: `plant(folder)` breaks it in place; `rules` are what the check must name."""

    plant: Callable[[Path], Any]
    rules: frozenset[str]


def defect(plant: Callable[[Path], Any], *rules: str) -> Defect:
    return Defect(plant, frozenset(rules))


_TEMPLATES: dict[tuple[Any, Path], Path] = {}


def fresh_copy(build: Callable[[Path], Path], tmp_path_factory: Any, tmp_path: Path) -> Path:
    """A copy of the good folder `build` makes (built once per test session) to plant one defect in."""
    import shutil

    key = (build, tmp_path_factory.getbasetemp())
    if key not in _TEMPLATES:
        _TEMPLATES[key] = build(tmp_path_factory.mktemp("good") / build.__name__)
    return Path(shutil.copytree(_TEMPLATES[key], tmp_path / "run"))


def assert_caught(check: Callable[[Path], Any], folder: Path, name: str, planted: Defect) -> None:
    """Plant `planted` in `folder`: `check(folder)` must fail, naming (at least) its rules, each saying what broke."""
    planted.plant(folder)
    report = check(folder)
    assert not report.passed, f"{name}: passed"
    assert planted.rules <= set(report.failed_rules()), f"{name}: failed {report.failed_rules()}"
    assert all(o.detail for o in report.failures()), "every failure says what broke"


def _write(folder: Path, name: str, frame: pd.DataFrame, kind: str) -> None:
    write_parquet(frame, folder / f"{name}.parquet", manifest={"kind": kind})


def edit(folder: Path, table: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """Rewrite `table` of `folder` as `change` makes it, with the manifest it had."""
    path = folder / f"{table}.parquet"
    frame = change(pd.read_parquet(path).copy())
    write_parquet(frame.reset_index(drop=True), path, manifest=read_manifest(path))


def set_at(frame: pd.DataFrame, row: int, column: str, value: Any) -> pd.DataFrame:
    frame = frame.astype({column: object}) if isinstance(value, str) else frame
    frame.loc[frame.index[row], column] = value
    return frame


# Plants: each returns `plant(folder)`, the change one defect makes.
def dropped(table: str, mask: Callable[[pd.DataFrame], Any]) -> Callable[[Path], None]:
    """The rows of `table` where `mask` holds, deleted."""
    return lambda f: edit(f, table, lambda t: t[~mask(t)])


def changed(table: str, row: int, column: str, value: Any) -> Callable[[Path], None]:
    """One value of `table` (the `row`-th row) replaced."""
    return lambda f: edit(f, table, lambda t: set_at(t, row, column, value))


def repeated(table: str, row: int = 0, **changes: Any) -> Callable[[Path], None]:
    """The `row`-th row of `table` appended again, with `changes`."""
    return lambda f: edit(f, table, lambda t: pd.concat([t, t.iloc[[row]].assign(**changes)]))


def removed(name: str) -> Callable[[Path], None]:
    return lambda f: (f / name).unlink()


def torn(name: str) -> Callable[[Path], None]:
    """The file cut in half, as a writer killed mid-write without an atomic rename would leave it."""
    def tear(f: Path) -> None:
        data = (f / name).read_bytes()
        (f / name).write_bytes(data[: len(data) // 2])

    return tear


def matrix_stats(grad: np.ndarray, tokens: int) -> dict[str, float]:
    """The engine's statistics of one gradient matrix (as `gradients.spectra` defines them)."""
    s = np.linalg.svd(grad, compute_uv=False)
    p = s / s.sum()
    return {
        "nuclear_norm": s.sum(), "sigma_max": s.max(), "sigma_min": s.min() if tokens >= min(grad.shape) else 0.0,
        "frobenius_norm": math.sqrt((s * s).sum()), "grad_mean": grad.mean(), "grad_max": grad.max(),
        "grad_min": grad.min(), "effective_rank": math.exp(-(p * np.log(p)).sum()),
        "stable_rank": (s * s).sum() / s.max() ** 2,
    }


# ------------------------------------------------------------------------------------------------ learning
def learning_folder(folder: Path) -> Path:
    """A complete SFT run: 4 steps, eval steps 0 and 2, 4 probes (one `greedy`, decoded again at each eval step in
    `greedy_now`), 2 layers × (q, o), batches of 2."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    kind = "dynamics.{}".format
    probes = pd.DataFrame(
        [(p, prompt, t, f"question {prompt}", f"response {p}") for p, prompt, t in PROBES],
        columns=["probe_id", "prompt_id", "probe_type", "instruction", "response"],
    )
    logprobs, influence, summary, kernel, stats, residuals, greedy = [], [], [], [], [], [], []
    peaked = (0.4, 2.1, 330.0, 0.8)  # max_prob_mean, entropy_mean, a_norm_mean, residual_norm_mean
    for step in EVAL_STEPS:
        for probe, _, probe_type in PROBES:
            terms = rng.normal(0, 1e-3, len(PARAMETERS))
            influence += [(step, probe, layer, m, name, float(v))
                          for (layer, m, name), v in zip(PARAMETERS, terms, strict=True)]
            predicted = float(terms.sum())
            before, n = -40.0 - 10 * rng.random(), 20 + PROBES.index((probe, _, probe_type))
            after = before + predicted * 1.01
            logprobs += [(s, probe, probe_type, lp, lp / n, n, *peaked)
                         for s, lp in ((step, before), (step + 1, after))]
            summary.append((step, probe, probe_type, predicted, after - before, predicted, 0.0))
            kernel += [(step, probe, e, layer, m, k, k, 0.0) for e in BATCHES[step] for layer, m, _ in PARAMETERS
                       for k in [float(rng.normal())]]
        greedy.append((step, "e0", "p3", "response p3" if step == 0 else "another response", step == 0,
                       -3.0 - step, (-3.0 - step) / 4, 4, *peaked))
        for e in BATCHES[step]:
            residuals.append((step, e, "chosen", 1 / 6, 0.9, 6))
            for layer, m, name in PARAMETERS:
                row = matrix_stats(rng.normal(0, 1e-2, (8, 6)), 12)
                stats.append({"step": step, "example_id": e, "layer": layer, "module": m, "parameter": name,
                              "loss": 5.25, "n_tokens": 12, "n_response_tokens": 6, **row})
    tables = {
        "probes": probes,
        "logprobs": pd.DataFrame(logprobs, columns=["step", "probe_id", "probe_type", "logp_sum", "logp_mean",
                                                    "n_response_tokens", "max_prob_mean", "entropy_mean",
                                                    "a_norm_mean", "residual_norm_mean"]),
        "influence": pd.DataFrame(influence, columns=["step", "probe_id", "layer", "module", "parameter",
                                                      "predicted_delta"]),
        "influence_summary": pd.DataFrame(summary, columns=["step", "probe_id", "probe_type", "predicted_delta",
                                                            "measured_delta", "chosen_share", "rejected_share"]),
        "kernel": pd.DataFrame(kernel, columns=["step", "probe_id", "example_id", "layer", "module", "grad_inner",
                                                "grad_inner_chosen", "grad_inner_rejected"]),
        "train_residuals": pd.DataFrame(residuals, columns=["step", "example_id", "term", "weight",
                                                            "residual_norm_mean", "n_response_tokens"]),
        "train_log": pd.DataFrame({"step": range(STEPS), "loss": [5.3, 5.2, 5.1, 5.0], "learning_rate": 1e-4,
                                   "update_norm": [2e-4, 1.9e-4, 1.8e-4, 1.7e-4]}),
        "train_gradient_stats": pd.DataFrame(stats),
        "greedy_now": pd.DataFrame(greedy, columns=["step", "prompt_id", "probe_id", "response", "same_as_start",
                                                    "logp_sum", "logp_mean", "n_response_tokens", "max_prob_mean",
                                                    "entropy_mean", "a_norm_mean", "residual_norm_mean"]),
    }
    for name, frame in tables.items():
        _write(folder, name, frame, kind(name))
    run = {"config": {"steps": STEPS, "objective": "sft", "max_length": 64, "batch_size": 2},
           "eval_every": EVAL_EVERY, "probes": [p for p, _, _ in PROBES]}
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "summary.json").write_text(json.dumps({"steps": STEPS, "eval_steps": list(EVAL_STEPS)}))
    return folder


# ------------------------------------------------------------------------------------------------ zero-shot
TRAIN_TASKS, TEST_TASKS = {"add": 3, "sort": 3}, {"ask": 2, "tell": 1}
ORDERINGS = ("rt", "nft", "gradient", "tma_subset")
SUBSET = 4  # tma_subset keeps 4 of the 6 items: 2 steps, eval steps 0, 2
BATCH, EVERY, MAX_NEW = 2, 2, 8  # 6 items: 3 steps, eval steps 0, 2, 3


def _generation_rows(name: str, step: int, test: pd.DataFrame, rng: np.random.Generator) -> tuple[list, list]:
    """Scored answers of every test item (ROUGE-L ≤ ROUGE-1, exact match 0/1, no reward) and their task means."""
    from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS

    items = []
    for e, t in zip(test.example_id, test.task, strict=True):
        r1 = 0.5 if not items else float(rng.uniform(0.1, 0.9))
        rl = r1 / 2 if not items else float(r1 * rng.uniform(0.3, 1.0))
        answer = f"first answer of {e}" if step == 0 else f"{name} answer {step} of {e}"
        items.append((name, step, e, t, answer, int(rng.integers(1, MAX_NEW + 1)), r1, rl,
                      float(rng.random() < 0.3), math.nan))
    frame = pd.DataFrame(items, columns=["ordering", "step", "example_id", "task", "generation", "n_new_tokens",
                                         "rouge1", "rougeL", "exact_match", "reward"])
    scores = ["rouge1", "rougeL", "exact_match", "reward"]
    tasks = [(name, step, t, *g[scores].mean().tolist(), len(g)) for t, g in frame.groupby("task", sort=False)]
    tasks.append((name, step, ALL_TASKS, *frame[scores].mean().tolist(), len(frame)))
    return items, tasks


def zero_shot_folder(folder: Path) -> Path:
    """A complete run of the orderings rt, nft, gradient (with its alignments) and tma_subset (4 of the 6
    training items), with generation metrics."""
    from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, eval_steps

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    kind = "zero_shot.{}".format
    rows = [(f"{t}/{i}", t, split, f"{t} question {i}", f"{t} answer {i}")
            for split, tasks in (("train", TRAIN_TASKS), ("test", TEST_TASKS)) for t, n in tasks.items()
            for i in range(n)]
    tasks = pd.DataFrame(rows, columns=["example_id", "task", "split", "instruction", "response"])
    train = tasks[tasks.split == "train"].reset_index(drop=True)
    test = tasks[tasks.split == "test"].reset_index(drop=True)
    start = {t: 5.5 + 0.1 * i for i, t in enumerate(TEST_TASKS)}
    orders, losses, seen, answers, metrics = [], [], [], [], []
    for o, name in enumerate(ORDERINGS):
        order = rng.permutation(len(train))[: SUBSET if name == "tma_subset" else len(train)]
        orders += [(name, k, train.example_id[i], train.task[i], float(rng.normal())) for k, i in enumerate(order)]
        for step in eval_steps(math.ceil(len(order) / BATCH), EVERY):
            scored = np.random.default_rng([2, step, o if step else 0])  # step 0: every ordering's same answers
            items, per_task_scores = _generation_rows(name, step, test, scored)
            answers += items
            metrics += per_task_scores
            per_task = {t: start[t] - 0.05 * step * (1 + o) for t in TEST_TASKS}
            losses += [(name, step, t, v, TEST_TASKS[t]) for t, v in per_task.items()]
            total = sum(v * TEST_TASKS[t] for t, v in per_task.items()) / sum(TEST_TASKS.values())
            losses.append((name, step, ALL_TASKS, total, sum(TEST_TASKS.values())))
            for t in TEST_TASKS:
                if step == 0:
                    seen.append((name, step, t, *[math.nan] * 4))
                else:
                    low, high = sorted(rng.uniform(-0.9, -0.2, 2))
                    seen.append((name, step, t, low, (low + high) / 2, high, rng.uniform(-0.9, -0.2)))
    alignment = [(e, layer, m, p, float(rng.normal())) for e in train.example_id for layer, m, p in PARAMETERS]
    tables = {
        "tasks": tasks,
        "orderings": pd.DataFrame(orders, columns=["ordering", "position", "example_id", "task", "score"]),
        "zero_shot": pd.DataFrame(losses, columns=["ordering", "step", "task", "loss", "n_examples"]),
        "seen_distance": pd.DataFrame(seen, columns=["ordering", "step", "test_task", "min", "avg", "max",
                                                     "centroid"]),
        "alignment": pd.DataFrame(alignment, columns=["example_id", "layer", "module", "parameter", "alignment"]),
        "generation_metrics": pd.DataFrame(metrics, columns=["ordering", "step", "task", "rouge1", "rougeL",
                                                             "exact_match", "reward", "n_examples"]),
        "generations": pd.DataFrame(answers, columns=["ordering", "step", "example_id", "task", "generation",
                                                      "n_new_tokens", "rouge1", "rougeL", "exact_match", "reward"]),
    }
    from lg_pipeline.dynamics.zero_shot.stability import stability_table

    tables["metric_stability"] = stability_table(tables["zero_shot"], tables["generation_metrics"])
    for name, frame in tables.items():
        _write(folder, name, frame, kind(name))
    settings = {"eval_every": EVERY, "batch_size": BATCH, "learning_rate": 1e-5, "level": "none",
                "generation_metrics": True, "max_new_tokens": MAX_NEW, "reward_model": "",
                "tasks": tasks[["example_id", "task", "split", "instruction", "response"]].to_dict("list")}
    (folder / "run.json").write_text(json.dumps(settings))
    return folder


# ------------------------------------------------------------------------------------------------ gradients
def gradient_manifest(model: Any, example_ids: list[str], targets: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The run manifest a gradient run writes into its table: example ids, every studied matrix with its shape."""
    from lg_pipeline.gradients.targets import find_targets

    modules = dict(model.named_modules())
    parameters = [
        {"parameter": t.parameter, "layer": t.layer, "module": t.module,
         "shape": list(modules[t.module_path].weight.shape)}
        for t in find_targets(model, targets)
    ]
    return {"kind": "gradient_stats", "example_ids": list(example_ids), "parameters": parameters,
            "targets": list(targets), "dtype": "float32", "device_type": "cpu", "encoding": "pair", **extra}


def add_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """`path` rewritten with `manifest` in its key-value metadata (rows unchanged)."""
    return write_parquet(pd.read_parquet(path), path, manifest=manifest)
