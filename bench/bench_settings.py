"""How much the encoding (`pair` vs `study`) and the dtype (bf16 vs fp32) change the statistics, on the release data.

For each setting, `core` computes every example's statistics; the curve is the mean
nuclear norm per (module, layer) over the examples. Printed per module against the
reference (fp32, `pair`): the mean and the largest relative difference |a − b| / |a| over
layers, and the same for the per-example loss. Not a timing: one run is enough.

    .venv/bin/python bench/bench_settings.py [--model smollm2-135m-instruct] [--file gsm8k_train_with_cot_gpt4o.json]
                                             [--n-examples 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RELEASE = ROOT.parent / "shared/layer_gradient_release/cot_500"

SETTINGS = {"fp32, pair (reference)": ("float32", "pair"), "fp32, study": ("float32", "study"),
            "bf16, pair": ("bfloat16", "pair")}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--file", default="gsm8k_train_with_cot_gpt4o.json", help="a file of the study's cot_500 release")
    p.add_argument("--n-examples", type=int, default=8)
    p.add_argument("--cache-dir", default=os.environ.get("LG_CACHE_DIR", str(ROOT / ".cache")))
    return p.parse_args(argv)


def statistics(model_name: str, dtype: str, encoding: str, examples: list[Any], cache_dir: str) -> Any:
    import pandas as pd

    from data_sources.models.catalog import open_model
    from lg_pipeline.gradients.engine import EngineConfig, compute_gradient_stats

    model, tokenizer, spec = open_model(model_name, dtype=dtype, cache_dir=cache_dir)
    results = list(compute_gradient_stats(model, tokenizer, examples, EngineConfig(chat=spec.chat, encoding=encoding)))
    bad = [r for r in results if r.status != "ok"]
    if bad:
        raise SystemExit(f"{dtype}/{encoding}: {bad[0].example_id} {bad[0].status}: {bad[0].reason}")
    return pd.DataFrame([row for r in results for row in r.rows])


def differences(reference: Any, other: Any) -> Any:
    """Per module: mean and max over layers of |a − b| / |a| of the mean nuclear norm; the same for the loss."""
    curve = lambda f: f.groupby(["module", "layer"]).nuclear_norm.mean()  # noqa: E731
    rel = ((curve(other) - curve(reference)).abs() / curve(reference).abs()).groupby(level="module")
    out = rel.agg(["mean", "max"])
    loss = lambda f: f.drop_duplicates("example_id").set_index("example_id").loss  # noqa: E731
    out.loc["loss (per example)"] = ((loss(other) - loss(reference)).abs() / loss(reference)).agg(["mean", "max"])
    return out


def main(argv: list[str] | None = None) -> int:
    from lg_pipeline.example import example_from_row

    args = parse_args(argv)
    path = RELEASE / args.file
    rows = json.loads(path.read_text())[: args.n_examples]
    examples = [example_from_row(r, f"{path.name} row {i}") for i, r in enumerate(rows)]
    print(f"bench_settings {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.model}, {len(examples)} "
          f"examples of {path.name}; relative difference of the mean nuclear norm per layer vs fp32/pair")
    frames = {label: statistics(args.model, *s, examples, args.cache_dir) for label, s in SETTINGS.items()}
    reference = frames.pop(next(iter(SETTINGS)))
    for label, frame in frames.items():
        print(f"\n{label} vs fp32, pair:")
        print(differences(reference, frame).to_string(float_format=lambda v: f"{v:.2%}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
