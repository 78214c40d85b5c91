"""A zero-shot run on a tiny model: losses are the engine's, orderings permute the same items, runs resume."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, held_out_losses
from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS
from lg_pipeline.dynamics.zero_shot.run import ZeroShotConfig, run_zero_shot
from lg_pipeline.dynamics.zero_shot.tasks import build_split
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import encode
from lg_pipeline.gradients.engine import EngineConfig, compute_gradient_stats
from tests.helpers.builders import make_model, text

pytestmark = pytest.mark.slow  # trains

class HandMadeTasks:
    """A TaskProvider of hand-made tasks: `<name>` has items whose text depends on the name."""

    TASKS = ("add", "sort", "spell", "count", "ask", "tell")

    def names(self) -> list[str]:
        return list(self.TASKS)

    def has(self, name: str) -> bool:
        return name in self.TASKS

    def draw(self, name: str, level: str | None, n: int, seed: int) -> list[Example]:
        base = sum(map(ord, name)) + seed
        items = [
            Example(f"{name}{i}", f"{name}: " + text(10 + i, base + i), text(6 + 2 * i, base + 7 * i)) for i in range(3)
        ]
        return items[:n]


def split(per_task: int = 3):
    return build_split(["add", "sort", "spell", "count"], ["ask", "tell"], HandMadeTasks(), "none", per_task, 2)


def config(**kw) -> ZeroShotConfig:
    return ZeroShotConfig(**{"eval_every": 2, "batch_size": 2, "embedder": "model", "learning_rate": 1e-3, **kw})


def test_held_out_loss_at_step_zero_is_the_engines_loss(tokenizer, single_thread, tmp_path):
    model = make_model("llama-gqa", seed=3)
    items = [e for _, e in split().test_items()]
    engine = {r.example_id: r.rows[0]["loss"] for r in compute_gradient_stats(model, tokenizer, items, EngineConfig())}
    encoded = [encode(tokenizer, e, False, 1024) for e in items]
    losses = held_out_losses(model, tokenizer, encoded, batch_size=3)
    assert losses == pytest.approx([engine[e.example_id] for e in items], rel=1e-5)
    result = run_zero_shot(model, tokenizer, split(), config(orderings=("rt",)), tmp_path, report=lambda m: None)
    table = pd.read_parquet(result.out / "zero_shot.parquet")
    step0 = table[(table.step == 0) & (table.task == ALL_TASKS)].loss.item()
    assert step0 == pytest.approx(sum(engine.values()) / len(engine), rel=1e-5)


def test_every_ordering_trains_a_permutation_of_the_same_items(tokenizer, single_thread, tmp_path):
    model = make_model("llama-gqa", seed=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_zero_shot(model, tokenizer, split(), config(orderings=ORDERINGS), tmp_path, report=lambda m: None)
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())  # the model ends as given
    orders = pd.read_parquet(result.out / "orderings.parquet")
    tasks = pd.read_parquet(result.out / "tasks.parquet")
    train_ids = sorted(tasks[tasks.split == "train"].example_id)
    assert set(orders.ordering) == set(ORDERINGS)
    for _, frame in orders.groupby("ordering"):
        assert sorted(frame.example_id) == train_ids and list(frame.position) == list(range(len(train_ids)))
    losses = pd.read_parquet(result.out / "zero_shot.parquet")
    assert sorted(losses.step.unique()) == [0, 2, 4, 6]  # 12 items, batches of 2: 6 steps, eval every 2
    assert set(losses.task) == {"ask", "tell", ALL_TASKS}
    step0 = losses[losses.step == 0].groupby("ordering").loss.sum()
    assert step0.max() - step0.min() < 1e-6  # every ordering starts from the same weights
    last = losses[(losses.step == 6) & (losses.task == ALL_TASKS)].set_index("ordering").loss
    assert (last < losses[(losses.step == 0) & (losses.task == ALL_TASKS)].loss.iloc[0]).all()  # it learns
    assert last.nunique() > 1  # and the order matters
    seen = pd.read_parquet(result.out / "seen_distance.parquet")
    assert seen[seen.step == 0][["min", "avg", "max", "centroid"]].isna().all().all()
    later = seen[seen.step > 0]
    assert ((later["min"] <= later["avg"]) & (later["avg"] <= later["max"])).all()
    align = pd.read_parquet(result.out / "alignment.parquet")
    assert set(align.module) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert sorted(align.example_id.unique()) == train_ids
    gradient = orders[orders.ordering == "gradient"]
    assert gradient.score.is_monotonic_decreasing
    wsd = orders[orders.ordering == "nft"].set_index("example_id").score
    for name in ("rt", "round_robin", "cluster", "tma"):  # scored by each item's WSD, like NFT
        other = orders[orders.ordering == name].set_index("example_id").score
        assert other.reindex(wsd.index).to_numpy() == pytest.approx(wsd.to_numpy())


def test_a_stopped_run_resumes_and_other_settings_are_refused(tokenizer, single_thread, tmp_path):
    model = make_model("llama-gqa", seed=5)
    quiet = {"report": lambda m: None}
    run_zero_shot(model, tokenizer, split(), config(orderings=("rt",)), tmp_path, **quiet)
    first = pd.read_parquet(tmp_path / "zero_shot.parquet")
    again = run_zero_shot(model, tokenizer, split(), config(orderings=("rt", "round_robin")), tmp_path, **quiet)
    assert again.resumed == ["rt"] and again.orderings_done == ["rt", "round_robin"]
    both = pd.read_parquet(tmp_path / "zero_shot.parquet")
    pd.testing.assert_frame_equal(both[both.ordering == "rt"].reset_index(drop=True), first)
    with pytest.raises(InputError, match="other settings"):
        run_zero_shot(model, tokenizer, split(), config(orderings=("rt",), learning_rate=1e-2), tmp_path, **quiet)


@pytest.mark.parametrize(
    "train,test,per_task,message",
    [
        (["add", "ask"], ["ask"], 3, "'ask' is in both --train-tasks and --test-tasks"),
        (["add", "nope"], ["ask"], 3, "unknown task 'nope'"),
        (["add"], ["ask"], 4, "task 'add' has 3 item"),
    ],
)
def test_bad_splits_are_one_line_naming_the_task(train, test, per_task, message):
    with pytest.raises(InputError, match=message):
        build_split(train, test, HandMadeTasks(), "none", per_task, 2)


def test_an_unknown_ordering_is_named():
    with pytest.raises(InputError, match="unknown ordering 'nearest'"):
        config(orderings=("rt", "nearest")).check()


def test_a_json_file_is_a_task(tmp_path):
    import json

    file = tmp_path / "mine.json"
    file.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(6)]))
    s = build_split(["add", f"mine={file}"], ["ask"], HandMadeTasks(), "none", 3, 2)
    mine = s.train[1]
    assert mine.name == "mine" and [e.example_id for e in mine.items] == ["mine/0", "mine/1", "mine/2"]
    assert all(e.instruction.startswith("q") for e in mine.items)
