"""A learning-dynamics run: fine-tune with `DynamicsCallback` into a resumable run folder, one entry point.

`run_learning_dynamics(settings, data, load, out)` does every step, in this order, for the asset and the CLI
alike: the settings were checked on construction; the companion sets are matched to the rows, the probes drawn
and the trained rows chosen (`plan_run`); the output folder is checked and locked; only then is the model loaded
(`load`), its dtype checked, and the run trained and measured.

The folder (`lg_pipeline.io.run_folder`) holds one table per measurement (`TABLES`), `probes`, `summary.json`
and `run.json`. Each eval step is one committed part (every table of the step, then its marker); the train log is
one more part when training ends. A rerun with the same run key replays the training steps (same data order, seed
and optimizer: the same weights) and measures only the eval steps not committed yet; a rerun of a finished run
trains nothing. A run key that changed (settings, weights, dtype, device type, data) computes beside the finished
tables and replaces them when it is complete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lg_pipeline.dynamics.learning.callback import TABLES, DynamicsCallback, is_eval_step
from lg_pipeline.dynamics.learning.influence import r_squared
from lg_pipeline.dynamics.learning.measure import greedy_responses
from lg_pipeline.dynamics.learning.probe_file import merged
from lg_pipeline.dynamics.learning.probes import (
    GREEDY,
    PROBE_COLUMNS,
    Probe,
    build_probes,
    matched,
    missing_instructions,
    rows_to_train,
    with_greedy,
)
from lg_pipeline.dynamics.learning.rejected import REJECTED_SOURCES, same_prompt_rejected
from lg_pipeline.dynamics.learning.rephrase import rephrase_line, rephrase_probes
from lg_pipeline.dynamics.learning.truncation import cut_probes_line, probe_cuts, refuse_cut_probes
from lg_pipeline.dynamics.training import (
    HoldsTrainSettings,
    LoadedModel,
    ModelLoader,
    TrainSettings,
    fine_tune,
    refuse_float16,
    trainable_parameters,
)
from lg_pipeline.errors import InputError, SettingsError, int_at_least, one_of, raise_problems
from lg_pipeline.example import Example
from lg_pipeline.gradients.runner import examples_hash, model_identity
from lg_pipeline.io.locks import output_lock
from lg_pipeline.io.run_folder import SETTINGS_FILE, RunFiles, RunFolder, RunWriter, TableSpec
from lg_pipeline.io.run_folder import SUMMARY_FILE as LEARNING_SUMMARY_FILE

# Bump when the numbers a run produces could change.
LEARNING_DYNAMICS_VERSION = "dynamics-1"
# Rows that identify one value of each table (a replayed step overwrites, never duplicates).
KEYS: dict[str, tuple[str, ...]] = {
    "logprobs": ("step", "probe_id"),
    "influence": ("step", "probe_id", "parameter"),
    "influence_summary": ("step", "probe_id"),
    "kernel": ("step", "probe_id", "example_id", "layer", "module"),
    "train_log": ("step",),
    "train_gradient_stats": ("step", "example_id", "parameter"),
    "train_residuals": ("step", "example_id", "term"),
    "greedy_now": ("step", "prompt_id"),
}
TRAIN_LOG = "train_log"
FIGURES_DIR = "figures"  # the CLI draws a run's figures here (`run_figures`)
RUN_FILE = SETTINGS_FILE  # for readers that name it (the names inside a run folder live in io.run_folder)
SUMMARY_FILE = LEARNING_SUMMARY_FILE  # as above (the asset's checks find a partition's newest run by it)
LEARNING_FILES = RunFiles(
    kind="dynamics",
    tables={
        **{t: TableSpec(KEYS[t], KEYS[t]) for t in TABLES},
        "probes": TableSpec(("probe_id",), (*PROBE_COLUMNS, "cut_tokens"), order=()),
    },
    others=("check.json", FIGURES_DIR),  # the completeness check's verdict (assets.gates); the CLI's figures
)


def learning_run(out: str | Path) -> RunFolder:
    """The run folder at `out`: where each of its files is (`.table(name)`, `.settings_file`, `.summary_file`)."""
    return LEARNING_FILES.at(out)


@dataclass(frozen=True)
class LearningDynamicsSettings(HoldsTrainSettings):
    """Everything a learning-dynamics run is asked for: how it trains, how often it measures, how many probes.
    The probes are drawn with `train.seed`. `rejected`: where DPO's rejected responses (and the `wrong` probe) come
    from: `same_prompt` (the row's response with its final answer changed, `rejected.py`), `shuffled` (the wrong
    set: other questions' answers), or `auto` (same_prompt for math, or when the family is unknown and every row
    states a numeric final answer or is a number; shuffled otherwise). `allow_probe_truncation`: measure probes
    cut at `max_length` instead of refusing them."""

    train: TrainSettings = field(default_factory=TrainSettings)
    eval_every: int = 5
    n_probes: int = 6
    # Tokens of the `greedy` probes' responses (decoded at step 0 and again at every eval step); 0: no greedy probe.
    greedy_max_new_tokens: int = 16
    rejected: str = "auto"
    allow_probe_truncation: bool = False

    def __post_init__(self) -> None:
        raise_problems([
            None if isinstance(self.train, TrainSettings) else "{train}: must be a TrainSettings",
            int_at_least("eval_every", self.eval_every, 1),
            int_at_least("n_probes", self.n_probes, 1),
            int_at_least("greedy_max_new_tokens", self.greedy_max_new_tokens, 0),
            one_of("rejected", self.rejected, REJECTED_SOURCES),
            None if isinstance(self.allow_probe_truncation, bool) else "{allow_probe_truncation}: must be a bool",
        ])


@dataclass(frozen=True)
class TrainingData:
    """The rows a run trains on, and its companion sets: the same prompts' responses at other CoT levels
    (`other_levels`, by level) and a wrong-answer set (`wrong`). Companions are matched to the rows by instruction,
    in any order (`probes.matched`); a set missing one of the rows' instructions is left out, and the run says so.
    `labels` name the sets in messages (by level, and `wrong`): the CLI's flags, or the asset's variants.
    `family`: the dataset's family when known (`math` makes same-prompt rejected responses the default).
    `own_probes`: probes given by the user (`probe_file.load_probe_file`), followed beside the run's own.
    `teacher`: a curation teacher that writes the rephrase probes (`rephrase.py`); None: they are left out."""

    rows: Sequence[Example]
    other_levels: Mapping[str, Sequence[Example]] = field(default_factory=dict)
    wrong: Sequence[Example] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    family: str | None = None
    own_probes: Sequence[Probe] = ()
    teacher: Any = None

    def label(self, name: str) -> str:
        return self.labels.get(name, "the wrong-answer set" if name == "wrong" else f"the {name} CoT set")


@dataclass(frozen=True)
class DynamicsPlan:
    """What a run will do, decided before any model is loaded."""

    train: list[Example]  # the rows trained on (the rest are only the held-out probes' prompts)
    steps: int  # optimizer steps (`TrainSettings.total_steps` over the trained rows)
    probes: list[Probe]
    rejected: list[Example] | None  # DPO: the wrong-answer responses of the trained rows
    companions: dict[str, str]  # set -> "matched" or why it was left out


@dataclass(frozen=True)
class DynamicsSummary:
    """What a run measured: R² of predicted vs measured over every (eval step, probe), and per step."""

    steps: int
    eval_steps: list[int]
    n_probes: int
    r2: float
    r2_by_step: dict[str, float]
    resumed_steps: list[int]
    skipped_examples: dict[str, str]
    skipped_probes: dict[str, str]
    companions: dict[str, str] = field(default_factory=dict)


def plan_run(
    settings: LearningDynamicsSettings, data: TrainingData, report: Callable[[str], None] = print
) -> DynamicsPlan:
    """Companions matched, probes drawn, trained rows chosen: every input checked, no model needed."""
    rows = list(data.rows)
    if not rows:
        raise InputError(f"{data.labels.get('rows', 'the training data')}: no rows to train on")
    train = settings.train
    # `steps` reach steps × batch_size rows; `epochs` pass over every row but the held-out probes' prompts.
    n_trained = rows_to_train(len(rows), settings.n_probes, train.steps or len(rows), train.batch_size)
    companions, levels = {}, {}
    for level, other in data.other_levels.items():
        levels[level] = _companion(data, rows, level, other, companions, report)
    wrong = _rejected(settings, data, rows, companions, report)
    if train.objective == "dpo" and wrong is None:
        label = data.label("wrong").replace("{", "{{").replace("}", "}}")
        why = companions.get("wrong", "none given").replace("{", "{{").replace("}", "}}")
        raise SettingsError([
            "{objective} dpo needs " + label + ": the rejected responses of the same rows (" + why + "), or "
            "{rejected} same_prompt (every row's final answer a number)"
        ])
    probes = build_probes(rows, settings.n_probes, n_trained, train.seed,
                          {k: v for k, v in levels.items() if v is not None}, wrong)
    skipped = rephrase_line(data.teacher)
    if skipped:
        report(skipped)
    rephrases = rephrase_probes(probes, data.teacher) if skipped is None else []
    probes = merged(merged(probes, rephrases), data.own_probes)
    rejected = wrong[:n_trained] if train.objective == "dpo" and wrong is not None else None
    return DynamicsPlan(rows[:n_trained], train.total_steps(n_trained), probes, rejected, companions)


def _rejected(settings, data, rows, companions, report) -> list[Example] | None:
    """The rejected responses of the rows (DPO's y⁻, the `wrong` probe) by `settings.rejected`; None when there are
    none. `companions["wrong"]` says which were used, or why none."""
    source = settings.rejected
    if source in ("auto", "same_prompt") and (source == "same_prompt" or data.family in (None, "math")):
        found, missing = same_prompt_rejected(rows, marked_only=source == "auto" and data.family is None)
        if found is not None:
            companions["wrong"] = "same_prompt: each row's response with its final answer changed"
            return found
        if source == "same_prompt":
            companions["wrong"] = f"left out: {missing} of {len(rows)} rows have no number in their final answer"
            report(f"same-prompt rejected responses: {companions['wrong']}")
            return None
    return _companion(data, rows, "wrong", data.wrong, companions, report) if data.wrong is not None else None


def _companion(data, rows, name, other, companions, report) -> list[Example] | None:
    found = matched(rows, other)
    if found is None:
        missing = missing_instructions(rows, other)
        companions[name] = f"left out: {missing} of {len(rows)} training instructions not in it"
        report(f"{data.label(name)}: {missing} of {len(rows)} training instructions not found; left out")
    else:
        companions[name] = "matched"
    return found


def run_learning_dynamics(
    settings: LearningDynamicsSettings,
    data: TrainingData,
    load: ModelLoader,
    out: str | Path,
    *,
    wait: bool = True,
    report: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> DynamicsSummary:
    """Train and measure into `out` (resuming a stopped run there); returns the R² summary.

    `wait`: wait for another writer of `out` (a Dagster run) instead of failing at once (the CLI). `provenance`:
    what the caller knows of where the data came from (`data_file`, `data_hash`, `dataset`, `level`, ...), for the
    tables' run manifest. The model is trained in place: `load` should hand over a model the caller may change.
    """
    plan = plan_run(settings, data, report)
    folder = learning_run(out)
    folder.check_target()
    with output_lock(folder.location, wait=wait, report=report):  # before the weights load: a second run waits
        loaded = load()
        refuse_float16(loaded.model)
        run = _LearningRun(settings, plan, loaded, folder, report, progress, dict(provenance or {}))
        kept = lambda: f"{len(run.committed_steps)} finished eval steps are kept"  # noqa: E731
        with folder.writing(run.fields(), wait=wait, report=report, kept=kept) as writer:
            return run.execute(writer)


def run_fields(settings: LearningDynamicsSettings, plan: DynamicsPlan) -> dict[str, Any]:
    """The run key's fields that need no model: the settings (`chat` resolved), the rows, probes and rejected
    responses (the weights' identity is added once they are loaded)."""
    return {
        "version": LEARNING_DYNAMICS_VERSION,
        "config": asdict(settings.train),
        "eval_every": settings.eval_every,
        "n_probes": settings.n_probes,
        "greedy_max_new_tokens": settings.greedy_max_new_tokens,
        # The greedy probes follow from the weights and greedy_max_new_tokens, both named here.
        "probes": [p.probe_id for p in plan.probes if p.probe_type != GREEDY],
        "rows": examples_hash(plan.train),
        "rejected": examples_hash(plan.rejected) if plan.rejected is not None else None,
    }


def nothing_to_do(
    settings: LearningDynamicsSettings,
    data: TrainingData,
    out: str | Path,
    *,
    chat: bool,
    dtype: str,
    device_type: str,
    provenance: Mapping[str, Any],
) -> str | None:
    """Why `run_learning_dynamics` into `out` would train and change nothing, told before any model loads (`chat`:
    the model's own choice, for `train.chat` None); None when it may have work, or that cannot be told.

    The run key holds a fingerprint of the loaded weights: the model file's identity the finished run recorded in
    its manifest (`provenance["weights_file"]`) stands in for it. Without one, nothing is skipped.
    """
    if not provenance.get("weights_file"):
        return None
    resolved = replace(settings, train=replace(settings.train, chat=chat if settings.train.chat is None
                                               else settings.train.chat))
    folder = learning_run(out)
    fields = {**run_fields(resolved, plan_run(settings, data, lambda _: None)), "dtype": dtype,
              "device_type": device_type}
    key = folder.finished_with(fields, provenance)
    if key is None or not folder.summary_file.is_file():
        return None
    return f"{folder.location}: finished under run key {key} (same settings, data and weights file): nothing to train"


class _LearningRun:
    """One call of `run_learning_dynamics` with its model loaded, holding the folder's lock."""

    def __init__(self, settings, plan, loaded: LoadedModel, folder, report, progress, provenance):
        chat = loaded.chat if settings.train.chat is None else settings.train.chat
        self.settings = replace(settings, train=replace(settings.train, chat=chat))
        self.plan, self.loaded, self.folder = plan, loaded, folder
        self.report, self.progress, self.provenance = report, progress, provenance
        self.parameters = trainable_parameters(loaded.model, self.settings.train.trainable)  # fails before writing
        self.plan = replace(plan, probes=self._with_greedy(plan.probes))
        train = self.settings.train
        self.cuts = probe_cuts(loaded.tokenizer, self.plan.probes, bool(train.chat), train.max_length)
        if not settings.allow_probe_truncation:
            refuse_cut_probes(self.plan.probes, self.cuts, train.max_length)
        elif any(self.cuts.values()):
            report(cut_probes_line(self.plan.probes, self.cuts, train.max_length))
        self.committed_steps: set[int] = set()

    def _with_greedy(self, probes: list[Probe]) -> list[Probe]:
        """The plan's probes and the model's own greedy responses of the trained prompts, decoded before training."""
        tokens = self.settings.greedy_max_new_tokens
        if tokens == 0:
            return list(probes)
        model, tokenizer, chat = self.loaded.model, self.loaded.tokenizer, bool(self.settings.train.chat)
        return with_greedy(probes, lambda prompts: greedy_responses(model, tokenizer, prompts, chat, tokens))

    def fields(self) -> dict[str, Any]:
        """Everything that changes a number: the settings, the rows, probes and rejected responses, the weights."""
        return {**run_fields(self.settings, self.plan), **model_identity(self.loaded.model)}

    def eval_steps(self) -> list[int]:
        return [s for s in range(self.plan.steps) if is_eval_step(s, self.settings.eval_every)]

    def execute(self, writer: RunWriter) -> DynamicsSummary:
        finished = writer.finished()
        finished_steps = set() if finished is None else {int(s) for s in finished["influence_summary"].step}
        committed = {int(p.removeprefix("step-")) for p in writer.done_parts() if p.startswith("step-")}
        done = finished_steps | committed
        self.committed_steps, wanted = set(done), set(self.eval_steps())
        previous = self._previous_summary(finished)
        if previous is not None and wanted <= finished_steps and not writer.commits():
            writer.discard_staging()
            self.report(f"{self.folder.location}: finished with these settings; nothing to do")
            return replace(previous, resumed_steps=sorted(done))
        meta = self._train_log_meta(writer)
        if meta is None and previous is not None and wanted <= finished_steps:
            meta = {k: getattr(previous, k) for k in ("steps", "skipped_examples", "skipped_probes")}
        if meta is None or not wanted <= done:
            meta = self._train(writer, done)
        return self._finish(writer, sorted(done), meta)

    def _previous_summary(self, finished: Any) -> DynamicsSummary | None:
        """The summary of a finished run with this key (None when unfinished or unreadable)."""
        if finished is None or not self.folder.summary_file.is_file():
            return None
        try:
            return DynamicsSummary(**json.loads(self.folder.summary_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def _train_log_meta(self, writer: RunWriter) -> dict[str, Any] | None:
        """What the committed train log recorded (steps taken, examples and probes left out), if training ended."""
        found = [c.meta for c in writer.commits() if c.part == TRAIN_LOG]
        return found[-1] if found else None

    def _train(self, writer: RunWriter, done: set[int]) -> dict[str, Any]:
        train_log: dict[str, Any] = {}

        def sink(part: str, frames: Mapping[str, Any]) -> None:
            if part == TRAIN_LOG:
                train_log.update(frames)
                return
            writer.commit(part, frames)
            step = int(part.removeprefix("step-"))
            self.committed_steps.add(step)
            self.report(f"eval at step {step}: {len(self.plan.probes)} probes measured and committed")

        settings, loaded = self.settings, self.loaded
        callback = DynamicsCallback(
            loaded.tokenizer,
            self.plan.probes,
            eval_every=settings.eval_every,
            chat=bool(settings.train.chat),
            max_length=settings.train.max_length,
            sink=sink,
            done_steps=done,
            train_examples=self.plan.train,
            dpo_beta=settings.train.dpo_beta if settings.train.objective == "dpo" else None,
            greedy_max_new_tokens=settings.greedy_max_new_tokens,
            progress=self.progress,
        )
        train = replace(settings.train, steps=self.plan.steps)  # the plan's count, whatever rows encode
        result = fine_tune(
            loaded.model, loaded.tokenizer, self.plan.train, train, callbacks=[callback],
            rejected=self.plan.rejected,
        )
        meta = {"steps": result.steps, "skipped_examples": result.skipped, "skipped_probes": callback.skipped_probes}
        writer.commit(TRAIN_LOG, train_log, meta)
        return meta

    def _finish(self, writer: RunWriter, resumed: list[int], meta: dict[str, Any]) -> DynamicsSummary:
        import pandas as pd

        probes = pd.DataFrame([asdict(p) for p in self.plan.probes], columns=list(PROBE_COLUMNS))
        probes["cut_tokens"] = [self.cuts[p.probe_id] for p in self.plan.probes]  # 0 unless allowed
        tables = {name: writer.table(name) for name in TABLES}
        tables["probes"] = writer.table("probes", probes)
        summary = summarize(
            tables["influence_summary"], meta["steps"], len(self.plan.probes), resumed, meta["skipped_examples"],
            meta["skipped_probes"], self.plan.companions,
        )
        text = json.dumps(_no_nan(asdict(summary)), indent=2)
        writer.finish(tables, self._manifest(writer), {self.folder.summary_file.name: text})
        return summary

    def _manifest(self, writer: RunWriter) -> dict[str, Any]:
        identity = writer.fields
        return {
            "model": self.loaded.name or identity["model"],
            "model_source": self.loaded.source or None,
            "data_hash": examples_hash(self.plan.train),
            "n_examples": len(self.plan.train),
            **self.provenance,
            "weights_fingerprint": identity["weights"],
            "targets": sorted({p.rsplit(".", 2)[-2] for p in self.parameters if "." in p}),
            "encoding": "pair",
            "dtype": identity["dtype"],
            "device_type": identity["device_type"],
            "engine_version": LEARNING_DYNAMICS_VERSION,
            "example_ids": [e.example_id for e in self.plan.train],
            "parameters": self.parameters,
            "settings": asdict(self.settings),
        }


def summarize(frame, steps, n_probes, resumed, skipped_examples, skipped_probes, companions=None) -> DynamicsSummary:
    """R² of predicted vs measured change over the `influence_summary` rows, overall and per eval step."""
    by_step = {str(int(s)): r_squared(g["predicted_delta"], g["measured_delta"]) for s, g in frame.groupby("step")}
    return DynamicsSummary(
        steps=int(steps),
        eval_steps=sorted(int(s) for s in frame["step"].unique()),
        n_probes=n_probes,
        r2=r_squared(frame["predicted_delta"], frame["measured_delta"]),
        r2_by_step=by_step,
        resumed_steps=list(resumed),
        skipped_examples=dict(skipped_examples),
        skipped_probes=dict(skipped_probes),
        companions=dict(companions or {}),
    )


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: an undefined R² (probes that did not move) is written as null."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
