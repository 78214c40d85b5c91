"""The packaged SmolLM2-135M-Instruct: `core` agrees with the study's `full-svd` on a real model and real text.

Marked slow (it loads a real model) but run by default: ~10-20 s once the GGUF is converted in the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.gradients.engine import EngineConfig, compute_gradient_stats
from lg_pipeline.vocabulary import ATTENTION
from tests.helpers.builders import results_frame, stats_mismatches

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

EXAMPLES = [
    Example("gsm", "Natalia sold 48 clips in April and half as many in May. How many in total?",
            "In May she sold 48 / 2 = 24 clips. In total she sold 48 + 24 = 72 clips. The answer is 72."),
    Example("fact", "Is the sun a star?", "Yes. The sun is a G-type main-sequence star."),
]


@pytest.fixture(scope="module")
def smollm2():
    from data_sources.models.catalog import open_model

    cache = os.environ.get("LG_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache"))
    try:
        model, tokenizer, spec = open_model("smollm2-135m-instruct", cache_dir=cache)
    except InputError as exc:  # the model's package is not installed here
        pytest.skip(str(exc))
    return model, tokenizer, spec


def test_smollm2_core_matches_full_svd(smollm2):
    model, tokenizer, spec = smollm2
    frames = {}
    for method in ("core", "full-svd"):
        config = EngineConfig(method=method, targets=ATTENTION, batch_size=2, chat=spec.chat)
        results = list(compute_gradient_stats(model, tokenizer, EXAMPLES, config))
        assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
        frames[method] = results_frame(results)
    assert stats_mismatches(frames["core"], frames["full-svd"]) == []
    assert len(frames["core"]) == 2 * 4 * model.config.num_hidden_layers


RELEASE_AQUA = Path(__file__).resolve().parents[3] / "shared/layer_gradient_release/cot_500"
RELEASE_AQUA = RELEASE_AQUA / "aqua_train_with_cot_gpt4o.json"


def independent_full_svd(model, tokenizer, examples, chat: bool):
    """The study's method written out here, apart from the engine: one backward per example with every studied
    weight's gradient materialised, then `torch.linalg.svdvals` and the entries of each gradient."""
    import numpy as np
    import pandas as pd
    import torch

    from lg_pipeline.gradients.encoding import encode
    from lg_pipeline.schema import MATRIX_STATS
    from tests.helpers.materialised import example_gradients

    params = dict(model.named_parameters())
    names = [n for n in params if n.rsplit(".", 2)[-2] in ATTENTION]
    saved = {n: p.requires_grad for n, p in params.items()}
    rows = []
    try:
        for n, p in params.items():
            p.requires_grad_(n in names)
        for example in examples:
            n_tokens = encode(tokenizer, example, chat, 1024).n_tokens
            loss, grads = example_gradients(model, tokenizer, example, chat)
            for name in names:
                g = grads[name].double()
                s = torch.linalg.svdvals(grads[name]).double()  # the study's fp32 SVD (values only)
                # The effective rank counts values at or below fp32 rounding of G as 0 (numpy's matrix_rank rule).
                kept = torch.where(s > max(g.shape) * np.finfo(np.float32).eps * s.max(), s, 0.0)
                p_ = kept / kept.sum()
                entropy = -float(torch.special.xlogy(p_, p_).sum())
                values = [float(s.sum()), float(s.max()), float(s.min()), float(torch.linalg.norm(g)), float(g.mean()),
                          float(g.max()), float(g.min()), float(np.exp(entropy)), float((g * g).sum() / s.max() ** 2)]
                rows.append({"example_id": example.example_id, "parameter": name, "loss": loss,
                             "n_tokens": n_tokens, **dict(zip(MATRIX_STATS, values, strict=True))})
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(saved[n])
    return pd.DataFrame(rows).set_index(["example_id", "parameter"])


@pytest.mark.release
@pytest.mark.skipif(not RELEASE_AQUA.is_file(), reason=f"the study's release is not at {RELEASE_AQUA}")
def test_the_in_hook_schedule_from_the_command_line_equals_an_independent_full_svd_on_released_aqua(
    smollm2, tmp_path, single_thread
):
    """`lg-pipeline gradients --stats-schedule in-hook` on a CPU, two released AQuA Detailed-CoT examples."""
    import json

    import pandas as pd

    from lg_pipeline.cli import main
    from lg_pipeline.io.study_json import load_study_json

    model, tokenizer, spec = smollm2
    data = tmp_path / "aqua.json"
    data.write_text(json.dumps(json.loads(RELEASE_AQUA.read_text())[:2]))
    out = tmp_path / "stats.parquet"
    cache = os.environ.get("LG_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache"))
    argv = ["gradients", "--model", "smollm2-135m-instruct", "--data", str(data), "--out", str(out),
            "--stats-schedule", "in-hook", "--batch-size", "2", "--cache-dir", cache]
    assert main(argv) == 0
    got = pd.read_parquet(out).set_index(["example_id", "parameter"]).sort_index()
    reference = independent_full_svd(model, tokenizer, load_study_json(data), spec.chat).sort_index()
    assert len(got) == 2 * 4 * model.config.num_hidden_layers
    assert stats_mismatches(got[reference.columns], reference) == []
