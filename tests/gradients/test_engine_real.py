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
