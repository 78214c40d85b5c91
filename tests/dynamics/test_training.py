import pytest
from transformers import TrainerCallback

from lg_pipeline.dynamics.training import TrainConfig, fine_tune, trainable_parameters
from lg_pipeline.errors import InputError
from tests.helpers.builders import make_model, make_tokenizer
from tests.helpers.dynamics import rows, wrong_rows

pytestmark = pytest.mark.slow  # trains

class _Batches(TrainerCallback):
    """Records the first token row of every training batch the trainer feeds the model."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.seen = []
        model.register_forward_pre_hook(lambda m, a, kw: self.seen.append(kw["input_ids"].tolist()), with_kwargs=True)


def test_batches_follow_the_given_order_and_wrap_around(single_thread):
    from lg_pipeline.gradients.encoding import encode

    model, tokenizer = make_model("llama-gqa"), make_tokenizer()
    data = rows(4)[::-1]  # an order that is not the ids' order
    seen = _Batches()
    fine_tune(model, tokenizer, data, TrainConfig(steps=3, batch_size=2, learning_rate=1e-3), callbacks=[seen])
    expected = [encode(tokenizer, e, False, 1024).input_ids for e in data + data[:2]]
    got = [[t for t in row if t != tokenizer.pad_token_id] for batch in seen.seen for row in batch]
    assert got == expected


def test_attention_scope_trains_only_q_k_v_o_and_restores_the_flags(single_thread):
    model, tokenizer = make_model("gemma3"), make_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fine_tune(model, tokenizer, rows(), TrainConfig(steps=1, batch_size=2, learning_rate=1e-2))
    changed = {n for n, p in model.named_parameters() if not (p.detach() == before[n]).all()}
    assert changed == set(trainable_parameters(model, "attention"))
    assert all(p.requires_grad for p in model.parameters())


def test_the_engine_loss_is_what_the_trainer_optimises(single_thread):
    import copy

    import torch

    from lg_pipeline.dynamics.learning.measure import to_batch
    from lg_pipeline.gradients.encoding import encode
    from lg_pipeline.gradients.loss import per_example_loss

    model, tokenizer = make_model("llama-mha"), make_tokenizer()
    reference = copy.deepcopy(model)
    result = fine_tune(model, tokenizer, rows(), TrainConfig(steps=1, batch_size=2, learning_rate=1e-3))
    batch = to_batch([encode(tokenizer, e, False, 1024) for e in rows(2)], tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        want = per_example_loss(reference(input_ids=batch.ids, attention_mask=batch.mask).logits, batch.labels).mean()
    assert result.log_history[0]["loss"] == pytest.approx(float(want), rel=1e-5)


def test_dpo_trains_with_a_frozen_reference(single_thread):
    model, tokenizer = make_model("qwen2"), make_tokenizer()
    config = TrainConfig(steps=2, batch_size=2, learning_rate=1e-2, objective="dpo", optimizer="adamw")
    result = fine_tune(model, tokenizer, rows(), config, rejected=wrong_rows())
    assert result.steps == 2
    assert result.log_history[1]["rewards/margins"] > 0


def test_bad_settings_name_the_input():
    model, tokenizer = make_model("llama-gqa"), make_tokenizer()
    with pytest.raises(InputError, match="--objective dpo needs --wrong"):
        fine_tune(model, tokenizer, rows(), TrainConfig(objective="dpo"))
    with pytest.raises(InputError, match="--optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(InputError, match="--steps"):
        TrainConfig(steps=0)
    import torch

    class NoAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

    with pytest.raises(InputError, match="q_proj"):
        trainable_parameters(NoAttention(), "attention")
