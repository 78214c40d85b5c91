"""A zero-shot run on a tiny model: losses are the engine's, orderings permute the same items, runs resume."""

from __future__ import annotations

import pandas as pd
import pytest

from lg_pipeline.dynamics.training import LoadedModel
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS, held_out_losses
from lg_pipeline.dynamics.zero_shot.orderings import ORDERINGS, SUBSET_ORDERINGS
from lg_pipeline.dynamics.zero_shot.run import ZeroShotSettings, run_zero_shot
from lg_pipeline.dynamics.zero_shot.tasks import build_split
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import encode
from lg_pipeline.gradients.engine import EngineConfig, compute_gradient_stats
from tests.helpers import faults
from tests.helpers.builders import make_model, make_tokenizer, text

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


TRAIN, TEST = ("add", "sort", "spell", "count"), ("ask", "tell")


def split(per_task: int = 3):
    return build_split(list(TRAIN), list(TEST), HandMadeTasks(), "none", per_task, 2)


def config(learning_rate=1e-3, **kw) -> ZeroShotSettings:
    fields = {"train_tasks": TRAIN, "test_tasks": TEST, "per_task": 3, "per_test_task": 2, "eval_every": 2,
              "embedder": "model", **kw}
    return ZeroShotSettings.build(train={"batch_size": 2, "learning_rate": learning_rate}, **fields)


def run(model, tokenizer, settings, out, **options):
    """The run on `model` itself (not a copy): it must end with the weights it was given."""
    load = lambda: LoadedModel(model, tokenizer)  # noqa: E731
    return run_zero_shot(settings, HandMadeTasks(), load, out, **{"report": lambda m: None, **options})


def test_held_out_loss_at_step_zero_is_the_engines_loss(tokenizer, single_thread, tmp_path):
    model = make_model("llama-gqa", seed=3)
    items = [e for _, e in split().test_items()]
    engine = {r.example_id: r.rows[0]["loss"] for r in compute_gradient_stats(model, tokenizer, items, EngineConfig())}
    encoded = [encode(tokenizer, e, False, 1024) for e in items]
    losses = held_out_losses(model, tokenizer, encoded, batch_size=3)
    assert losses == pytest.approx([engine[e.example_id] for e in items], rel=1e-5)
    result = run(model, tokenizer, config(orderings=("rt",)), tmp_path)
    table = pd.read_parquet(result.out / "zero_shot.parquet")
    step0 = table[(table.step == 0) & (table.task == ALL_TASKS)].loss.item()
    assert step0 == pytest.approx(sum(engine.values()) / len(engine), rel=1e-5)


def test_each_ordering_reports_its_steps_and_evals_as_they_happen_with_an_eta(tokenizer, single_thread, tmp_path):
    lines: list[str] = []
    run(make_model("llama-gqa", seed=3), tokenizer, config(orderings=("rt",)), tmp_path, report=lines.append)
    ordering = next(i for i, line in enumerate(lines) if line.startswith("ordering rt: training"))
    steps = [i for i, line in enumerate(lines) if line.startswith("rt step ")]
    evals = [i for i, line in enumerate(lines) if line.startswith("rt eval at step ")]
    # 12 items in batches of 2: 6 steps, evals at 0, 2, 4, 6, each before the line of the step it follows.
    assert [lines[i].split(",")[0] for i in steps] == [f"rt step {k}/6" for k in range(1, 7)]
    assert [lines[i].split(":")[0] for i in evals] == [f"rt eval at step {k}/6" for k in (0, 2, 4, 6)]
    assert ordering < evals[0] < steps[0] < evals[1] < steps[1] < steps[2] < evals[2]
    assert all(" elapsed, ETA " in lines[i] for i in steps) and lines[steps[-1]].endswith("ETA 0s")


