"""Fine-tune a causal LM on examples, in the given order, through TRL's trainers: the one training path.

Shared by both dynamics wings (learning and zero-shot), which train through
`fine_tune(model, tokenizer, examples, config, callbacks=(), rejected=None) -> TrainResult`
with a frozen `TrainSettings` (checked on construction): add fields with defaults, never rename or reorder
arguments. A run receives its model as a `LoadedModel` from a `ModelLoader`, called only once every input is
checked and the output is locked.

- SFT: a `trl.SFTTrainer` whose loss is the gradient engine's (mean cross-entropy over each
  example's response tokens, averaged over the batch), on the engine's encoding and chat
  template (`lg_pipeline.gradients.encoding`), so a training example's gradient is the one the
  engine measures.
- DPO: a `trl.DPOTrainer` with a frozen reference copy of the model; prompt and responses
  encoded the same way.
- Order: batches are the examples in the given order (a sequential sampler, no shuffling);
  orderings are part of what the zero-shot study varies. More steps than one pass wraps around.
- Length: `steps` is the total number of optimizer steps (never per epoch); with `steps` unset, `epochs` E passes
  over the rows take ceil(E × ceil(rows / batch_size)) steps (`TrainSettings.total_steps`, the one rule: a pass
  ends with a short batch when the rows do not divide evenly, as the trainer's data loader does).
- Trainable: `attention` (q/k/v/o weights of every layer, the study's scope) or `all`.
- Plain SGD (no momentum, no weight decay, no clipping) or AdamW, constant learning rate:
  updates are then exactly what the configuration says.
- Device and dtype are the model's own (fp16 refused: `refuse_float16`); evaluation hooks are
  `TrainerCallback`s. A training loss that is not finite stops the run (`RunStopped`, naming the step and the
  learning rate) instead of training on into NaN weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import TrainerCallback

from lg_pipeline.errors import (
    InputError,
    RunStopped,
    SettingsError,
    int_at_least,
    one_of,
    positive_number,
    raise_problems,
    setting,
)
from lg_pipeline.example import Example
from lg_pipeline.gradients.capture import grad_only_for
from lg_pipeline.gradients.encoding import Encoded, encode, prompt_ids
from lg_pipeline.gradients.engine import model_device
from lg_pipeline.gradients.padding import right_padded
from lg_pipeline.gradients.targets import find_targets
from lg_pipeline.vocabulary import ATTENTION

log = logging.getLogger(__name__)
Optimizer = Literal["sgd", "adamw"]
Trainable = Literal["attention", "all"]
Objective = Literal["sft", "dpo"]
_OPTIM = {"sgd": "sgd", "adamw": "adamw_torch"}


@dataclass(frozen=True)
class TrainSettings:
    """How to train. `steps` (total optimizer steps) wins over `epochs` (passes over the rows) when both are set;
    one of them must be (`total_steps`). `chat` None: the model's own choice (its catalog entry, or its
    tokenizer's chat template), which a run resolves once it is loaded."""

    learning_rate: float = 1e-4
    optimizer: Optimizer = "sgd"
    steps: int | None = 20
    epochs: float | None = None
    batch_size: int = 2
    seed: int = 0
    trainable: Trainable = "attention"
    objective: Objective = "sft"
    chat: bool | None = False
    max_length: int = 1024
    dpo_beta: float = 0.1

    def __post_init__(self) -> None:
        raise_problems(self.problems())

    def problems(self) -> list[str | None]:
        no_length = (self.steps is None or int_at_least("steps", self.steps, 1)) and (
            self.epochs is None or positive_number("epochs", self.epochs)
        )
        return [
            positive_number("learning_rate", self.learning_rate),
            one_of("optimizer", self.optimizer, tuple(_OPTIM)),
            setting("steps", f"give a positive number of steps (or epochs), got {self.steps!r}") if no_length else None,
            int_at_least("batch_size", self.batch_size, 1),
            int_at_least("seed", self.seed, 0, 2**32 - 1),  # numpy's seed range
            one_of("trainable", self.trainable, ("attention", "all")),
            one_of("objective", self.objective, ("sft", "dpo")),
            None if self.chat in (None, True, False) else setting("chat", f"must be true or false, got {self.chat!r}"),
            int_at_least("max_length", self.max_length, 2),
            positive_number("dpo_beta", self.dpo_beta),
        ]

    def total_steps(self, n_rows: int) -> int:
        """Optimizer steps of a run over `n_rows` rows: `steps`, else `epochs` passes of ceil(n_rows / batch_size)
        batches each (rounded up to a whole step)."""
        if self.steps:
            return int(self.steps)
        batches = (self.epochs or 1.0) * math.ceil(n_rows / self.batch_size)
        return max(1, math.ceil(round(batches, 9)))  # 0.3 × 10 is 3, not 3.0000000000000004 (4 steps)


