"""The chunked SFT loss against the materialised one, on Gemma-3-270M's head shape (262,144 × 640).

Forward and backward (to the hidden states) of the cross-entropy over 808 response positions (an AQuA
Detailed-CoT example), for a few chunk budgets (fp32 logits per chunk), the materialised loss beside
them, each timed in this one run (best of `--repeats`), with the ratio to the materialised loss. The
head matrix is random: only the shapes matter for the time. No target is asserted.

    .venv/bin/python bench/bench_loss.py [--positions 808] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import best  # noqa: E402  (one timing rule for every bench)

VOCAB, WIDTH = 262_144, 640


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.nn.functional as F

    from lg_pipeline.gradients import loss

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=808)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, WIDTH, generator=gen) * 0.02
    hidden = torch.randn(args.positions, WIDTH, generator=gen)
    targets = torch.randint(0, VOCAB, (args.positions,), generator=gen)

    def materialised() -> None:
        rows = hidden.clone().requires_grad_(True)
        F.cross_entropy(F.linear(rows, weight).float(), targets, reduction="none").sum().backward()

    def chunked(budget: int) -> Callable[[], None]:
        def run() -> None:
            saved, loss.LOGIT_BUDGET = loss.LOGIT_BUDGET, budget
            try:
                rows = hidden.clone().requires_grad_(True)
                loss.ChunkedLinearCrossEntropy.apply(rows, weight, None, targets, None).sum().backward()
            finally:
                loss.LOGIT_BUDGET = saved
        return run

    print(f"bench_loss {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.positions} positions, "
          f"vocabulary {VOCAB}, width {WIDTH}; torch threads {torch.get_num_threads()}; best of {args.repeats}")
    reference = best(materialised, args.repeats, warm_up=False)
    print(f"{'materialised logits':<40}{reference:>8.2f} s")
    for power in (24, 25, 26):
        budget = 2**power
        seconds = best(chunked(budget), args.repeats, warm_up=False)
        rows = max(1, budget // VOCAB)
        label = f"chunks of 2^{power} logits ({rows} positions)"
        marker = "  (default)" if budget == loss.LOGIT_BUDGET else ""
        print(f"{label:<40}{seconds:>8.2f} s{seconds / reference:>8.2f}x{marker}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
