"""Generation metrics beside the held-out loss: the model's greedy answer to each held-out item at the same eval
steps, scored against the item's response with ROUGE-1, ROUGE-L, exact match and, when a reward model is
configured, its score, so the paper's "loss is the stable metric" can be tested on the same run.

- Generation: `model.generate(do_sample=False)` from the prompt the loss is measured on (the same encoding and chat
  template: the first `n_prompt` tokens of the item's `Encoded`), at most `max_new_tokens` new tokens, batched with
  left padding; the text is the new tokens up to the first end-of-sequence, decoded without special tokens.
- ROUGE-1 / ROUGE-L: F-measure of Google's `rouge-score` (`RougeScorer`, no stemmer; its tokenizer lower-cases
  and keeps runs of [a-z0-9]), as the authors' `compute_metrics.py` reports them (they stem; we do not, since
  answers here are numbers and single words).
- Exact match: 1 when the answer equals the response after normalising both: leading and trailing whitespace
  stripped, inner whitespace runs made one space, case folded (no punctuation is removed, unlike SQuAD's).
- Reward: the scalar logit of a sequence-classification model (`reward_model`, a local transformers folder) on
  the prompt and the answer; NaN where none is configured (none ships offline).

`generation_metrics` is the per-task table (mean over the task's items, and `__all__` over every item);
`generations` holds each item's answer and scores, so the means can be recomputed from it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

from lg_pipeline.dynamics.training import evaluating
from lg_pipeline.dynamics.zero_shot.held_out import ALL_TASKS
from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.gradients.encoding import Encoded
from lg_pipeline.gradients.engine import model_device, pad_token_id

SCORES = ("rouge1", "rougeL", "exact_match", "reward")
# Answers generated per batch, whatever the training batch: a generate call's cost is mostly per new token, so
# fewer, wider batches finish sooner (on CPU too).
GENERATION_BATCH = 16
GENERATION_COLUMNS = ("ordering", "step", "task", *SCORES, "n_examples")
GENERATIONS_COLUMNS = ("ordering", "step", "example_id", "task", "generation", "n_new_tokens", *SCORES)


def normalise(text: str) -> str:
    """Exact match's normal form: whitespace runs as one space, stripped, case folded."""
    return " ".join(text.split()).casefold()


def exact_match(answer: str, reference: str) -> float:
    return float(normalise(answer) == normalise(reference))


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    _keep_absl_off_the_host_stderr()
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


def _keep_absl_off_the_host_stderr() -> None:
    """Point absl's handler (rouge-score imports absl.logging) at `sys.__stderr__`, which absl never closes.

    The handler binds to whatever `sys.stderr` is when absl is first imported and closes that stream when every
    handler is shut down, which `logging.config.dictConfig` does and Dagster calls at each run's start when the
    instance sets `python_logs`. If the host has swapped `sys.stderr` since (a notebook, pytest's capture), the
    stream absl closes is the host's own, and the host's next write fails.
    """
    import sys

    from absl import logging as absl_logging

    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


def rouge(answer: str, reference: str) -> tuple[float, float]:
    """(ROUGE-1, ROUGE-L) F-measure of `answer` against `reference` (0 when either has no token)."""
    scores = _rouge_scorer().score(target=reference, prediction=answer)
    return float(scores["rouge1"].fmeasure), float(scores["rougeL"].fmeasure)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = tokenizer.eos_token_id if eos is None else eos
    return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))


def greedy_answers(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 8
) -> list[list[int]]:
    """Each prompt's greedy continuation (new token ids, cut after the first end-of-sequence token), eval mode."""
    import torch
    from transformers import GenerationConfig

    pad, eos = pad_token_id(tokenizer), _eos_ids(model, tokenizer)
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad,
                              eos_token_id=eos or None, use_cache=True)
    device, out = model_device(model), []
    with torch.no_grad(), evaluating(model):
        for start in range(0, len(prompts), batch_size):
            batch = [list(p) for p in prompts[start : start + batch_size]]
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
            new = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:]
            out.extend(_until_eos(row, eos) for row in new.cpu().tolist())
    return out


def _until_eos(tokens: list[int], eos: Sequence[int]) -> list[int]:
    for k, token in enumerate(tokens):
        if token in eos:
            return tokens[: k + 1]
    return tokens


