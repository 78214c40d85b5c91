"""Benchmark learning-dynamics measurement: what a measured eval step costs next to lighter ones.

From one fine-tuning run (SGD, in order, `DynamicsCallback` at every `--eval-every` steps),
each eval step's phases are timed side by side:
- measured eval step = the training step + the batch pass (kernel factors, engine statistics)
  + the probe pass at θ_s (logp_sum, predicted change per matrix, NTK) + logp_sum at θ_{s+1};
- probe log-probabilities only (what the learning-dynamics code of Ren & Sutherland does) = the
  training step + logp_sum at θ_s (no gradient; timed in the same step) + logp_sum at θ_{s+1};
- a plain training step = the mean of the steps with no measurement.
Printed: measured / log-probabilities-only (target ≤ 2.5×) and measured / plain step, per eval
step and in total. The load average is printed; no target is asserted.

    .venv/bin/python bench/bench_dynamics.py [--model smollm2-135m-instruct] [--level none] [--steps 6]
        [--eval-every 2] [--n-probes 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RELEASE = ROOT.parent / "shared/layer_gradient_release"
RELEASE_FILES = {"detailed": "gsm8k_train_with_cot_gpt4o.json", "none": "gsm8k_train_no_cot.json"}


def _rows(level: str):
    """The study's GSM8K rows when the release folder is here, else the built-in demo rows."""
    from lg_pipeline.io.study_json import load_study_json

    path = RELEASE / "cot_500" / RELEASE_FILES[level]
    if path.is_file():
        wrong = RELEASE / "cot_500_wrong_answer_shuffle" / RELEASE_FILES[level]
        return load_study_json(path), load_study_json(wrong), str(path)
    demo = ROOT / "data_sources/datasets/demo_data/commonsense_demo.json"
    return load_study_json(demo), None, str(demo)


def main() -> int:
    import torch
    from transformers import TrainerCallback

    from data_sources.models.catalog import open_model
    from lg_pipeline.dynamics.learning.callback import DynamicsCallback, is_eval_step
    from lg_pipeline.dynamics.learning.probes import build_probes, trained_rows
    from lg_pipeline.dynamics.training import TrainSettings, fine_tune

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--level", choices=sorted(RELEASE_FILES), default="none")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--n-probes", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", ".cache"))
    args = p.parse_args()

    train, wrong, source = _rows(args.level)
    model, tokenizer, spec = open_model(args.model, args.device, args.dtype, args.cache_dir)
    probes = build_probes(train, args.n_probes, trained_rows(len(train), args.steps, args.batch_size), 0, wrong=wrong)

    class StepClock(TrainerCallback):
        """Wall time of each step; runs before the measuring callback's hooks of the same event."""

        def __init__(self):
            self.seconds = {}

        def on_step_begin(self, a, state, c, **kw):
            self._sync()
            self.started = time.perf_counter()

        def on_step_end(self, a, state, c, **kw):
            self._sync()
            self.seconds[state.global_step - 1] = time.perf_counter() - self.started

        def _sync(self):
            if torch.cuda.is_available() and args.device.startswith("cuda"):
                torch.cuda.synchronize()

    clock = StepClock()
    measure = DynamicsCallback(
        tokenizer, probes, args.eval_every, spec.chat, args.max_length, train_examples=train, time_logprobs_only=True
    )
    config = TrainSettings(
        learning_rate=1e-4, steps=args.steps, batch_size=args.batch_size, chat=spec.chat, max_length=args.max_length
    )
    fine_tune(model, tokenizer, train, config, callbacks=[clock, measure])

    print(f"model {spec.display_name} on {args.device}, data {source}, {len(probes)} probes, load {os.getloadavg()}")
    plain = [t for s, t in clock.seconds.items() if not is_eval_step(s, args.eval_every)]
    plain_step = sum(plain) / len(plain) if plain else float("nan")
    totals = {"measured": 0.0, "logprobs only": 0.0}
    for step, phases in sorted(measure.seconds.items()):
        update = clock.seconds[step] - phases.get("train_pass", 0.0)  # the clock's step also spans the batch pass
        measured = update + phases.get("train_pass", 0.0) + phases["probe_pass"] + phases["logprobs_after"]
        only = update + phases["logprobs_before"] + phases["logprobs_after"]
        totals["measured"] += measured
        totals["logprobs only"] += only
        print(
            f"eval step {step}: measured {measured:.2f}s = update {update:.2f} + batch pass "
            f"{phases.get('train_pass', 0.0):.2f} + probe pass {phases['probe_pass']:.2f} + logp after "
            f"{phases['logprobs_after']:.2f}; logp-only {only:.2f}s; ratio {measured / only:.2f}x"
        )
    print(f"plain training step: {plain_step:.2f}s (mean of {len(plain)})")
    ratio = totals["measured"] / totals["logprobs only"]
    n_eval = max(1, len(measure.seconds))
    print(f"measured eval step / probe-log-probabilities-only step: {ratio:.2f}x (target <= 2.5x)")
    print(f"measured eval step / plain training step: {totals['measured'] / n_eval / plain_step:.2f}x (information)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