class HoldsTrainSettings:
    """Mixin of a run's settings object that holds a `TrainSettings` as `train` (checked in `__post_init__`)."""

    @classmethod
    def train_defaults(cls) -> dict[str, Any]:
        """The training settings this kind of run starts from (`build` overrides them field by field)."""
        return {}

    @classmethod
    def build(cls, train: Mapping[str, Any], **fields: Any) -> Any:
        """`cls(train=TrainSettings(**train), **fields)`, with every problem of both in one SettingsError."""
        problems: list[str] = []
        try:
            train_settings = TrainSettings(**{**cls.train_defaults(), **train})
        except SettingsError as exc:
            problems += exc.templates
            train_settings = TrainSettings()  # stands in while the run's own settings are checked
        try:
            settings = cls(train=train_settings, **fields)
        except SettingsError as exc:
            problems += exc.templates
        if problems:
            raise SettingsError(problems)
        return settings


@dataclass
class LoadedModel:
    """A model as a run receives it: weights and tokenizer, whether its prompts take the chat template by default,
    and its name and source (for the tables' run manifest)."""

    model: Any
    tokenizer: Any
    chat: bool = False
    name: str = ""
    source: str = ""


# Called by a run only after its inputs are checked and its output is locked: bad input never waits for weights.
ModelLoader = Callable[[], LoadedModel]


def refuse_float16(model: Any) -> None:
    """fp16 weights train and measure without loss scaling: small gradients underflow to 0, and the gradient
    statistics, kernels and alignments come out wrong without an error (bf16 has fp32's range)."""
    import torch

    if next(model.parameters()).dtype == torch.float16:
        raise InputError("dtype float16: gradients underflow without loss scaling; use bfloat16 or float32")


@dataclass
class TrainResult:
    """What a run did: optimizer steps taken, the trainer's log, and examples left out (with why)."""

    steps: int
    log_history: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def trainable_parameters(model: Any, trainable: Trainable) -> list[str]:
    """Names of the parameters that train: the q/k/v/o weights (`attention`) or every parameter."""
    if trainable == "all":
        return [n for n, _ in model.named_parameters()]
    try:
        return [t.parameter for t in find_targets(model, ATTENTION)]
    except InputError as exc:  # named for this setting, not the engine's targets
        found = str(exc).removeprefix("--targets: ").replace("{", "{{").replace("}", "}}")
        raise SettingsError(["{trainable} attention: " + found]) from None


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Eval mode (no dropout) for a measurement; the trainer's mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def fine_tune(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    config: TrainSettings = TrainSettings(),
    callbacks: Sequence[Any] = (),
    rejected: Sequence[Example] | None = None,
) -> TrainResult:
    """Train `model` in place on `examples` in their order; `rejected` (same rows) for DPO."""
    if config.objective == "dpo" and rejected is None:
        raise InputError("objective dpo needs the rejected responses of the same rows (a wrong-answer set)")
    if config.chat is None:
        raise ValueError("TrainSettings.chat is None: the run resolves it from the model before training")
    names = trainable_parameters(model, config.trainable)
    if not names:
        raise InputError(f"trainable {config.trainable}: no parameter of {type(model).__name__} matched")
    callbacks = [FiniteLoss(config.learning_rate), *callbacks]
    _ensure_pad_token(tokenizer)
    with tempfile.TemporaryDirectory(prefix="lg-train-") as out, grad_only_for(model, names):
        if config.objective == "dpo":
            trainer, skipped = _dpo_trainer(model, tokenizer, examples, rejected, config, list(callbacks), out)
        else:
            trainer, skipped = _sft_trainer(model, tokenizer, examples, config, list(callbacks), out)
        _quiet(trainer)
        for example_id, reason in skipped.items():
            log.warning("left out %s: %s", example_id, reason)
        output = trainer.train()
        history = list(trainer.state.log_history)
    model.eval()
    return TrainResult(int(output.global_step), history, skipped)


class FiniteLoss(TrainerCallback):
    """Stops training at the first step whose loss is not finite, naming the step and the learning rate."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise RunStopped([
                f"step {state.global_step - 1}: the training loss is {float(loss)} (not finite); the run stopped: "
                f"lower {{learning_rate}} (it is {self.learning_rate:g})"
            ])


def _quiet(trainer: Any) -> None:
    """No console printing of each log line: progress goes through the caller's callbacks and logger."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _ensure_pad_token(tokenizer: Any) -> None:
    if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token


def _schedule(config: TrainSettings, n_rows: int) -> dict[str, Any]:
    """Arguments common to both trainers: steps (always `max_steps`, from `total_steps`, so the trainer's own
    epoch arithmetic never decides the length), optimizer, seed, device; nothing saved or reported."""
    return {
        "learning_rate": config.learning_rate,
        "optim": _OPTIM[config.optimizer],
        "weight_decay": 0.0,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "max_grad_norm": 0.0,  # no clipping: the update is the optimizer's own
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": config.total_steps(n_rows),
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": 1,
        "logging_nan_inf_filter": False,  # a NaN loss is logged as NaN (and stops the run), not averaged away
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "bf16": False,
        "fp16": False,
    }


