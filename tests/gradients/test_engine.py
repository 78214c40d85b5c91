"""The `core` engine against the study's `full-svd` reference on tiny random models of each studied family.

Every comparison computes both sides here; nothing is a stored number. Example
lengths straddle the target matrices' min(out, in) so that every code path of
`factor_stats` runs: T − 1 well below min(out, in) (spectrum from the core, σ_min = 0; the
last position's Δ is 0), T − 1 just below it (from G's own Gram, still σ_min = 0) and
T − 1 ≥ min(out, in) (from G's own Gram). `core` runs with the chunked loss (every tiny
family has a plain head), on both encodings.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from lg_pipeline.errors import InputError
from lg_pipeline.example import Example
from lg_pipeline.gradients import engine, spectra
from lg_pipeline.gradients.encoding import encode
from lg_pipeline.gradients.engine import EngineConfig, compute_gradient_stats
from lg_pipeline.gradients.targets import find_targets
from lg_pipeline.vocabulary import ATTENTION
from tests.helpers.builders import (
    ALL_TARGETS,
    MODEL_KINDS,
    VOCAB,
    example,
    make_model,
    poison_forward,
    results_frame,
    stats_mismatches,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# 20 tokens (< 32 = min dim of k/v under GQA), 60 (between 32 and 64, close enough to 64 that G's Gram is
# cheaper than the core: see spectra.core_is_cheaper), 150 (> every min dim).
EXAMPLES = [example("short", 6, 14), example("medium", 10, 50), example("long", 20, 130)]


def run(model: Any, tokenizer: Any, examples: list[Example], **config: Any) -> list:
    results = list(compute_gradient_stats(model, tokenizer, examples, EngineConfig(**config)))
    assert [r.status for r in results] == ["ok"] * len(examples), [r.reason for r in results]
    return results


# Statistics computed in the hook as each gradient arrives (the CUDA schedule), or after the backward on 2 threads.
IN_HOOK, AFTER_BACKWARD = {"stats_schedule": "in-hook"}, {"stats_schedule": "after-backward", "stats_workers": 2}
SCHEDULES = pytest.mark.parametrize("schedule", [IN_HOOK, AFTER_BACKWARD], ids=["in-hook", "after-backward"])


def core_and_reference(model: Any, tokenizer: Any, examples: list[Example], schedule: dict = IN_HOOK, **config: Any):
    core = results_frame(run(model, tokenizer, examples, method="core", batch_size=4, **schedule, **config))
    reference = results_frame(run(model, tokenizer, examples, method="full-svd", **config))
    return core, reference


def weight_shapes(model: Any, targets: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    modules = dict(model.named_modules())
    return {t.parameter: tuple(modules[t.module_path].weight.shape) for t in find_targets(model, targets)}


def min_dims(model: Any, targets: tuple[str, ...]) -> dict[str, int]:
    return {name: min(shape) for name, shape in weight_shapes(model, targets).items()}


def assert_every_route_ran(frame: Any, shapes: dict[str, tuple[int, int]]) -> None:
    """Rows of every route: T − 1 well below min(out, in) (the core), just below it and above it (G's Gram)."""
    t = frame.n_tokens.to_numpy() - 1
    shape = frame.index.get_level_values("parameter").map(shapes)
    below = t < np.array([min(s) for s in shape])
    core = np.array([spectra.core_is_cheaper(int(n), *s) for n, s in zip(t, shape, strict=True)])
    assert (below & core).any() and (below & ~core).any() and (~below).any(), "routes not all taken"
    assert (frame.sigma_min[below] == 0).all(), "a rank-deficient gradient got a non-zero σ_min"


@SCHEDULES
@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("encoding", ["pair", "study"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_core_matches_full_svd_on_every_family(kind, encoding, batch_size, schedule, tokenizer):
    model = make_model(kind)
    config = {"targets": ALL_TARGETS, "encoding": encoding}
    core = results_frame(run(model, tokenizer, EXAMPLES, method="core", batch_size=batch_size, **schedule, **config))
    reference = results_frame(run(model, tokenizer, EXAMPLES, method="full-svd", **config))
    assert stats_mismatches(core, reference) == []
    assert_every_route_ran(core, weight_shapes(model, ALL_TARGETS))
    assert set(core.module) == set(ALL_TARGETS) and set(core.layer) == {0, 1}


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_sigma_min_is_exactly_zero_at_t_equal_to_min_out_in(kind, tokenizer):
    """T = min(out, in): the last position's Δ is 0, so rank(G) ≤ T − 1 and σ_min is 0, not rounding noise."""
    model = make_model(kind)
    dims = min_dims(model, ALL_TARGETS)
    examples = [example(f"t{d}", 6, d - 6) for d in sorted(set(dims.values()))]
    core, reference = core_and_reference(model, tokenizer, examples, targets=ALL_TARGETS)
    assert stats_mismatches(core, reference) == []
    exact = [(e, p) for e, p in core.index if core.at[(e, p), "n_tokens"] == dims[p]]
    assert exact, "no example has T = min(out, in)"
    assert all(core.at[key, "sigma_min"] == 0 for key in exact)
    assert all(0 < reference.at[key, "sigma_min"] <= 1e-4 * reference.at[key, "sigma_max"] for key in exact)


@pytest.mark.parametrize("encoding", ["pair", "study"])
def test_core_matches_full_svd_with_chat_template(llama, tokenizer, encoding):
    core, reference = core_and_reference(llama, tokenizer, EXAMPLES, targets=ALL_TARGETS, chat=True, encoding=encoding)
    assert stats_mismatches(core, reference) == []


@SCHEDULES
def test_inputs_shared_by_layers_are_never_mixed_up_across_layers(schedule, tokenizer):
    """q/k/v (and gate/up) share one QR of their common input, cached by tensor identity.

    A deeper model frees and reallocates many tensors during the forward: a cache keyed
    on a recycled id() would hand one layer another layer's factor.
    """
    model = make_model("llama-gqa", layers=6)
    short = [example("a", 5, 14), example("b", 8, 9), example("c", 4, 20)]
    core, reference = core_and_reference(model, tokenizer, short, schedule, targets=ALL_TARGETS)
    assert stats_mismatches(core, reference) == []


def test_qwen2_targets_have_biases_and_gemma3_norms_are_not_targets():
    qwen = make_model("qwen2")
    attention = qwen.model.layers[0].self_attn
    assert all(m.bias is not None for m in (attention.q_proj, attention.k_proj, attention.v_proj))
    gemma3 = make_model("gemma3")
    paths = [t.module_path for t in find_targets(gemma3, ATTENTION)]
    assert len(paths) == 4 * 2 and not any("norm" in p for p in paths)
    assert any(name.endswith("q_norm") for name, _ in gemma3.named_modules())
    with pytest.raises(InputError, match="q_norm.*not a torch.nn.Linear"):
        find_targets(gemma3, ["q_norm"])


def test_loss_is_the_models_own_loss_for_each_example(llama, tokenizer):
    examples = [*EXAMPLES, example("tiny", 3, 2)]
    by_method = {m: results_frame(run(llama, tokenizer, examples, method=m)) for m in ("core", "full-svd")}
    for ex in examples:
        enc = encode(tokenizer, ex, chat=False, max_length=1024)
        with torch.no_grad():
            expected = llama(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels()])).loss.item()
        for method, frame in by_method.items():
            assert frame.loc[ex.example_id].loss.iloc[0] == pytest.approx(expected, rel=1e-5), (method, ex.example_id)
            assert frame.loc[ex.example_id].n_response_tokens.iloc[0] == enc.n_response_tokens


VARIED = [example("v1", 8, 4), example("v2", 30, 170), example("v3", 5, 40), example("v4", 12, 90), example("v5", 6, 9)]


@SCHEDULES
def test_batch_of_four_equals_batch_of_one(llama, tokenizer, schedule):
    batched = results_frame(run(llama, tokenizer, VARIED, method="core", batch_size=4, targets=ALL_TARGETS, **schedule))
    single = results_frame(run(llama, tokenizer, VARIED, method="core", batch_size=1, targets=ALL_TARGETS))
    assert stats_mismatches(batched, single) == []
    # Not vacuous: examples differ from one another far beyond the tolerance.
    norms = batched.xs("model.layers.1.self_attn.o_proj.weight", level="parameter").nuclear_norm
    assert norms.nunique() == len(VARIED)



def test_a_token_budget_splits_batches_without_changing_a_number(llama, tokenizer, monkeypatch):
    """20-, 60- and 150-token examples under 150 padded tokens per pass: [short, medium] (2 × 60), then [long]."""
    passes: list[list[str]] = []
    real = engine._core_batch

    def spy(model: Any, targets: Any, batch: list, *args: Any) -> Any:
        passes.append([e.example_id for e in batch])
        return real(model, targets, batch, *args)

    monkeypatch.setattr(engine, "_core_batch", spy)
    budgeted = results_frame(run(llama, tokenizer, EXAMPLES, batch_size=4, max_batch_tokens=150, targets=ALL_TARGETS))
    assert passes == [["short", "medium"], ["long"]]
    passes.clear()
    whole = results_frame(run(llama, tokenizer, EXAMPLES, batch_size=4, targets=ALL_TARGETS))
    assert passes == [["short", "medium", "long"]]  # 3 × 150 padded tokens: within a CPU's default budget
    assert stats_mismatches(budgeted, whole) == []


class _OtherPad:
    """The same tokenizer with another pad id: padding content must not matter."""

    def __init__(self, tokenizer: Any, pad_token_id: int):
        self._tokenizer, self.pad_token_id = tokenizer, pad_token_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokenizer(*args, **kwargs)


def test_pad_token_id_does_not_change_statistics(llama, tokenizer):
    base = results_frame(run(llama, tokenizer, VARIED, method="core", batch_size=5, targets=ALL_TARGETS))
    for pad in (VOCAB["a"], VOCAB["<eos>"]):
        other = results_frame(
            run(llama, _OtherPad(tokenizer, pad), VARIED, method="core", batch_size=5, targets=ALL_TARGETS)
        )
        assert stats_mismatches(other, base) == [], pad


def test_another_batch_members_length_does_not_leak(llama, tokenizer):
    """Lengthening a neighbour changes the padding width and the batch's token count, not this example."""
    short, neighbour = example("me", 6, 20), example("neighbour", 6, 30)
    grown = replace(neighbour, response=neighbour.response + " garbage" * 25)
    before = results_frame(run(llama, tokenizer, [short, neighbour], method="core", targets=ALL_TARGETS))
    after = results_frame(run(llama, tokenizer, [short, grown], method="core", targets=ALL_TARGETS))
    assert stats_mismatches(after.loc[["me"]], before.loc[["me"]]) == []
    assert stats_mismatches(after.loc[["neighbour"]], before.loc[["neighbour"]]) != []


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_both_schedules_agree_with_full_svd_on_the_chat_template_and_the_study_encoding(kind, tokenizer):
    """Every tiny family, both schedules, on the other encoding and the chat path (the CUDA schedule, on a CPU)."""
    model = make_model(kind)
    config = {"targets": ALL_TARGETS, "encoding": "study", "chat": True}
    reference = results_frame(run(model, tokenizer, VARIED, method="full-svd", **config))
    for schedule in (IN_HOOK, AFTER_BACKWARD):
        core = results_frame(run(model, tokenizer, VARIED, method="core", batch_size=5, **schedule, **config))
        assert stats_mismatches(core, reference) == [], schedule


def test_the_schedule_is_the_configured_one_else_the_devices(llama):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert engine.stats_schedule(EngineConfig(), cpu) == "after-backward"
    assert engine.stats_schedule(EngineConfig(), cuda) == "in-hook"
    assert engine.stats_schedule(EngineConfig(stats_workers=0), cpu) == "in-hook"  # the setting's older meaning
    forced = EngineConfig(stats_schedule="after-backward", stats_workers=0)
    assert engine.stats_schedule(forced, cuda) == "after-backward"
    with pytest.raises(InputError, match="stats schedule 'hook'"):
        engine.check_config(llama, EngineConfig(stats_schedule="hook"))


def test_unknown_target_suffix_is_an_input_error_naming_it(llama, tokenizer):
    with pytest.raises(InputError, match="fc1"):
        find_targets(llama, ("q_proj", "fc1"))
    with pytest.raises(InputError, match="w_qkv"):
        list(compute_gradient_stats(llama, tokenizer, EXAMPLES, EngineConfig(targets=("w_qkv",))))


def _tiny_opt() -> Any:
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=len(VOCAB),
        hidden_size=64,
        ffn_dim=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        max_position_embeddings=512,
        pad_token_id=VOCAB["<pad>"],
        bos_token_id=VOCAB["<bos>"],
        eos_token_id=VOCAB["<eos>"],
    )
    torch.manual_seed(0)
    return OPTForCausalLM(config).eval()