def test_every_ordering_trains_a_permutation_of_the_same_items(tokenizer, single_thread, tmp_path):
    model = make_model("llama-gqa", seed=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run(model, tokenizer, config(orderings=ORDERINGS), tmp_path)
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())  # the model ends as given
    orders = pd.read_parquet(result.out / "orderings.parquet")
    tasks = pd.read_parquet(result.out / "tasks.parquet")
    train_ids = sorted(tasks[tasks.split == "train"].example_id)
    assert set(orders.ordering) == set(ORDERINGS)
    for name, frame in orders.groupby("ordering"):
        if name in SUBSET_ORDERINGS:  # fewer items, none twice
            assert set(frame.example_id) < set(train_ids) and frame.example_id.is_unique
            assert list(frame.position) == list(range(len(frame)))
        else:
            assert sorted(frame.example_id) == train_ids and list(frame.position) == list(range(len(train_ids)))
    losses = pd.read_parquet(result.out / "zero_shot.parquet")
    whole = losses[~losses.ordering.isin(SUBSET_ORDERINGS)]
    assert sorted(whole.step.unique()) == [0, 2, 4, 6]  # 12 items, batches of 2: 6 steps, eval every 2
    assert set(losses.task) == {"ask", "tell", ALL_TASKS}
    step0 = losses[losses.step == 0].groupby("ordering").loss.sum()
    assert step0.max() - step0.min() < 1e-6  # every ordering starts from the same weights
    subset = orders[orders.ordering == "tma_subset"]
    subset_last = losses[losses.ordering == "tma_subset"].step.max()
    assert subset_last == -(-len(subset) // 2)  # it trains only its items
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
    for name in ("rt", "round_robin", "cluster", "tma", "tma_far", "tma_random"):  # scored by each item's WSD
        other = orders[orders.ordering == name].set_index("example_id").score
        assert other.reindex(wsd.index).to_numpy() == pytest.approx(wsd.to_numpy())


def test_a_stopped_run_resumes_and_other_settings_are_refused(tokenizer, single_thread, tmp_path):
    model = make_model("llama-gqa", seed=5)
    refuse = {"on_change": "refuse"}
    run(model, tokenizer, config(orderings=("rt",)), tmp_path, **refuse)
    first = pd.read_parquet(tmp_path / "zero_shot.parquet")
    again = run(model, tokenizer, config(orderings=("rt", "round_robin")), tmp_path, **refuse)
    assert again.resumed == ["rt"] and again.orderings_done == ["rt", "round_robin"]
    both = pd.read_parquet(tmp_path / "zero_shot.parquet")
    pd.testing.assert_frame_equal(both[both.ordering == "rt"].reset_index(drop=True), first)
    with pytest.raises(InputError, match="other settings"):
        run(model, tokenizer, config(orderings=("rt",), learning_rate=1e-2), tmp_path, **refuse)


@pytest.mark.parametrize(
    "train,test,per_task,message",
    [
        (["add", "ask"], ["ask"], 3, "'ask' is in both train_tasks and test_tasks"),
        (["add", "nope"], ["ask"], 3, "unknown task 'nope'"),
        (["add"], ["ask"], 4, "task 'add' has 3 item"),
    ],
)
def test_bad_splits_are_one_line_naming_the_task(train, test, per_task, message):
    with pytest.raises(InputError, match=message):
        build_split(train, test, HandMadeTasks(), "none", per_task, 2)


def test_an_unknown_ordering_is_named():
    with pytest.raises(InputError, match="orderings: unknown ordering 'nearest'"):
        config(orderings=("rt", "nearest"))


def test_a_json_file_is_a_task(tmp_path):
    import json

    file = tmp_path / "mine.json"
    file.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(6)]))
    s = build_split(["add", f"mine={file}"], ["ask"], HandMadeTasks(), "none", 3, 2)
    mine = s.train[1]
    assert mine.name == "mine" and [e.example_id for e in mine.items] == ["mine/0", "mine/1", "mine/2"]
    assert all(e.instruction.startswith("q") for e in mine.items)


# --- faults: kill -9 at every write boundary, two writers, a full disk, other weights / dtype, NaN, fp16 ----------
SMALL = {"orderings": ("rt", "gradient"), "per_task": 1, "per_test_task": 1, "eval_every": 1}


def small(out, model=None, **options):
    model = model if model is not None else make_model("llama-gqa", seed=6)
    return run(model, make_tokenizer(), config(**SMALL), out, **options)


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    small(out)
    return faults.tables(out)


def test_every_table_says_where_it_came_from(tmp_path, single_thread, small_reference):
    from lg_pipeline.dynamics.zero_shot.run import ZERO_SHOT_FILES, ZERO_SHOT_VERSION, zero_shot_run
    from lg_pipeline.io.manifest import read_manifest

    small(tmp_path, provenance={"model": "tiny"})
    folder = zero_shot_run(tmp_path)
    for table in ZERO_SHOT_FILES.tables:
        manifest = read_manifest(folder.table(table))
        assert manifest["kind"] == f"zero_shot.{table}" and manifest["model"] == "tiny", table
        assert manifest["engine_version"] == ZERO_SHOT_VERSION and manifest["level"] == "none"
        assert manifest["settings"]["orderings"] == ["gradient", "rt"] and manifest["dtype"] == "float32"
    assert len(pd.read_parquet(folder.table("alignment"))) > 0


def test_kill_9_at_every_write_boundary_then_a_rerun_equals_an_uninterrupted_run(tmp_path, single_thread,
                                                                                 small_reference):
    out = tmp_path / "run"
    check = lambda: faults.assert_same_tables(faults.tables(out), small_reference)  # noqa: E731
    assert faults.kill_at_every_boundary(lambda: small(out), out, check, minimum=25) == []


@pytest.mark.parametrize("apart_s", [0.0, 1.0], ids=["together", "a second apart"])
def test_two_writers_one_refused_or_both_complete(tmp_path, single_thread, small_reference, apart_s):
    out = tmp_path / "run"
    codes = faults.two_writers(lambda wait: small(out, wait=wait), out, apart_s)
    assert codes in ([0, 0], [0, faults.REFUSED]), codes
    faults.assert_same_tables(faults.tables(out), small_reference)
    assert faults.leftovers(out) == []


