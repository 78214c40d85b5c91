"""Zero-shot dynamics: held-out-task loss through one epoch of fine-tuning, per ordering of the same items.

`run_zero_shot(settings, tasks, load, out)` does every step, in this order, for the asset and the CLI alike: the
settings were checked on construction; the task split is drawn (bad task names, too few items fail here); the
output folder is checked and locked; only then is the model loaded (`load`), its dtype checked, and each ordering
trained. For each ordering the model starts from the same weights and trains one epoch with the same seed and
hyper-parameters through the shared training code (`lg_pipeline.dynamics.training.fine_tune`, TRL); the held-out
loss is measured at step 0 and every K steps.

Outputs in one run folder (`lg_pipeline.io.run_folder`, Parquet): `tasks`, `orderings`, `zero_shot`,
`generation_metrics` and `generations` (greedy answers scored at the same eval steps; empty when
`generation_metrics` is off), `metric_stability` (each metric's agreement across tasks, recomputed from those
tables whenever the run finishes), `seen_distance`, and `alignment` (per layer; empty unless the `gradient`
ordering is asked for). Each finished ordering is one committed part, so a run that stops resumes with the next
ordering; asking for more orderings later extends the same run. A run with another key (settings, split, weights,
dtype, device type) is refused (`on_change="refuse"`, the CLI) or computed beside the finished one and swapped in
when complete (`"beside"`, the asset): never mixed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lg_pipeline.dynamics.training import (
    HoldsTrainSettings,
    LoadedModel,
    ModelLoader,
    TrainSettings,
    fine_tune,
    refuse_float16,
)
from lg_pipeline.dynamics.zero_shot.alignment import ALIGNMENT_COLUMNS, AlignmentConfig, alignments, total_alignment
from lg_pipeline.dynamics.zero_shot.embeddings import EMBEDDERS, make_embedder
from lg_pipeline.dynamics.zero_shot.generation import (
    GENERATION_COLUMNS,
    GENERATIONS_COLUMNS,
    GenerationMetricsCallback,
    RewardScorer,
)
from lg_pipeline.dynamics.zero_shot.held_out import LOSS_COLUMNS, HeldOutLossCallback, eval_steps
from lg_pipeline.dynamics.zero_shot.orderings import EMBEDDING_ORDERINGS, ORDERINGS, distances, make_ordering, wsd
from lg_pipeline.dynamics.zero_shot.seen_distance import SEEN_COLUMNS, seen_distance_rows
from lg_pipeline.dynamics.zero_shot.stability import STABILITY_COLUMNS, stability_table
from lg_pipeline.dynamics.zero_shot.tasks import TaskProvider, TaskSplit, build_split, split_frame, split_problems
from lg_pipeline.errors import SettingsError, int_at_least, one_of, raise_problems, setting
from lg_pipeline.example import stable_id
from lg_pipeline.gradients.encoding import Encoded, encode
from lg_pipeline.gradients.runner import examples_hash, model_identity
from lg_pipeline.io.locks import output_lock
from lg_pipeline.io.run_folder import OnChange, RunFiles, RunFolder, RunWriter, TableSpec
from lg_pipeline.vocabulary import ATTENTION

ORDERING_COLUMNS = ("ordering", "position", "example_id", "task", "score")
TASK_COLUMNS = ("example_id", "task", "split", "instruction", "response")
# Bump when the numbers a run produces could change (2: orderings without a score of their own carry the WSD;
# 3: `cluster` keeps the given task order, generation metrics).
ZERO_SHOT_VERSION = "zero-shot-3"
OPTIMIZERS = ("adamw", "sgd")
ALIGNMENT = "alignment"  # the part holding the gradient ordering's alignments (computed once per run)
STABILITY = "metric_stability"  # derived from the loss and generation tables when the run finishes
ZERO_SHOT_FILES = RunFiles(
    kind="zero_shot",
    tables={
        "tasks": TableSpec(("example_id",), TASK_COLUMNS, order=()),
        "orderings": TableSpec(("ordering", "position"), ORDERING_COLUMNS),
        "zero_shot": TableSpec(("ordering", "step", "task"), LOSS_COLUMNS, order=("ordering",)),
        "generation_metrics": TableSpec(("ordering", "step", "task"), GENERATION_COLUMNS, order=("ordering",)),
        "generations": TableSpec(("ordering", "step", "example_id"), GENERATIONS_COLUMNS, order=("ordering",)),
        "seen_distance": TableSpec(("ordering", "step", "test_task"), SEEN_COLUMNS, order=("ordering",)),
        ALIGNMENT: TableSpec(("example_id", "parameter"), ALIGNMENT_COLUMNS, order=()),
        STABILITY: TableSpec(("metric", "step"), STABILITY_COLUMNS, order=()),
    },
    others=("zero_shot.png", "seen_distance.png", "zero_shot.pdf", "seen_distance.pdf", "metrics.png",
            "metrics.pdf"),  # the CLI's figures
)


def zero_shot_run(out: str | Path) -> RunFolder:
    """The run folder at `out`: where each of its files is (`.table(name)`, `.settings_file`)."""
    return ZERO_SHOT_FILES.at(out)


def _one_epoch() -> TrainSettings:
    """The paper's training: AdamW at 1e-5, one epoch, batches of 4, every weight."""
    return TrainSettings(learning_rate=1e-5, optimizer="adamw", steps=None, epochs=1.0, batch_size=4, trainable="all")


