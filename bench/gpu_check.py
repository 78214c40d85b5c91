"""One prepared device check of the gradient engine: every CUDA path measured in one call, one Markdown table.

On CUDA (at most 8 minutes on one H200; each step has its own time budget and records what it skipped):
1. exactness: `core` in both schedules against `full-svd` on every tiny test family, fp32 and bf16;
2. the engine on SmolLM2-135M- and Gemma-3-270M-shaped models at Detailed-CoT length: `core` in the
   hook and after the backward, its floor, the study's `full-svd`, the spectra alone; peak memory each;
3. one 4096×4096 gradient from T = 512: `factor_stats` against the study's SVD;
4. a batch-size and `max_batch_tokens` sweep (examples/s and peak memory), to set the GPU default
   from a measurement;
5. one learning-dynamics step: its predicted against measured log-probability changes (R²).
Without CUDA the same steps run at tiny sizes (under 3 minutes on 2 cores) after printing
`no CUDA: CPU smoke only`.

Why shaped models with random weights: the device machine gets the working tree only (64 MiB), so
the packaged weights and the study's release do not travel; times depend on the shapes, and
exactness is checked on the same models. Token ids come from the tests' byte-level tokenizer.
The table is rewritten after every step, so a run cut short still leaves what it measured.

    .venv/bin/python bench/gpu_check.py [--out DIR] [--cpu]     (bench/gpu_check.sh runs it)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_engine as be  # noqa: E402  (one timing rule for every bench)


@dataclass(frozen=True)
class Sizes:
    """What each step runs: the CUDA check, or the CPU smoke of the same steps."""

    layers: int | None  # None: the real models' layer counts; else this many (smoke)
    vocab: int | None
    n_examples: int
    tokens: int  # prompt + response of each Detailed-CoT-length example
    repeats: int
    matrix: tuple[int, int]  # (size, T)
    batch_sizes: tuple[int, ...]
    budgets: tuple[int, ...]
    sweep_examples: int
    step_seconds: dict[str, float]


CUDA_SIZES = Sizes(None, None, 8, 520, 2, (4096, 512), (1, 4, 8, 16, 32), (2048, 4096, 8192, 16384, 32768), 32,
                   {"exactness": 60, "engine": 150, "matrix": 40, "sweep": 120, "dynamics": 40})
SMOKE_SIZES = Sizes(2, 512, 2, 120, 1, (256, 32), (1, 2), (256,), 2,
                    {"exactness": 45, "engine": 50, "matrix": 10, "sweep": 20, "dynamics": 20})

SHAPES = {  # the studied models' shapes (their config.json), weights random
    "SmolLM2-135M": ("llama", {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
                               "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                               "tie_word_embeddings": True, "max_position_embeddings": 2048}),
    "Gemma-3-270M": ("gemma3_text", {"vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
                                     "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
                                     "head_dim": 256, "sliding_window": 512, "query_pre_attn_scalar": 256,
                                     "max_position_embeddings": 32768}),
}


LEARNING_RATE = 1e-4  # the dynamics step's; small enough for the first-order prediction to hold


class Table:
    """The Markdown table, rewritten to `path` after every row."""

    def __init__(self, path: Path, header: str):
        self.path, self.header, self.rows = path, header, []

    def add(self, step: str, case: str, measured: str, peak: str = "", note: str = "") -> None:
        self.rows.append((step, case, measured, peak, note))
        print(f"  {step} | {case} | {measured} | {peak} | {note}", flush=True)
        lines = [self.header, "", "| step | case | measured | peak memory | note |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.path)


class Budget:
    """A step's deadline: later cases of the step are skipped (and said so) once it has passed."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.deadline