def test_fc1_fc2_targets_by_custom_suffix(tokenizer):
    model = _tiny_opt()
    core, reference = core_and_reference(model, tokenizer, EXAMPLES, targets=("fc1", "fc2"))
    assert stats_mismatches(core, reference) == []
    assert set(core.module) == {"fc1", "fc2"} and set(core.layer) == {0, 1}
    assert_every_route_ran(core, weight_shapes(model, ("fc1", "fc2")))


def test_a_failing_example_fails_alone(llama, tokenizer, monkeypatch):
    bad = Example("bad", "prompt", "a ~ response")
    examples = [VARIED[0], VARIED[1], bad, VARIED[3], VARIED[4]]
    clean = results_frame(run(llama, tokenizer, VARIED, method="core", batch_size=4))
    poison_forward(llama, monkeypatch)
    results = list(compute_gradient_stats(llama, tokenizer, examples, EngineConfig(batch_size=4)))
    assert [(r.example_id, r.status) for r in results] == [
        (e.example_id, "failed" if e is bad else "ok") for e in examples
    ]
    assert results[2].reason == "ValueError: poisoned example" and results[2].rows == []
    survivors = results_frame([r for r in results if r.status == "ok"])
    assert stats_mismatches(survivors, clean.drop(index="v3", level="example_id")) == []
    assert all(p.requires_grad for p in llama.parameters()), "requires_grad not restored after a failure"