@dataclass(frozen=True)
class ZeroShotSettings(HoldsTrainSettings):
    """Everything a zero-shot run is asked for: the split (tasks, level, items per task), the orderings, how each
    trains (`train`; its `epochs` per ordering, `steps` unset) and is measured. Items are drawn with `train.seed`.

    `generation_metrics`: greedy answers of the held-out items (at most `max_new_tokens` new tokens) scored at each
    eval step; `reward_model`: a local sequence-classification folder scoring them ("" = none); `subset_k`: the
    nearest training items per test item that `tma_subset` keeps."""

    train_tasks: tuple[str, ...]
    test_tasks: tuple[str, ...]
    train: TrainSettings = field(default_factory=_one_epoch)
    level: str = "none"
    per_task: int = 5
    per_test_task: int = 4
    orderings: tuple[str, ...] = ("rt", "nft", "fft")
    eval_every: int = 4
    embedder: str = "minilm"
    targets: tuple[str, ...] = ATTENTION  # the studied matrices the gradient ordering sums over
    cache_dir: str = ".cache"  # where the MiniLM weights are unpacked (changes no number)
    generation_metrics: bool = True
    max_new_tokens: int = 16
    reward_model: str = ""
    subset_k: int = 2

    def __post_init__(self) -> None:
        for name in ("train_tasks", "test_tasks", "orderings", "targets"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        unknown = [o for o in self.orderings if o not in ORDERINGS]
        train = self.train
        known = ", ".join(ORDERINGS)
        sft = getattr(train, "objective", "sft") == "sft"
        raise_problems([
            None if isinstance(train, TrainSettings) else "{train}: must be a TrainSettings",
            *split_problems(self.train_tasks, self.test_tasks, self.level, self.per_task, self.per_test_task),
            setting("orderings", "no ordering given") if not self.orderings else None,
            setting("orderings", f"unknown ordering {unknown[0]!r} (known: {known})") if unknown else None,
            int_at_least("eval_every", self.eval_every, 1),
            one_of("embedder", self.embedder, EMBEDDERS),
            None if isinstance(self.generation_metrics, bool) else setting("generation_metrics", "true or false"),
            int_at_least("max_new_tokens", self.max_new_tokens, 1),
            int_at_least("subset_k", self.subset_k, 1),
            _reward_problem(self.reward_model),
            setting("targets", "no module suffix given") if not self.targets else None,
            one_of("optimizer", getattr(train, "optimizer", None), OPTIMIZERS),
            None if sft else setting("objective", "zero-shot runs train with sft"),
        ])

    @classmethod
    def train_defaults(cls) -> dict[str, Any]:
        return asdict(_one_epoch())

    def steps(self, n_items: int) -> int:
        """Optimizer steps of one ordering: `train.steps`, else `train.epochs` passes over the items."""
        return self.train.total_steps(n_items)


def _reward_problem(folder: object) -> str | None:
    if not isinstance(folder, str):
        return setting("reward_model", "must be a folder name or empty")
    if folder and not Path(folder, "config.json").is_file():
        return setting("reward_model", f"{folder!r} is not a transformers model folder (no config.json)")
    return None


@dataclass
class ZeroShotResult:
    out: Path
    orderings_done: list[str]
    resumed: list[str]
    seconds: dict[str, float]  # embedding, alignment, training per ordering, and the generation metrics within it


def draw_split(settings: ZeroShotSettings, tasks: TaskProvider | None) -> TaskSplit:
    """The settings' task split, drawn from `tasks` (or the settings' `name=FILE.json` tasks)."""
    return build_split(settings.train_tasks, settings.test_tasks, tasks, settings.level, settings.per_task,
                       settings.per_test_task, settings.train.seed)


def run_zero_shot(
    settings: ZeroShotSettings,
    tasks: TaskProvider | None,
    load: ModelLoader,
    out: str | Path,
    *,
    wait: bool = True,
    report: Callable[[str], None] = print,
    on_change: OnChange = "beside",
    provenance: Mapping[str, Any] | None = None,
) -> ZeroShotResult:
    """Train and measure every ordering not finished yet in `out`, then write the tables; the model ends as given.

    `wait`: wait for another writer of `out` (a Dagster run) instead of failing at once (the CLI). `on_change`: a
    finished run with other settings in `out` is replaced once this one is complete (`beside`) or refused.
    """
    split = draw_split(settings, tasks)
    folder = zero_shot_run(out)
    folder.check_target()
    with output_lock(folder.location, wait=wait, report=report):  # before the weights load: a second run waits
        loaded = load()
        refuse_float16(loaded.model)
        run = _ZeroShotRun(settings, split, loaded, folder, report, dict(provenance or {}))
        kept = lambda: f"{len(run.finished)} finished orderings are kept"  # noqa: E731
        with folder.writing(run.fields(), wait=wait, report=report, on_change=on_change, kept=kept) as writer:
            return run.execute(writer)


def _encode(tokenizer: Any, items: Sequence[tuple[str, Any]], train: TrainSettings) -> list[Encoded]:
    """Every item must keep a response token: a skipped training item would shift what each step has seen."""
    out, lost = [], []
    for _, e in items:
        enc = encode(tokenizer, e, bool(train.chat), train.max_length)
        if enc is None:
            lost.append(e.example_id)
        out.append(enc)
    if lost:
        raise SettingsError([setting("max_length", f"{train.max_length} leaves no response token of item {lost[0]!r}"
                                                   f" ({len(lost)} of {len(items)} items)")])
    return out


def run_fields(settings: ZeroShotSettings, split: TaskSplit) -> dict[str, Any]:
    """The run key's fields that need no model (`train.chat` resolved); `orderings` left out (asking for more later
    extends the same run). The weights' identity is added once they are loaded."""
    return {
        "version": ZERO_SHOT_VERSION,
        **asdict(settings.train),
        "eval_every": settings.eval_every,
        "embedder": settings.embedder,
        "targets": list(settings.targets),
        "generation_metrics": settings.generation_metrics,
        "max_new_tokens": settings.max_new_tokens,
        "reward_model": settings.reward_model,
        "subset_k": settings.subset_k,
        "level": split.level,
        "tasks": split_frame(split)[list(TASK_COLUMNS)].to_dict("list"),
    }


def nothing_to_do(
    settings: ZeroShotSettings,
    tasks: TaskProvider | None,
    out: str | Path,
    *,
    chat: bool,
    dtype: str,
    device_type: str,
    provenance: Mapping[str, Any],
) -> str | None:
    """Why `run_zero_shot` into `out` would train and change nothing (every ordering asked for finished under the
    same key), told before any model loads; None when it may have work, or that cannot be told.

    The model file's identity the finished run recorded in its manifest (`provenance["weights_file"]`) stands in
    for the loaded weights' fingerprint in the run key. Without one, nothing is skipped.
    """
    import pandas as pd

    if not provenance.get("weights_file"):
        return None
    resolved = replace(settings, train=replace(settings.train, chat=chat if settings.train.chat is None
                                               else settings.train.chat))
    folder = zero_shot_run(out)
    fields = {**run_fields(resolved, draw_split(settings, tasks)), "dtype": dtype, "device_type": device_type}
    key = folder.finished_with(fields, provenance)
    if key is None:
        return None
    try:
        done = set(pd.read_parquet(folder.table("orderings"), columns=["ordering"]).ordering)
    except Exception:  # unreadable: the run recomputes it
        return None
    if not set(settings.orderings) <= done:
        return None
    return (f"{folder.location}: ordering(s) {', '.join(settings.orderings)} finished under run key {key} (same "
            "settings, split and weights file): nothing to train")


class _ZeroShotRun:
    """One call of `run_zero_shot` with its model loaded: items, embeddings, initial weights, the folder's writer."""

    def __init__(self, settings: ZeroShotSettings, split: TaskSplit, loaded: LoadedModel, folder: RunFolder, report,
                 provenance: dict[str, Any]):
        chat = loaded.chat if settings.train.chat is None else settings.train.chat
        self.settings = replace(settings, train=replace(settings.train, chat=chat))
        self.split, self.loaded, self.folder, self.report, self.provenance = split, loaded, folder, report, provenance
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.train = split.train_items()
        self.test = split.test_items()
        self.train_tasks = [t for t, _ in self.train]
        self.test_tasks = [t for t, _ in self.test]
        self.train_enc = _encode(self.tokenizer, self.train, self.settings.train)
        self.test_enc = _encode(self.tokenizer, self.test, self.settings.train)
        self.seconds: dict[str, float] = {}
        self.finished: list[str] = []
        self._emb: tuple[np.ndarray, np.ndarray] | None = None
        self._align: np.ndarray | None = None
        self.initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._reward: RewardScorer | None = None

    def fields(self) -> dict[str, Any]:
        """Everything that changes a number; `orderings` left out (asking for more later extends the same run)."""
        return {**run_fields(self.settings, self.split), **model_identity(self.model)}

    def execute(self, writer: RunWriter) -> ZeroShotResult:
        finished = writer.finished()
        done = set() if finished is None else set(finished["zero_shot"].ordering)
        done |= writer.done_parts() - {ALIGNMENT}
        resumed = [o for o in self.settings.orderings if o in done]
        self.finished = sorted(done)
        todo = [o for o in self.settings.orderings if o not in done]
        if finished is not None and not todo and not writer.commits():
            writer.discard_staging()
            return ZeroShotResult(self.folder.location, list(self.settings.orderings), resumed, self.seconds)
        for name in todo:
            self.report(f"ordering {name}: training {len(self.train)} items, {len(self.test)} held-out items")
            writer.commit(name, self.run_ordering(name, writer))
            self.finished.append(name)
        self._finish(writer)
        return ZeroShotResult(self.folder.location, list(self.settings.orderings), resumed, self.seconds)

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) embeddings at the initial weights, computed once."""
        if self._emb is None:
            started = time.monotonic()
            embed = make_embedder(self.settings.embedder, self.settings.cache_dir, self.model, self.tokenizer)
            self._emb = (embed([e for _, e in self.train]), embed([e for _, e in self.test]))
            self.seconds["embedding"] = time.monotonic() - started
        return self._emb

    def alignment(self, writer: RunWriter) -> np.ndarray:
        """Σ over the studied matrices of ⟨∇L_u, ∇L_test⟩ at step 0; the per-layer table is committed once."""
        if self._align is None:
            frame = writer.table(ALIGNMENT)
            if not len(frame):
                started = time.monotonic()
                train = self.settings.train
                cfg = AlignmentConfig(self.settings.targets, train.batch_size, train.max_length, bool(train.chat))
                frame = alignments(self.model, self.tokenizer, [e for _, e in self.train], [e for _, e in self.test],
                                   cfg)
                self.seconds["alignment"] = time.monotonic() - started
                writer.commit(ALIGNMENT, {ALIGNMENT: frame})
            self._align = total_alignment(frame, [e.example_id for _, e in self.train])
        return self._align

    def ordering(self, name: str, writer: RunWriter) -> tuple[np.ndarray, np.ndarray]:
        """(order, score); orderings without a score of their own (rt, round_robin, cluster) get each item's WSD,
        so the WSD profile of every ordering can be compared."""
        needs_embeddings = name in EMBEDDING_ORDERINGS
        train_emb, test_emb = self.embeddings() if needs_embeddings else (None, None)
        order, score = make_ordering(name, self.train_tasks, self.settings.train.seed, train_emb, test_emb,
                                     lambda: self.alignment(writer), self.settings.subset_k)
        if np.isnan(score).all():
            score = wsd(distances(*self.embeddings()))[order]
        return order, score

    def run_ordering(self, name: str, writer: RunWriter) -> dict[str, Any]:
        """Train one ordering from the initial weights; its three tables (the model ends at the initial weights)."""
        import pandas as pd

        order, score = self.ordering(name, writer)
        ordered = [self.train[i][1] for i in order]
        settings = self.settings
        steps = settings.steps(len(ordered))
        train = replace(settings.train, steps=steps, epochs=None)
        callback = HeldOutLossCallback(self.model, self.tokenizer, self.test_enc, self.test_tasks,
                                       settings.eval_every, name, train.batch_size, self.report)
        generation = self.generation_callback(name)
        self.model.load_state_dict(self.initial)
        started = time.monotonic()
        try:
            fine_tune(self.model, self.tokenizer, ordered, train, callbacks=[callback, *filter(None, [generation])])
        finally:
            self.model.load_state_dict(self.initial)
        self.seconds[f"train:{name}"] = time.monotonic() - started
        if generation is not None:
            self.seconds[f"generation:{name}"] = generation.seconds  # part of train:{name}
        train_emb, test_emb = self.embeddings()
        seen = seen_distance_rows(name, order, eval_steps(steps, settings.eval_every), train.batch_size, train_emb,
                                  test_emb, self.test_tasks)
        rows = [
            {"ordering": name, "position": k, "example_id": self.train[i][1].example_id,
             "task": self.train[i][0], "score": float(score[k])}
            for k, i in enumerate(order)
        ]
        return {
            "orderings": pd.DataFrame(rows, columns=list(ORDERING_COLUMNS)),
            "seen_distance": pd.DataFrame(seen, columns=list(SEEN_COLUMNS)),
            "zero_shot": pd.DataFrame(callback.rows, columns=list(LOSS_COLUMNS)),
            "generation_metrics": pd.DataFrame(generation.rows if generation else [], columns=list(GENERATION_COLUMNS)),
            "generations": pd.DataFrame(generation.item_rows if generation else [], columns=list(GENERATIONS_COLUMNS)),
        }

    def generation_callback(self, name: str) -> GenerationMetricsCallback | None:
        """The greedy answers' scores at the loss's eval steps (None when `generation_metrics` is off)."""
        settings = self.settings
        if not settings.generation_metrics:
            return None
        if settings.reward_model and self._reward is None:
            self._reward = RewardScorer(settings.reward_model, next(self.model.parameters()).device,
                                        next(self.model.parameters()).dtype)
        return GenerationMetricsCallback(self.model, self.tokenizer, self.test_enc, [e for _, e in self.test],
                                         self.test_tasks, settings.eval_every, name, settings.max_new_tokens,
                                         reward=self._reward, report=self.report)

    def _finish(self, writer: RunWriter) -> None:
        tables = {name: writer.table(name) for name in ZERO_SHOT_FILES.tables if name not in ("tasks", STABILITY)}
        tables["tasks"] = writer.table("tasks", split_frame(self.split))
        tables[STABILITY] = stability_table(tables["zero_shot"], tables["generation_metrics"])
        writer.finish(tables, self._manifest(writer))

    def _manifest(self, writer: RunWriter) -> dict[str, Any]:
        identity = writer.fields
        items = [e for _, e in self.train] + [e for _, e in self.test]
        return {
            "model": self.loaded.name or identity["model"],
            "model_source": self.loaded.source or None,
            "data_hash": examples_hash(items),
            "n_examples": len(items),
            "level": self.split.level,
            **self.provenance,
            "weights_fingerprint": identity["weights"],
            "targets": list(self.settings.targets),
            "encoding": "pair",
            "dtype": identity["dtype"],
            "device_type": identity["device_type"],
            "engine_version": ZERO_SHOT_VERSION,
            "example_ids": [e.example_id for _, e in self.train],
            "settings": {**asdict(self.settings), "orderings": sorted(self.finished)},
        }


def comparable_runs_key(out: str | Path) -> str:
    """Runs with equal keys differ only in ordering and training level: same tasks, test items, hyper-parameters,
    weights."""
    settings = zero_shot_run(out).read_settings() or {}
    tasks = settings.get("tasks") or {"example_id": [], "split": [], "response": []}
    rows = list(zip(tasks["example_id"], tasks["split"], tasks["response"], strict=True))
    test = [(i, r) for i, s, r in rows if s == "test"]
    train = [i for i, s, _ in rows if s == "train"]
    fixed = {k: v for k, v in settings.items() if k not in ("run_key", "tasks", "level", "cache_dir")}
    return stable_id(json.dumps([fixed, train, test], sort_keys=True, default=str))