def shaped_model(name: str, sizes: Sizes, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kind, fields = SHAPES[name]
    fields = dict(fields)
    if sizes.layers is not None:
        fields["num_hidden_layers"] = sizes.layers
    if sizes.vocab is not None:
        fields["vocab_size"] = sizes.vocab
    config = AutoConfig.for_model(kind, **fields, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()


def detailed_examples(n: int, tokens: int, offset: int = 0) -> list[Any]:
    """Examples of about `tokens` byte tokens each, a sixth of them prompt, lengths spread by ±10%."""
    from tests.helpers.builders import example

    return [example(f"d{offset + i}", tokens // 6, tokens - tokens // 6 - tokens // 10 + (i * tokens // 5) // n)
            for i in range(n)]


def peak_of(device: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    from lg_pipeline.gradients.backends import peak_memory_mib, reset_peak_memory, synchronize

    reset_peak_memory(device)
    out = fn()
    synchronize(device)
    return out, peak_memory_mib(device)


def mib(value: float, device: str) -> str:
    return f"{value:.0f} MiB ({'CUDA allocated' if device.startswith('cuda') else 'process RSS'})"


# --------------------------------------------------------------------------------------------- the steps


def exactness(table: Table, device: str, sizes: Sizes) -> None:
    import torch

    from lg_pipeline.gradients.engine import EngineConfig, compute_gradient_stats
    from tests.helpers.builders import ALL_TARGETS, MODEL_KINDS, example, make_model, make_tokenizer

    budget = Budget(sizes.step_seconds["exactness"])
    tokenizer = make_tokenizer()
    examples = [example("short", 6, 14), example("medium", 10, 50), example("long", 20, 130)]
    kinds = MODEL_KINDS if device.startswith("cuda") else MODEL_KINDS[:2]
    for dtype, bound in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        for kind in kinds:
            if not budget.left():
                table.add("1 exactness", f"{kind} {str(dtype)[6:]}", "skipped", note="step time budget spent")
                continue
            model = make_model(kind).to(device=device, dtype=dtype)
            reference = list(compute_gradient_stats(model, tokenizer, examples, EngineConfig("full-svd", ALL_TARGETS)))
            for schedule in ("in-hook", "after-backward"):
                config = EngineConfig("core", ALL_TARGETS, batch_size=3, stats_schedule=schedule)
                got = list(compute_gradient_stats(model, tokenizer, examples, config))
                bad = [r for r in got + reference if r.status != "ok"]
                worst = be.max_relative_difference(got, reference) if not bad else float("nan")
                verdict = "ok" if worst <= bound else f"OFF (bound {bound:.0e})"
                note = bad[0].reason[:80] if bad else "nuclear, σ_max, Frobenius vs full-svd"
                table.add("1 exactness", f"{kind} {str(dtype)[6:]} {schedule}", f"{worst:.1e} {verdict}", note=note)


def engine(table: Table, device: str, sizes: Sizes, dtype: Any) -> None:
    from tests.helpers.builders import make_tokenizer

    budget = Budget(sizes.step_seconds["engine"])
    tokenizer = make_tokenizer()
    for name in SHAPES:
        if not budget.left():
            table.add("2 engine", name, "skipped", note="step time budget spent")
            continue
        model = shaped_model(name, sizes, device, dtype)
        examples = detailed_examples(sizes.n_examples, sizes.tokens)
        args = be.parse_args(["--n-examples", str(sizes.n_examples), "--repeats", str(sizes.repeats),
                              "--batch-size", str(sizes.n_examples), "--max-length", str(2 * sizes.tokens)])
        only = ("core", "core-in-hook", "floor", "full-svd", "spectra")
        be.warm_up(model, tokenizer, examples[0], args, False, only)
        eng = be.time_engine(model, tokenizer, examples, args, False, only)
        run = be.runners(model, tokenizer, args, False, only)
        n = len(examples)
        for key, label in (("core-in-hook", "core, stats in the hook"), ("core", "core, stats after the backward"),
                           ("floor", "floor (fwd+bwd, no stats)"), ("full-svd", "full-svd (the study's)"),
                           ("spectra", "spectra alone")):
            _, peak = peak_of(device, lambda fn=run[key], batch=examples: fn(batch))
            table.add("2 engine", f"{name} {str(dtype)[6:]}, {n} × ~{sizes.tokens} tokens: {label}",
                      f"{eng[key]:.3f} s ({n / eng[key]:.2f} ex/s)", mib(peak, device))
        table.add("2 engine", f"{name}: core / floor − 1; (core − floor) / spectra alone",
                  f"{eng['core-in-hook'] / eng['floor'] - 1:.1%} in hook, {eng['core'] / eng['floor'] - 1:.1%} after; "
                  f"{(eng['core-in-hook'] - eng['floor']) / eng['spectra']:.2f}x in hook",
                  note=f"full-svd / core in hook {eng['full-svd'] / eng['core-in-hook']:.2f}x; "
                       f"agreement {eng.get('agreement', float('nan')):.1e}")
        del model


def matrix(table: Table, device: str, sizes: Sizes) -> None:
    size, tokens = sizes.matrix
    mat, peak = peak_of(device, lambda: be.time_matrix(size, tokens, device))
    table.add("3 matrix", f"{size}×{size} from T={tokens}: factor_stats / the study's SVD",
              f"{mat['factor']:.4f} s / {mat['full']:.3f} s = {mat['full'] / mat['factor']:.0f}x", mib(peak, device),
              f"forming G {mat['form_g']:.4f} s, spectrum {mat['spectrum']:.4f} s, agreement {mat['agreement']:.1e}")


def sweep(table: Table, device: str, sizes: Sizes, dtype: Any) -> None:
    from lg_pipeline.gradients.engine import EngineConfig, default_token_budget
    from tests.helpers.builders import make_tokenizer

    budget = Budget(sizes.step_seconds["sweep"])
    tokenizer = make_tokenizer()
    model = shaped_model("SmolLM2-135M", sizes, device, dtype)
    examples = detailed_examples(sizes.sweep_examples, sizes.tokens, offset=100)
    be.engine_run(model, tokenizer, examples[:2], EngineConfig(batch_size=2, max_length=2 * sizes.tokens))
    default = default_token_budget(device)
    configs = [(b, 1 << 30) for b in sizes.batch_sizes] + [(max(sizes.batch_sizes), t) for t in sizes.budgets]
    for batch_size, tokens in configs:
        label = f"SmolLM2-135M, batch {batch_size}, max_batch_tokens {'none' if tokens == 1 << 30 else tokens}"
        if not budget.left():
            table.add("4 sweep", label, "skipped", note="step time budget spent")
            continue
        config = EngineConfig(batch_size=batch_size, max_length=2 * sizes.tokens, max_batch_tokens=tokens)
        began = time.perf_counter()
        _, peak = peak_of(device, lambda config=config: be.engine_run(model, tokenizer, examples, config))
        seconds = time.perf_counter() - began
        note = "the default budget" if tokens == default else ""
        table.add("4 sweep", label, f"{len(examples) / seconds:.2f} ex/s", mib(peak, device), note)


def dynamics(table: Table, device: str, sizes: Sizes) -> None:
    """One SGD step on q/k/v/o: each probe's predicted change of logp_sum against the measured one."""
    import torch

    from lg_pipeline.dynamics.learning.influence import r_squared
    from lg_pipeline.dynamics.learning.measure import logprobs, probe_pass, train_pass
    from lg_pipeline.gradients.capture import grad_only_for
    from lg_pipeline.gradients.encoding import encode
    from lg_pipeline.gradients.loss import per_example_loss
    from lg_pipeline.gradients.padding import encoded_batch
    from lg_pipeline.gradients.targets import find_targets
    from tests.helpers.builders import make_tokenizer

    tokenizer = make_tokenizer()
    model = shaped_model("SmolLM2-135M", sizes, device, torch.float32)
    encode_all = lambda items: [encode(tokenizer, e, False, 2 * sizes.tokens) for e in items]  # noqa: E731
    train = encoded_batch(encode_all(detailed_examples(2, sizes.tokens // 2)), 0, device)
    probes = encoded_batch(encode_all(detailed_examples(6, sizes.tokens // 2, offset=50)), 0, device)
    targets = find_targets(model)
    params = dict(model.named_parameters())

    def step() -> tuple[Any, list[float], list[float]]:
        factors = train_pass(model, targets, train)
        names = [t.parameter for t in targets]
        with grad_only_for(model, names):
            loss = per_example_loss(model(input_ids=train.ids, attention_mask=train.mask).logits, train.labels).mean()
            grads = torch.autograd.grad(loss, [params[n] for n in names])
        updates = [-LEARNING_RATE * g for g in grads]
        effects = probe_pass(model, targets, probes, updates, factors)
        before = logprobs(model, probes)
        with torch.no_grad():
            for name, update in zip(names, updates, strict=True):
                params[name].add_(update)
        return effects, before, logprobs(model, probes)

    (effects, before, after), peak = peak_of(device, step)
    measured = [a - b for a, b in zip(after, before, strict=True)]
    predicted = effects.predicted.sum(1).tolist()
    table.add("5 dynamics", f"one SGD step (lr {LEARNING_RATE:g}) on q/k/v/o, 6 probes: R² predicted vs measured",
              f"{r_squared(predicted, measured):.4f}", mib(peak, device),
              f"max |measured| {max(abs(m) for m in measured):.2e}; kernel {tuple(effects.kernel.shape)}")


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench/results"))
    p.add_argument("--cpu", action="store_true", help="the CPU smoke even where CUDA is present")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda:
        print("no CUDA: CPU smoke only", flush=True)
    device, sizes = ("cuda", CUDA_SIZES) if cuda else ("cpu", SMOKE_SIZES)
    what = torch.cuda.get_device_name(0) if cuda else f"CPU smoke ({os.cpu_count()} cores), tiny sizes"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    table = Table(Path(args.out) / "gpu_check.md",
                  f"`bench/gpu_check.sh`, {stamp}: {what}; torch {torch.__version__}")
    began = time.monotonic()
    bf16 = torch.bfloat16 if cuda else torch.float32  # the GPU environment's dtype (LG_ENV=gpu)
    steps = (("exactness", lambda: exactness(table, device, sizes)),
             ("engine", lambda: engine(table, device, sizes, bf16)),
             ("matrix", lambda: matrix(table, device, sizes)),
             ("sweep", lambda: sweep(table, device, sizes, bf16)),
             ("dynamics", lambda: dynamics(table, device, sizes)))
    for name, fn in steps:
        print(f"{name} ({time.monotonic() - began:.0f} s in)", flush=True)
        try:
            fn()
        except Exception as exc:  # one failing step must not lose the others' rows
            table.add(name, "failed", f"{type(exc).__name__}: {str(exc)[:150]}")
    print(f"wrote {table.path} in {time.monotonic() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