def _arguments(config_cls: type, model: Any, config: TrainSettings, out: str, n_rows: int, **extra: Any) -> Any:
    """A TRL config that keeps the model where it is: `use_cpu` when it lives on the CPU."""
    common = _schedule(config, n_rows)
    use_cpu = model_device(model).type == "cpu"
    return config_cls(output_dir=out, use_cpu=use_cpu, **common, **extra)


class _InOrder:
    """Mixin: batches in dataset order. Trainer shuffles by default; the study's orderings must hold."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        import torch

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return torch.utils.data.SequentialSampler(dataset)


def encode_examples(
    tokenizer: Any, examples: Sequence[Example], config: TrainSettings
) -> tuple[list[Encoded], dict[str, str]]:
    """The engine's encoding of each example; those with no response token left are skipped (with why)."""
    kept, skipped = [], {}
    for example in examples:
        enc = encode(tokenizer, example, config.chat, config.max_length)
        if enc is None:
            skipped[example.example_id] = f"no response token left within max_length={config.max_length}"
        else:
            kept.append(enc)
    if not kept:
        problem = f"{config.max_length} leaves no response token in any training row"
        raise SettingsError([setting("max_length", problem)])
    return kept, skipped


def _sft_trainer(model, tokenizer, examples, config, callbacks, out):
    import datasets
    from trl import SFTConfig, SFTTrainer

    class EngineLossSFTTrainer(_InOrder, SFTTrainer):
        """SFTTrainer with the engine's loss: each example's mean response-token CE, averaged over the batch.

        (SFTTrainer's own loss averages over all tokens of the batch, which weighs long responses more.)
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            from lg_pipeline.gradients.loss import per_example_loss

            # `labels` go in so callbacks that record the batch (DynamicsCallback) see them; the model's own
            # token-mean loss is computed alongside and not used.
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                labels=inputs["labels"],
                use_cache=False,
            )
            loss = per_example_loss(outputs.logits, inputs["labels"]).mean()
            return (loss, outputs) if return_outputs else loss

    encoded, skipped = encode_examples(tokenizer, examples, config)
    rows = [{"input_ids": e.input_ids, "labels": e.labels(), "example_id": e.example_id} for e in encoded]
    args = _arguments(
        SFTConfig,
        model,
        config,
        out,
        len(rows),
        max_length=None,
        packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    trainer = EngineLossSFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        data_collator=RightPadCollator(int(tokenizer.pad_token_id)),
        callbacks=callbacks,
    )
    return trainer, skipped


class RightPadCollator:
    """Right-pads `input_ids` / `labels` (-100) with the engine's builder (`padding.right_padded`)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = right_padded([(r["input_ids"], r["labels"]) for r in rows], self.pad_id)
        return {"input_ids": batch.ids, "attention_mask": batch.mask, "labels": batch.labels}


def _dpo_trainer(model, tokenizer, examples, rejected, config, callbacks, out):
    import datasets
    from trl import DPOConfig, DPOTrainer

    if len(rejected) != len(examples):
        raise InputError(f"rejected responses: {len(rejected)} rows, the training data has {len(examples)}")
    rows, skipped = _preference_rows(tokenizer, examples, rejected, config)

    class EngineEncodingDPOTrainer(_InOrder, DPOTrainer):
        """DPOTrainer on rows already encoded as the engine encodes them (its own tokenizer pass skipped)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    args = _arguments(DPOConfig, model, config, out, len(rows), beta=config.dpo_beta, max_length=None)
    trainer = EngineEncodingDPOTrainer(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return trainer, skipped


def _preference_rows(tokenizer, examples, rejected, config) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(prompt, chosen, rejected) token ids per row, each response cut to fit `max_length` after the prompt."""
    rows, skipped = [], {}
    for good, bad in zip(examples, rejected, strict=True):
        if good.instruction != bad.instruction:
            raise InputError(f"rejected responses: row {good.example_id} has another instruction than the training row")
        prompt = prompt_ids(tokenizer, good.instruction, config.chat)
        room = config.max_length - len(prompt)
        chosen = list(tokenizer(good.response, add_special_tokens=False)["input_ids"])[:room]
        worse = list(tokenizer(bad.response, add_special_tokens=False)["input_ids"])[:room]
        if room <= 0 or not chosen or not worse:
            skipped[good.example_id] = f"no response token left within max_length={config.max_length}"
            continue
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": worse})
    if not rows:
        problem = f"{config.max_length} leaves no response token in any training pair"
        raise SettingsError([setting("max_length", problem)])
    return rows, skipped