def test_a_full_disk_is_one_line_and_a_rerun_completes_the_tables(tmp_path, single_thread, small_reference,
                                                                 monkeypatch):
    out = tmp_path / "run"
    check = lambda: faults.assert_same_tables(faults.tables(out), small_reference)  # noqa: E731
    # the alignment, an ordering's chunks and marker, the finished tables
    faults.full_disk_then_rerun(monkeypatch, lambda: small(out), out, (1, 2, 4, 7, 11, 15),
                                "finished orderings are kept", check)


@pytest.mark.parametrize("other", ["weights", "dtype"])
def test_other_weights_or_dtype_are_refused_or_computed_beside_never_mixed(tmp_path, single_thread, other):
    import torch

    out = tmp_path / "run"
    small(out)
    before = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    changed = make_model("llama-gqa", seed=7) if other == "weights" else make_model("llama-gqa", seed=6).to(
        torch.bfloat16
    )
    with pytest.raises(InputError, match=f"holds a run with other settings \\(.*{other}: "):
        small(out, model=changed, on_change="refuse")
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == before
    result = small(out, model=changed, on_change="beside")
    assert result.resumed == []
    fresh = tmp_path / "fresh"
    small(fresh, model=changed)
    faults.assert_same_tables(faults.tables(out), faults.tables(fresh))


def test_a_held_out_loss_that_is_not_finite_stops_the_run(tmp_path, single_thread):
    from lg_pipeline.errors import RunStopped

    with pytest.raises(RunStopped) as caught:
        run(make_model("llama-gqa", seed=6), make_tokenizer(), config(learning_rate=1e30, **SMALL), tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "step 1" in message and "not finite" in message
    assert "lower learning_rate (it is 1e+30)" in message
    assert not list(tmp_path.glob("*.parquet"))


def test_fp16_weights_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="dtype float16"):
        small(tmp_path / "run", model=make_model("llama-gqa").half())
    assert not (tmp_path / "run").exists()


def test_generation_metrics_sit_beside_the_loss_at_every_eval_step(tokenizer, single_thread, tmp_path):
    from lg_pipeline.dynamics.zero_shot import generation as gen
    from tests.dynamics.zero_shot.test_generation import tiny_reward_model

    model = make_model("llama-gqa", seed=8)
    tiny_reward_model(tmp_path / "reward", tokenizer)
    settings = config(orderings=("rt", "tma_far"), max_new_tokens=6, reward_model=str(tmp_path / "reward"))
    result = run(model, tokenizer, settings, tmp_path / "run")
    losses = pd.read_parquet(result.out / "zero_shot.parquet")
    metrics = pd.read_parquet(result.out / "generation_metrics.parquet")
    keys = ["ordering", "step", "task"]
    assert sorted(map(tuple, metrics[keys].to_numpy())) == sorted(map(tuple, losses[keys].to_numpy()))
    assert metrics[["rouge1", "rougeL", "exact_match"]].stack().between(0, 1).all()
    assert metrics.reward.notna().all()
    items = pd.read_parquet(result.out / "generations.parquet")
    assert (items.n_new_tokens <= 6).all() and len(items) == 4 * 2 * 4  # 4 test items, 2 orderings, 4 eval steps
    start = items[items.step == 0].pivot(index="example_id", columns="ordering", values="generation")
    assert (start.rt == start.tma_far).all()  # the same weights at step 0: the same answers
    # step 0 is the initial model's greedy answer, scored as defined
    test = [e for _, e in split().test_items()]
    prompts = [encode(tokenizer, e, False, 1024).input_ids for e in test]
    prompts = [p[: len(p) - len(tokenizer(e.response, add_special_tokens=False)["input_ids"])]
               for p, e in zip(prompts, test, strict=True)]
    answers = [tokenizer.decode(t, skip_special_tokens=True).strip()
               for t in gen.greedy_answers(model, tokenizer, prompts, 6)]
    first = items[(items.step == 0) & (items.ordering == "rt")].set_index("example_id")
    assert list(first.loc[[e.example_id for e in test]].generation) == answers
    for e, answer in zip(test, answers, strict=True):
        assert first.loc[e.example_id, "rougeL"] == pytest.approx(gen.rouge(answer, e.response)[1])


def test_generation_metrics_can_be_turned_off(tokenizer, single_thread, tmp_path):
    result = run(make_model("llama-gqa", seed=8), tokenizer, config(orderings=("rt",), generation_metrics=False),
                 tmp_path)
    assert len(pd.read_parquet(result.out / "generation_metrics.parquet")) == 0
    assert len(pd.read_parquet(result.out / "generations.parquet")) == 0
    assert len(pd.read_parquet(result.out / "zero_shot.parquet")) > 0


def test_a_reward_model_folder_that_is_not_there_is_named():
    with pytest.raises(InputError, match="reward_model: 'nowhere' is not a transformers model folder"):
        config(reward_model="nowhere")
