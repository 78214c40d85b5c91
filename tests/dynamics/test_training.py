import pytest
from transformers import TrainerCallback

from lg_pipeline.dynamics.training import TrainSettings, fine_tune, trainable_parameters
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
    fine_tune(model, tokenizer, data, TrainSettings(steps=3, batch_size=2, learning_rate=1e-3), callbacks=[seen])
    expected = [encode(tokenizer, e, False, 1024).input_ids for e in data + data[:2]]
    got = [[t for t in row if t != tokenizer.pad_token_id] for batch in seen.seen for row in batch]
    assert got == expected


def test_attention_scope_trains_only_q_k_v_o_and_restores_the_flags(single_thread):
    model, tokenizer = make_model("gemma3"), make_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fine_tune(model, tokenizer, rows(), TrainSettings(steps=1, batch_size=2, learning_rate=1e-2))
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
    result = fine_tune(model, tokenizer, rows(), TrainSettings(steps=1, batch_size=2, learning_rate=1e-3))
    batch = to_batch([encode(tokenizer, e, False, 1024) for e in rows(2)], tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        want = per_example_loss(reference(input_ids=batch.ids, attention_mask=batch.mask).logits, batch.labels).mean()
    assert result.log_history[0]["loss"] == pytest.approx(float(want), rel=1e-5)


def test_dpo_trains_with_a_frozen_reference(single_thread):
    model, tokenizer = make_model("qwen2"), make_tokenizer()
    config = TrainSettings(steps=2, batch_size=2, learning_rate=1e-2, objective="dpo", optimizer="adamw")
    result = fine_tune(model, tokenizer, rows(), config, rejected=wrong_rows())
    assert result.steps == 2
    assert result.log_history[1]["rewards/margins"] > 0


@pytest.mark.parametrize(
    ("steps", "epochs", "n_rows", "batch_size", "want"),
    [
        (7, 3.0, 8, 2, 7),  # steps win
        (None, 1.0, 8, 2, 4),
        (None, 2.0, 5, 2, 6),  # a pass of 5 rows is 3 batches (the last one short)
        (None, 0.5, 5, 2, 2),
        (None, 0.3, 10, 1, 3),  # not 4 from 0.3 × 10 = 3.0000000000000004
    ],
)
def test_steps_are_total_steps_and_epochs_are_passes_of_whole_batches(steps, epochs, n_rows, batch_size, want):
    config = TrainSettings(steps=steps, epochs=epochs, batch_size=batch_size)
    assert config.total_steps(n_rows) == want


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_epochs_train_that_many_passes(single_thread, objective):
    model, tokenizer = make_model("llama-gqa"), make_tokenizer()
    config = TrainSettings(steps=None, epochs=2.0, batch_size=2, learning_rate=1e-3, objective=objective)
    seen = _Batches()
    wrong = wrong_rows(3) if objective == "dpo" else None
    result = fine_tune(model, tokenizer, rows(3), config, callbacks=[seen], rejected=wrong)
    assert result.steps == 4 == config.total_steps(3)
    if objective == "sft":  # 3 rows in batches of 2, twice: [r0 r1] [r2] [r0 r1] [r2]
        assert [len(batch) for batch in seen.seen] == [2, 1, 2, 1]


def test_bad_settings_name_the_setting():
    model, tokenizer = make_model("llama-gqa"), make_tokenizer()
    with pytest.raises(InputError, match="objective dpo needs the rejected responses"):
        fine_tune(model, tokenizer, rows(), TrainSettings(objective="dpo"))
    with pytest.raises(InputError, match="optimizer: must be one of sgd, adamw, got 'lion'"):
        TrainSettings(optimizer="lion")
    with pytest.raises(InputError, match="steps: give a positive number of steps"):
        TrainSettings(steps=0)
    import torch

    class NoAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

    with pytest.raises(InputError, match="q_proj"):
        trainable_parameters(NoAttention(), "attention")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"learning_rate": float("inf")}, "learning_rate: must be a finite number above 0, got inf"),
        ({"learning_rate": float("nan")}, "learning_rate: must be a finite number above 0, got nan"),
        ({"learning_rate": 0.0}, "learning_rate: must be a finite number above 0, got 0.0"),
        ({"seed": -1}, "seed: must be an integer from 0 to 4294967295, got -1"),
        ({"batch_size": 0}, "batch_size: must be an integer at least 1, got 0"),
        ({"max_length": 1}, "max_length: must be an integer at least 2, got 1"),
        ({"trainable": "some"}, "trainable: must be one of attention, all, got 'some'"),
        ({"objective": "ppo"}, "objective: must be one of sft, dpo, got 'ppo'"),
        ({"steps": None, "epochs": None}, "steps: give a positive number of steps (or epochs), got None"),
        ({"dpo_beta": -1.0}, "dpo_beta: must be a finite number above 0, got -1.0"),
    ],
)
def test_each_bad_setting_is_named_on_construction(fields, problem):
    from lg_pipeline.errors import SettingsError

    with pytest.raises(SettingsError) as caught:
        TrainSettings(**fields)
    assert str(caught.value) == problem


def test_every_bad_setting_of_a_run_comes_in_one_message_named_per_front_end():
    from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings
    from lg_pipeline.errors import SettingsError

    with pytest.raises(SettingsError) as caught:
        LearningDynamicsSettings.build(train={"learning_rate": -1.0, "seed": -2}, eval_every=0, n_probes=1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("learning_rate: must be a finite number above 0") and "; seed: " in message
    assert "; eval_every: must be an integer at least 1, got 0" in message
    flags = caught.value.render({"learning_rate": "--lr", "eval_every": "--eval-every", "seed": "--seed"})
    assert flags.startswith("--lr: must be") and "--eval-every: must be" in flags


def test_a_loss_that_is_not_finite_stops_training_naming_the_step(single_thread):
    from lg_pipeline.errors import RunStopped

    model, tokenizer = make_model("llama-gqa"), make_tokenizer()
    stopped = r"step \d+: the training loss is (nan|inf) .*lower learning_rate \(it is 1e\+30\)"
    with pytest.raises(RunStopped, match=stopped):
        fine_tune(model, tokenizer, rows(), TrainSettings(steps=4, batch_size=2, learning_rate=1e30))
