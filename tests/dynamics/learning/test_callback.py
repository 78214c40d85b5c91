import copy

import pandas as pd
import pytest

from lg_pipeline.dynamics.learning.callback import DynamicsCallback
from lg_pipeline.dynamics.learning.probes import build_probes
from lg_pipeline.dynamics.training import TrainSettings, fine_tune
from tests.helpers.builders import make_model, make_tokenizer
from tests.helpers.dynamics import one_step, rows, wrong_rows

pytestmark = pytest.mark.slow  # trains

def _sorted(frame, keys):
    return frame.sort_values(keys).reset_index(drop=True)


def test_batched_probe_passes_equal_one_probe_at_a_time(single_thread):
    tokenizer = make_tokenizer()
    model = make_model("gemma2")
    _, batched, _ = one_step(copy.deepcopy(model), tokenizer, probe_batch_size=8)
    _, single, _ = one_step(model, tokenizer, probe_batch_size=1)
    for table, keys in (
        ("influence", ["probe_id", "parameter"]),
        ("kernel", ["probe_id", "example_id", "layer", "module"]),
        ("logprobs", ["step", "probe_id"]),
    ):
        a, b = _sorted(batched.tables()[table], keys), _sorted(single.tables()[table], keys)
        value = {"influence": "predicted_delta", "kernel": "grad_inner", "logprobs": "logp_sum"}[table]
        pd.testing.assert_series_equal(a[value], b[value], rtol=1e-4, atol=1e-7)


def test_every_eval_step_records_before_and_after_and_every_step_a_train_log_row(single_thread):
    model, tokenizer = make_model("llama-mha"), make_tokenizer()
    probes = build_probes(rows(), 3, 6, seed=1, wrong=wrong_rows())
    callback = DynamicsCallback(tokenizer, probes, eval_every=2, train_examples=rows())
    fine_tune(model, tokenizer, rows(), TrainSettings(steps=4, batch_size=2, learning_rate=1e-3), callbacks=[callback])
    tables = callback.tables()
    assert sorted(tables["influence_summary"].step.unique()) == [0, 2]
    assert sorted(tables["logprobs"].step.unique()) == [0, 1, 2, 3]
    assert list(tables["train_log"].step) == [0, 1, 2, 3]
    assert (tables["train_log"].update_norm > 0).all() and tables["train_log"].loss.notna().all()
    stats = tables["train_gradient_stats"]
    assert set(stats[stats.step == 2].example_id) == {"e4", "e5"}  # the third in-order batch
    assert (stats.nuclear_norm > 0).all()


def test_callback_works_inside_a_plain_user_trainer(tmp_path, single_thread):
    import datasets
    from transformers import Trainer, TrainingArguments

    from lg_pipeline.dynamics.training import RightPadCollator, encode_examples

    model, tokenizer = make_model("llama-gqa"), make_tokenizer()
    encoded, _ = encode_examples(tokenizer, rows(), TrainSettings())
    data = datasets.Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels()} for e in encoded])
    probes = build_probes(rows(), 3, 8, seed=0)
    callback = DynamicsCallback(tokenizer, probes, eval_every=1)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-4,
        optim="sgd",
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
        logging_steps=1,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=RightPadCollator(tokenizer.pad_token_id),
        callbacks=[callback],
    )
    trainer.train()
    summary = callback.tables()["influence_summary"]
    assert sorted(summary.step.unique()) == [0, 1] and len(summary) == 2 * len(probes)
    relative = (summary.predicted_delta - summary.measured_delta).abs() / summary.measured_delta.abs()
    assert relative.median() < 0.05
    assert len(callback.tables()["kernel"]) > 0  # labels reached the recorded batch


def test_dpo_run_is_measured_without_kernel(single_thread):
    model, tokenizer = make_model("qwen2"), make_tokenizer()
    probes = build_probes(rows(), 2, 4, seed=0, wrong=wrong_rows())
    callback = DynamicsCallback(tokenizer, probes, eval_every=1, batch_measurements=False)
    config = TrainSettings(steps=2, batch_size=2, learning_rate=1e-2, objective="dpo")
    fine_tune(model, tokenizer, rows(), config, callbacks=[callback], rejected=wrong_rows())
    tables = callback.tables()
    summary = tables["influence_summary"]
    assert sorted(summary.step.unique()) == [0, 1]
    assert tables["kernel"].empty  # DPO rows are (chosen, rejected) under another loss: no SFT kernel
    step1 = summary[summary.step == 1].set_index("probe_type")
    assert step1.loc["trained"].measured_delta.mean() > step1.loc["wrong"].measured_delta.mean()
    relative = (summary.predicted_delta - summary.measured_delta).abs() / summary.measured_delta.abs().clip(lower=1e-6)
    assert relative.median() < 0.1
