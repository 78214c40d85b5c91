"""`DynamicsCallback`: learning-dynamics measurements inside any transformers `Trainer` / TRL run.

At every eval step s (step 0 and every `eval_every` steps):
1. the trainer's forward on step s's batch is recorded (`capture.BatchRecorder`: inputs only);
2. before the optimizer steps (θ_s): the engine's per-example gradient statistics of that
   batch and the factors of its examples' gradients (for `grad_inner`); the trained weights are kept;
3. after the step (θ_{s+1}): the weights go back to θ_s for one probe pass (logp_sum and probability concentration
   at θ_s, predicted change per matrix ⟨∇_W logp_sum, W_{s+1} − W_s⟩, `grad_inner` per layer and training row) and
   the current greedy responses of the `greedy` probes' prompts (`greedy_now`), then forward to θ_{s+1} for the
   measured logp_sum.
Every step adds a `train_log` row (loss, learning rate, update norm). Tables go to a sink, one call per part:
`sink("step-<s>", {table: frame})` with every table of eval step s, and `sink("train_log", {"train_log": frame})`
when training ends; the default keeps them in memory (`callback.tables()`). A log-probability or predicted change
that is not finite stops the run (`RunStopped`, naming the step and the learning rate) before the step is emitted.

Works in a plain user `Trainer` as long as the batch is fed as `input_ids`/`attention_mask`/
`labels` (right-padded); a batch without labels gets no kernel and batch statistics.
`train_examples` (the training rows) lets the kernel and statistics name each batch row by its example id.
SFT: the kernel and statistics are those of the engine's per-example loss (mean response-token CE). DPO
(`dpo_beta` given; TRL's batch of B chosen rows then B rejected rows, the reference being the model as training
began, as `fine_tune` builds it): those of TRL's sigmoid loss, the kernel split into the chosen and the rejected
term. The predicted change always uses the update the optimizer actually made; its split into the two terms
(`chosen_share` + `rejected_share`) is exact only where the update is −lr·∇L (plain SGD, no momentum or weight
decay) and every trained weight is a studied matrix: elsewhere the DPO shares are NaN (SFT: all chosen).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from lg_pipeline.dynamics.learning.measure import (
    CONCENTRATION,
    Batch,
    PreferenceTerms,
    TrainFactors,
    batch_from_inputs,
    greedy_responses,
    logprobs,
    measured_logprobs,
    probe_pass,
    to_batch,
    train_pass,
)
from lg_pipeline.dynamics.learning.probes import Probe
from lg_pipeline.errors import RunStopped
from lg_pipeline.example import Example
from lg_pipeline.gradients.capture import BatchRecorder
from lg_pipeline.gradients.encoding import Encoded, encode
from lg_pipeline.gradients.engine import pad_token_id
from lg_pipeline.gradients.targets import Target
from lg_pipeline.schema import MATRIX_STATS
from lg_pipeline.vocabulary import layer_index

Sink = Callable[[str, Mapping[str, Any]], None]
TABLES = (
    "logprobs", "influence", "influence_summary", "kernel", "train_log", "train_gradient_stats", "train_residuals",
    "greedy_now",
)
SHARES = ("chosen_share", "rejected_share")  # NaN where the split is not defined (see the module's docstring)
TERMS = ("chosen", "rejected")


def is_eval_step(step: int, eval_every: int) -> bool:
    return step % max(1, eval_every) == 0


def trained_linear_targets(model: Any) -> list[Target]:
    """Every linear layer with a layer index whose weight trains: the matrices the change is split over."""
    import torch

    found = []
    for path, module in model.named_modules():
        layer = layer_index(path)
        if isinstance(module, torch.nn.Linear) and layer is not None and module.weight.requires_grad:
            found.append(Target(path + ".weight", path, layer, path.rsplit(".", 1)[-1]))
    return found


class DynamicsCallback(TrainerCallback):
    """Measure what each eval step's update does to the probes' log-probabilities, layer by layer."""

    def __init__(
        self,
        tokenizer: Any,
        probes: Sequence[Probe],
        eval_every: int = 5,
        chat: bool = False,
        max_length: int = 1024,
        sink: Sink | None = None,
        done_steps: Collection[int] = (),
        train_examples: Sequence[Example] = (),
        probe_batch_size: int = 4,
        progress: Callable[[int, int], None] | None = None,
        time_logprobs_only: bool = False,
        batch_measurements: bool = True,
        dpo_beta: float | None = None,
        greedy_max_new_tokens: int = 16,
    ):
        self.tokenizer, self.probes, self.eval_every = tokenizer, list(probes), max(1, eval_every)
        self.chat, self.max_length, self.probe_batch_size = chat, max_length, max(1, probe_batch_size)
        self.done_steps, self.progress = set(done_steps), progress
        self.train_examples = list(train_examples)  # names the recorded batches' rows (else step<s>:row<b>)
        self.time_logprobs_only = time_logprobs_only
        # Kernel and gradient statistics of the recorded batch (off: only the probes are measured).
        self.batch_measurements = batch_measurements
        self.dpo_beta = dpo_beta  # None: SFT
        self.greedy_max_new_tokens = greedy_max_new_tokens
        # The `greedy` probes' prompts, decoded again at every eval step.
        self.greedy_probes = [p for p in self.probes if p.probe_type == "greedy"]
        self._frames: dict[str, list[Any]] = defaultdict(list)
        self.sink = sink or self._keep
        self.skipped_probes: dict[str, str] = {}
        self._recorder: BatchRecorder | None = None
        self._pending: dict[int, dict[str, Any]] = {}
        self._train_log: list[dict[str, Any]] = []
        # Wall-clock seconds of each measurement phase per eval step (the benchmark reads them).
        self.seconds: dict[int, dict[str, float]] = defaultdict(dict)

    # --- results -------------------------------------------------------------------------------

    def _keep(self, part: str, frames: Mapping[str, Any]) -> None:
        for table, frame in frames.items():
            self._frames[table].append(frame)

    def tables(self) -> dict[str, Any]:
        """The in-memory tables (default sink): one DataFrame per name in TABLES."""
        import pandas as pd

        return {t: pd.concat(self._frames[t], ignore_index=True) if self._frames[t] else pd.DataFrame() for t in TABLES}

    # --- trainer events ------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        self.targets = trained_linear_targets(model)
        target_params = {t.parameter for t in self.targets}
        self.rest_names = [n for n, p in model.named_parameters() if p.requires_grad and n not in target_params]
        self.trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.pad_id = pad_token_id(self.tokenizer)
        # Probes of similar length share a batch: less padding in every probe pass.
        self._encoded = sorted(self._encode_probes(), key=lambda pe: pe[1].n_tokens)
        self.example_ids = {}
        for example in self.train_examples:
            enc = encode(self.tokenizer, example, self.chat, self.max_length)
            if enc is not None:
                self.example_ids.setdefault(tuple(enc.input_ids), example.example_id)
        # DPO's reference: the trained weights as training begins (`fine_tune` copies the model then).
        self._reference = {n: p.detach().clone() for n, p in self.trained.items()} if self.dpo_beta else {}
        self._recorder = BatchRecorder(model, self._recording_now)
        if self.progress:
            self.progress(0, state.max_steps)  # training begins: a progress clock starts here

    def on_step_begin(self, args, state, control, **kwargs):
        self._step = state.global_step
        self._recorder.clear()
        self._measure = is_eval_step(self._step, self.eval_every) and self._step not in self.done_steps
        self._recording = self._measure

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self._recording = False
        self._before = {n: p.detach().clone() for n, p in self.trained.items()}
        self._lr = _learning_rate(optimizer)
        self._plain_sgd = _is_plain_sgd(optimizer)
        self._train: TrainFactors | None = None
        self._train_batch: Batch | None = None
        recorded = self._recorder.batches
        if self._measure and recorded and self.batch_measurements:
            self._train_batch = batch_from_inputs(recorded[-1])
            if self._train_batch is not None and self.dpo_beta and len(self._train_batch.lengths) % 2:
                self._train_batch = None  # not a chosen-then-rejected batch
            if self._train_batch is not None:
                started = time.perf_counter()
                self._train = train_pass(self.model, self.targets, self._train_batch, self._preference())
                self.seconds[self._step]["train_pass"] = time.perf_counter() - started

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        step = self._step
        with torch.no_grad():
            squares = (float((p.detach() - self._before[n]).double().pow(2).sum()) for n, p in self.trained.items())
            norm = math.sqrt(sum(squares))
        self._pending[step] = {"step": step, "loss": math.nan, "learning_rate": self._lr, "update_norm": norm}
        if self._measure:
            self._measure_step(step)
        self._before, self._train = {}, None
        self._recorder.clear()
        if self.progress:
            self.progress(step + 1, state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        step = state.global_step - 1
        if logs and "loss" in logs and step in self._pending:
            row = self._pending.pop(step)
            self._emit_train_log({**row, "loss": float(logs["loss"])})

    def on_train_end(self, args, state, control, **kwargs):
        import pandas as pd

        for step in sorted(self._pending):
            self._emit_train_log(self._pending.pop(step))
        if self._recorder is not None:
            self._recorder.release()
            self._recorder = None
        self.sink("train_log", {"train_log": pd.DataFrame(self._train_log)})

    # --- measurement ---------------------------------------------------------------------------

    def _preference(self) -> PreferenceTerms | None:
        """DPO: β and the reference's logp_sum of the recorded batch's rows (the weights at θ_0, then back)."""
        import torch

        if not self.dpo_beta:
            return None
        with torch.no_grad():
            for n, p in self.trained.items():
                p.copy_(self._reference[n])
            try:
                reference = logprobs(self.model, self._train_batch)
            finally:
                for n, p in self.trained.items():
                    p.copy_(self._before[n])
        return PreferenceTerms(self.dpo_beta, reference)

    def _recording_now(self) -> bool:
        return getattr(self, "_recording", False) and self.model.training

    def _encode_probes(self) -> list[tuple[Probe, Encoded]]:
        out = []
        for probe in self.probes:
            enc = encode(self.tokenizer, probe.as_example(), self.chat, self.max_length)
            if enc is None:
                self.skipped_probes[probe.probe_id] = f"no response token left within max_length={self.max_length}"
            else:
                out.append((probe, enc))
        return out

    def _measure_step(self, step: int) -> None:
        import torch

        after = {n: p.detach().clone() for n, p in self.trained.items()}
        params = dict(self.model.named_parameters())
        updates = [after[t.parameter] - self._before[t.parameter] for t in self.targets]
        rest = {n: (params[n], after[n] - self._before[n]) for n in self.rest_names}
        size = self.probe_batch_size
        chunks = [self._encoded[i : i + size] for i in range(0, len(self._encoded), size)]
        device = next(self.model.parameters()).device
        batches = [to_batch([e for _, e in chunk], self.pad_id, device) for chunk in chunks]
        with torch.no_grad():
            for n, p in self.trained.items():
                p.copy_(self._before[n])  # back to θ_s for the probes' gradients
        if self.time_logprobs_only:  # what a probe-log-probability-only tracker does at θ_s (benchmark)
            started = time.perf_counter()
            [logprobs(self.model, b) for b in batches]
            self.seconds[step]["logprobs_before"] = time.perf_counter() - started
        started = time.perf_counter()
        try:
            effects = [probe_pass(self.model, self.targets, b, updates, self._train, rest) for b in batches]
            greedy_started = time.perf_counter()
            greedy = self._greedy_frame(step)
            self.seconds[step]["greedy"] = time.perf_counter() - greedy_started
        finally:
            with torch.no_grad():
                for n, p in self.trained.items():
                    p.copy_(after[n])
        middle = time.perf_counter()
        after_parts = [measured_logprobs(self.model, b) for b in batches]
        measured = [v for lp, _ in after_parts for v in lp]
        peaked_after = {c: [v for _, peaked in after_parts for v in peaked[c]] for c in CONCENTRATION}
        self.seconds[step]["probe_pass"] = greedy_started - started
        self.seconds[step]["logprobs_after"] = time.perf_counter() - middle
        self._emit_step(step, effects, measured, batches, peaked_after, greedy)

    def _greedy_frame(self, step: int) -> Any:
        """Each `greedy` probe's prompt decoded greedily now (θ_s), and that response's log-probability."""
        import pandas as pd

        if not self.greedy_probes:
            return pd.DataFrame()
        instructions = [p.instruction for p in self.greedy_probes]
        responses = greedy_responses(self.model, self.tokenizer, instructions, self.chat, self.greedy_max_new_tokens)
        found = []
        for probe, response in zip(self.greedy_probes, responses, strict=True):
            enc = encode(self.tokenizer, Example(probe.probe_id, probe.instruction, response), self.chat,
                         self.max_length)
            if enc is not None:  # an empty greedy response has no token to measure
                found.append((probe, response, enc))
        rows = []
        device = next(self.model.parameters()).device
        for k in range(0, len(found), self.probe_batch_size):
            chunk = found[k : k + self.probe_batch_size]
            batch = to_batch([e for _, _, e in chunk], self.pad_id, device)
            logp, peaked = measured_logprobs(self.model, batch)
            for j, (probe, response, _) in enumerate(chunk):
                n = batch.n_response_tokens[j]
                rows.append({
                    "step": step, "prompt_id": probe.prompt_id, "probe_id": probe.probe_id, "response": response,
                    "same_as_start": response == probe.response, "logp_sum": logp[j],
                    "logp_mean": logp[j] / max(1, n), "n_response_tokens": n,
                    **{c: peaked[c][j] for c in CONCENTRATION},
                })
        return pd.DataFrame(rows)

    def _emit_step(self, step, effects, logp_after, batches, peaked_after, greedy) -> None:
        import pandas as pd

        probes = [p for p, _ in self._encoded]
        n_resp = [n for b in batches for n in b.n_response_tokens]
        logp_before = [v for e in effects for v in e.logp_sum]
        peaked_before = {c: [v for e in effects for v in e.concentration[c]] for c in CONCENTRATION}
        predicted = _cat([e.predicted for e in effects])
        rest = {n: [v for e in effects for v in e.rest[n]] for n in self.rest_names}
        shares = self._shares(effects)
        rows_lp, rows_inf, rows_sum = [], [], []
        for k, probe in enumerate(probes):
            for s, lp, peaked in ((step, logp_before[k], peaked_before), (step + 1, logp_after[k], peaked_after)):
                rows_lp.append({**_logprob_row(s, probe, lp, n_resp[k]), **{c: peaked[c][k] for c in CONCENTRATION}})
            for i, t in enumerate(self.targets):
                rows_inf.append(_influence_row(step, probe, t.layer, t.module, t.parameter, float(predicted[k, i])))
            for n in self.rest_names:
                rows_inf.append(_influence_row(step, probe, _layer_or(n), _module_of(n), n, rest[n][k]))
            total = float(predicted[k].sum()) + sum(rest[n][k] for n in self.rest_names)
            chosen, rejected = (total, 0.0) if shares is None else (float(shares[0][k]), float(shares[1][k]))
            rows_sum.append(
                {
                    "step": step,
                    "probe_id": probe.probe_id,
                    "probe_type": probe.probe_type,
                    "predicted_delta": total,
                    "measured_delta": logp_after[k] - logp_before[k],
                    "chosen_share": chosen,
                    "rejected_share": rejected,
                }
            )
        frames = {
            "logprobs": pd.DataFrame(rows_lp),
            "influence": pd.DataFrame(rows_inf),
            "influence_summary": pd.DataFrame(rows_sum),
        }
        if self._train is not None:
            ids = self._train_example_ids(step)
            frames["kernel"] = self._kernel_frame(step, probes, effects, ids)
            frames["train_gradient_stats"] = self._stats_frame(step, ids)
            frames["train_residuals"] = self._residuals_frame(step, ids)
        if len(greedy):
            frames["greedy_now"] = greedy
        self._stop_unless_finite(step, frames)
        self.sink(f"step-{step}", frames)

    def _stop_unless_finite(self, step: int, frames: Mapping[str, Any]) -> None:
        """A NaN or inf log-probability, prediction or statistic is not a measurement: stop, naming the step."""
        import numpy as np

        for table, frame in frames.items():
            numbers = frame.drop(columns=list(SHARES), errors="ignore").select_dtypes("number").to_numpy(dtype=float)
            if numbers.size and not np.isfinite(numbers).all():
                raise RunStopped([
                    f"step {step}: {table} holds values that are not finite (NaN or inf weights); the run stopped: "
                    f"lower {{learning_rate}} (it is {self._lr:g})"
                ])

    def _shares(self, effects) -> tuple[Any, Any] | None:
        """DPO: each probe's chosen and rejected share of its predicted change, −lr/B Σ_u Σ_layers grad_inner of
        each term's rows (None under SFT: all of it is the chosen term's). NaN where the update is not −lr·∇L."""
        import torch

        if not self.dpo_beta:
            return None
        n_probes = sum(len(e.logp_sum) for e in effects)
        if self._train is None or not self._plain_sgd or self.rest_names:
            nan = torch.full((n_probes,), math.nan, dtype=torch.float64)
            return nan, nan
        kernel = _cat([e.kernel for e in effects])  # (P, 2B, targets)
        n = kernel.shape[1] // 2
        scale = -self._lr / n
        return scale * kernel[:, :n].sum(dim=(1, 2)), scale * kernel[:, n:].sum(dim=(1, 2))

    def _train_example_ids(self, step: int) -> list[str]:
        batch = self._train_batch
        out = []
        rows = batch.lengths[: len(batch.lengths) // 2] if self._train.pairs else batch.lengths
        for b, n in enumerate(rows):
            key = tuple(int(i) for i in batch.ids[b, :n].tolist())
            out.append(self.example_ids.get(key, f"step{step}:row{b}"))
        return out

    def _kernel_frame(self, step, probes, effects, ids):
        import pandas as pd
        import torch

        kernel = _cat([e.kernel for e in effects])
        n = len(ids)
        chosen = kernel[:, :n]
        rejected = kernel[:, n:] if self._train.pairs else torch.zeros_like(chosen)
        rows = [
            {
                "step": step,
                "probe_id": probe.probe_id,
                "example_id": ids[u],
                "layer": t.layer,
                "module": t.module,
                "grad_inner": float(chosen[k, u, i] + rejected[k, u, i]),
                "grad_inner_chosen": float(chosen[k, u, i]),
                "grad_inner_rejected": float(rejected[k, u, i]),
            }
            for k, probe in enumerate(probes)
            for u in range(n)
            for i, t in enumerate(self.targets)
        ]
        return pd.DataFrame(rows)

    def _residuals_frame(self, step, ids):
        """‖G‖ per trained example and term: the mean ‖π − e_y‖ of its row, and the weight w of its term −w·logp."""
        import pandas as pd

        train, n = self._train, len(ids)
        rows = []
        for r, weight in enumerate(train.weights):
            rows.append({
                "step": step,
                "example_id": ids[r % n],
                "term": TERMS[r // n],
                "weight": weight,
                "residual_norm_mean": train.residual_norm[r],
                "n_response_tokens": train.row_response_tokens[r],
            })
        return pd.DataFrame(rows)

    def _stats_frame(self, step, ids):
        import pandas as pd

        train = self._train
        rows = [
            {
                "step": step,
                "example_id": ids[b],
                "layer": t.layer,
                "module": t.module,
                "parameter": t.parameter,
                "loss": train.losses[b],
                "n_tokens": train.lengths[b],
                "n_response_tokens": train.n_response_tokens[b],
                **dict(zip(MATRIX_STATS, train.stats[i, b], strict=True)),
            }
            for b in range(len(ids))
            for i, t in enumerate(self.targets)
        ]
        return pd.DataFrame(rows)

    def _emit_train_log(self, row: dict[str, Any]) -> None:
        self._train_log.append(row)


def _cat(parts):
    import torch

    return torch.cat(parts) if parts else torch.zeros(0)


def _logprob_row(step, probe, logp_sum, n_response_tokens):
    return {
        "step": step,
        "probe_id": probe.probe_id,
        "probe_type": probe.probe_type,
        "logp_sum": logp_sum,
        "logp_mean": logp_sum / max(1, n_response_tokens),
        "n_response_tokens": n_response_tokens,
    }


def _influence_row(step, probe, layer, module, parameter, value):
    return {
        "step": step,
        "probe_id": probe.probe_id,
        "layer": layer,
        "module": module,
        "parameter": parameter,
        "predicted_delta": value,
    }


def _layer_or(name: str) -> int:
    """Layer index of a parameter name, -1 outside the layers (embeddings, final norm)."""
    layer = layer_index(name)
    return -1 if layer is None else layer


def _module_of(parameter: str) -> str:
    """`model.layers.0.input_layernorm.weight` -> `input_layernorm`; `model.embed_tokens.weight` -> `embed_tokens`."""
    parts = parameter.split(".")
    return parts[-2] if len(parts) > 1 else parts[0]


def _is_plain_sgd(optimizer: Any) -> bool:
    """Whether the step is −lr·∇L: torch SGD without momentum, dampening or weight decay (the trainer's wrapper
    unwrapped). Gradient clipping is off in `fine_tune`."""
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, torch.optim.SGD):
        return False
    return all(not g.get("momentum") and not g.get("weight_decay") and not g.get("nesterov")
               for g in inner.param_groups)


def _learning_rate(optimizer: Any) -> float:
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return math.nan