class RewardScorer:
    """A reward model: a sequence-classification model with one label, read from a local folder; its score of
    (instruction, answer) is that label's logit."""

    def __init__(self, folder: str, device: Any = "cpu", dtype: Any = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True,
                                                                        torch_dtype=dtype).to(device).eval()
        if self.model.config.num_labels != 1:
            raise InputError(f"reward_model {folder}: {self.model.config.num_labels} labels; a reward model has one")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def text(self, instruction: str, answer: str) -> str:
        """The reward model's chat template when it has one, else the prompt and the answer on two lines."""
        if getattr(self.tokenizer, "chat_template", None):
            turns = [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}]
            return self.tokenizer.apply_chat_template(turns, tokenize=False)
        return f"{instruction}\n{answer}"

    def __call__(self, instruction: str, answer: str) -> float:
        import torch

        inputs = self.tokenizer(self.text(instruction, answer), return_tensors="pt").to(model_device(self.model))
        with torch.no_grad():
            return float(self.model(**inputs).logits[0, 0].float())


Reward = Callable[[str, str], float]


def score_rows(
    ordering: str, step: int, examples: Sequence[Example], tasks: Sequence[str], answers: Sequence[str],
    n_new: Sequence[int], reward: Reward | None,
) -> list[dict]:
    """One `generations` row per item: its answer and its scores."""
    rows = []
    for e, task, answer, n in zip(examples, tasks, answers, n_new, strict=True):
        r1, rl = rouge(answer, e.response)
        rows.append({"ordering": ordering, "step": step, "example_id": e.example_id, "task": task,
                     "generation": answer, "n_new_tokens": n, "rouge1": r1, "rougeL": rl,
                     "exact_match": exact_match(answer, e.response),
                     "reward": math.nan if reward is None else reward(e.instruction, answer)})
    return rows


def metric_rows(items: Sequence[dict]) -> list[dict]:
    """Mean of each score per task (tasks in order) and over every item (`__all__`)."""
    first = items[0]
    groups = {t: [r for r in items if r["task"] == t] for t in dict.fromkeys(r["task"] for r in items)}
    groups[ALL_TASKS] = list(items)

    def mean(rows: list[dict], score: str) -> float:
        return sum(r[score] for r in rows) / len(rows)

    return [{"ordering": first["ordering"], "step": first["step"], "task": task,
             **{s: mean(rows, s) for s in SCORES}, "n_examples": len(rows)} for task, rows in groups.items()]


class GenerationMetricsCallback(TrainerCallback):
    """Generates and scores the held-out items at step 0 and after every `every`-th step (and the last), the same
    steps as the held-out loss."""

    def __init__(self, model: Any, tokenizer: Any, encoded: Sequence[Encoded], examples: Sequence[Example],
                 tasks: Sequence[str], every: int, ordering: str, max_new_tokens: int,
                 batch_size: int = GENERATION_BATCH,
                 reward: Reward | None = None, report: Callable[[str], None] | None = None):
        self.model, self.tokenizer, self.every, self.ordering = model, tokenizer, every, ordering
        self.prompts = [e.input_ids[: e.n_prompt] for e in encoded]
        self.examples, self.tasks = list(examples), list(tasks)
        self.max_new_tokens, self.batch_size, self.reward, self.report = max_new_tokens, batch_size, reward, report
        self.rows: list[dict] = []  # generation_metrics
        self.item_rows: list[dict] = []  # generations
        self.seconds = 0.0  # spent generating and scoring (within the ordering's training time)

    def measure(self, step: int) -> None:
        started = time.monotonic()
        new = greedy_answers(self.model, self.tokenizer, self.prompts, self.max_new_tokens, self.batch_size)
        answers = [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]
        items = score_rows(self.ordering, step, self.examples, self.tasks, answers, [len(t) for t in new],
                           self.reward)
        self.item_rows.extend(items)
        rows = metric_rows(items)
        self.rows.extend(rows)
        self.seconds += time.monotonic() - started
        if self.report:
            every = rows[-1]
            self.report(f"{self.ordering} answers at step {step}: ROUGE-L {every['rougeL']:.3f}, exact match "
                        f"{every['exact_match']:.3f}")

    def on_train_begin(self, args, state, control, **kwargs):
        self.measure(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.measure(state.global_step)
