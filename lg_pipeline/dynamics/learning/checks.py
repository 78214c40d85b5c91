"""Is a learning-dynamics run folder complete, consistent and finite? And how well does the prediction match?

`check_run_folder` reads the folder alone: its tables (`callback.TABLES` and the probes), its settings (`run.json`:
steps, eval_every, objective) and its summary (`summary.json`). Then:
- coverage: every eval step has a summary and the influence of every probe, log-probabilities before and after it,
  the kernel of every probe against every example of that step's batch, the batch's gradient statistics for every
  matrix; a `train_log` row per step; no rows at other steps or of unknown probes;
- identities: the predicted change is the sum of its per-matrix terms, the measured change is the log-probability
  after minus before (so predicted and measured swapped is named), `logp_mean` = `logp_sum` / response tokens,
  every trained layer and matrix has its term, probe types as in the probe table;
- ranges: log-probabilities ≤ 0, update norms and learning rates ≥ 0, a positive loss, every number finite,
  integer steps and layers, one row per key; `train_gradient_stats` by the gradient check's row rules, per step;
  probabilities in [0, 1], entropies and norms ≥ 0 (`logprobs`, `greedy_now`, `train_residuals`);
- the two DPO terms: `chosen_share` + `rejected_share` = `predicted_delta` (NaN only under DPO where the split is
  not defined; SFT: all chosen), `grad_inner` = its chosen + rejected parts (SFT: no rejected part), `greedy_now`
  only for `greedy` probes at eval steps.
The agreement (R² of measured by predicted change over every (eval step, probe)) is a warning below a threshold.
Any malformed table is a failed rule naming the file, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lg_pipeline.dynamics.learning.callback import SHARES, is_eval_step
from lg_pipeline.dynamics.learning.influence import r_squared
from lg_pipeline.dynamics.learning.measure import CONCENTRATION
from lg_pipeline.dynamics.learning.probes import PROBE_COLUMNS
from lg_pipeline.dynamics.learning.run import KEYS, RUN_FILE, learning_run
from lg_pipeline.expectations import TABLE_MEANINGS, RuleReport, Rules, TableSpec, read_run_tables
from lg_pipeline.gradients.checks import MEANINGS as STATS_MEANINGS
from lg_pipeline.gradients.checks import check_rows
from lg_pipeline.io.run_folder import SUMMARY_FILE
from lg_pipeline.schema import GRADIENT_COLUMNS
from lg_pipeline.vocabulary import layer_index

if TYPE_CHECKING:
    import pandas as pd

# Tables a run always writes rows to; `greedy_now` only when the run has `greedy` probes.
ALWAYS = ("logprobs", "influence", "influence_summary", "train_log", "kernel", "train_gradient_stats",
          "train_residuals")
GREEDY_NOW = "greedy_now"
PROBES = "probes"
AGREEMENT_R2 = 0.9  # first-order agreement expected of SmolLM2-135M at the default learning rate
COLUMNS: dict[str, tuple[str, ...]] = {
    PROBES: PROBE_COLUMNS,
    "logprobs": ("step", "probe_id", "probe_type", "logp_sum", "logp_mean", "n_response_tokens", *CONCENTRATION),
    "influence": ("step", "probe_id", "layer", "module", "parameter", "predicted_delta"),
    "influence_summary": ("step", "probe_id", "probe_type", "predicted_delta", "measured_delta", *SHARES),
    "kernel": ("step", "probe_id", "example_id", "layer", "module", "grad_inner", "grad_inner_chosen",
               "grad_inner_rejected"),
    "train_residuals": ("step", "example_id", "term", "weight", "residual_norm_mean", "n_response_tokens"),
    GREEDY_NOW: ("step", "prompt_id", "probe_id", "response", "same_as_start", "logp_sum", "logp_mean",
                 "n_response_tokens", *CONCENTRATION),
    "train_log": ("step", "loss", "learning_rate", "update_norm"),
    "train_gradient_stats": ("step", *GRADIENT_COLUMNS),
}
TEXT = {"probe_id", "prompt_id", "probe_type", "instruction", "response", "module", "parameter", "example_id", "term",
        "same_as_start"}
WHOLE = ("step", "layer", "n_response_tokens", "n_tokens")


def _spec(name: str) -> TableSpec:
    columns = COLUMNS[name]
    numbers = tuple(c for c in columns if c not in TEXT)
    keys = ("probe_id",) if name == PROBES else KEYS[name]
    finite = tuple(c for c in numbers if c not in SHARES)  # NaN shares: where the DPO split is not defined
    return TableSpec(columns, keys, numbers, tuple(c for c in WHOLE if c in columns), finite)


SPECS: dict[str, TableSpec] = {name: _spec(name) for name in COLUMNS}
SUM_SLACK = 1e-4  # of Σ|terms|: the summary's total is an fp32 sum, the table's terms are summed again here
DIFF_SLACK = 1e-9

MEANINGS: dict[str, str] = {
    **STATS_MEANINGS,
    **TABLE_MEANINGS,
    "run_file": f"the run's settings ({RUN_FILE}: steps, eval_every, objective)",
    "summary_file": f"the run's summary ({SUMMARY_FILE})",
    "tables": "every table of the run",
    "probes_unique": "one row per probe",
    "probe_ids_known": "every measured probe is in the probe table",
    "probe_types_match": "probe types as in the probe table",
    "eval_steps_complete": "every eval step has a summary of every probe, and no other step has one",
    "logprobs_complete": "log-probabilities of every probe before and after every eval step, at no other step",
    "influence_complete": "every (eval step, probe) has a term for every trained matrix",
    "layers_complete": "every trained layer and matrix has its influence term",
    "kernel_complete": "the kernel of every probe against every example and matrix of each eval step's batch",
    "train_stats_complete": "gradient statistics of every example and matrix of each eval step's batch",
    "train_log_steps": "one train_log row per training step",
    "logp_nonpositive": "log-probabilities ≤ 0",
    "logp_mean_identity": "logp_mean = logp_sum / response tokens",
    "response_tokens_positive": "at least one response token per probe",
    "predicted_is_sum": "the predicted change is the sum of its per-matrix terms",
    "measured_is_logp_change": "the measured change is the log-probability after minus before the step",
    "not_swapped": "predicted and measured changes not swapped",
    "layer_labels": "layer and module match the parameter name",
    "update_norm_nonnegative": "update norms ≥ 0",
    "learning_rate_nonnegative": "learning rates ≥ 0",
    "train_loss_positive": "training loss > 0",
    "agreement": f"R² of measured by predicted change ≥ {AGREEMENT_R2} (a warning)",
    "probabilities_in_range": "mean max-token probabilities in [0, 1]",
    "entropy_nonnegative": "mean entropies ≥ 0",
    "norms_nonnegative": "‖A‖ and ‖π − e‖ norms ≥ 0, ‖A‖_F ≥ √(V − 1) > 0",
    "shares_sum": "chosen_share + rejected_share = predicted_delta (SFT: all chosen)",
    "shares_defined": "shares NaN only under DPO, and there both",
    "kernel_terms_sum": "grad_inner = grad_inner_chosen + grad_inner_rejected (SFT: no rejected part)",
    "residuals_complete": "‖π − e‖ of every example of each eval step's batch, per term (DPO: chosen and rejected)",
    "greedy_known": "greedy_now rows only for `greedy` probes, at eval steps",
}


def expected_eval_steps(steps: int, eval_every: int) -> list[int]:
    return [s for s in range(steps) if is_eval_step(s, eval_every)]


def setting(record: Any, name: str) -> Any:
    """`name` in a settings record, at its top level or in a nested object (`{"config": {"steps": ...}}`)."""
    if not isinstance(record, Mapping):
        return None
    if name in record:
        return record[name]
    for value in record.values():
        found = setting(value, name)
        if found is not None:
            return found
    return None


def check_run_folder(
    out_dir: str | Path,
    steps: int | None = None,
    eval_every: int | None = None,
    objective: str | None = None,
    threshold: float = AGREEMENT_R2,
) -> RuleReport:
    """Every rule over the folder; settings not given are read from its `run.json`."""
    out = Path(out_dir)
    rules = Rules(MEANINGS)
    record = _json(out / RUN_FILE, rules, "run_file")
    steps = steps if steps is not None else setting(record, "steps")
    if steps is None and (out / SUMMARY_FILE).is_file():  # a run set by epochs: the steps it took
        try:
            steps = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8")).get("steps")
        except (OSError, ValueError, AttributeError):
            steps = None
    eval_every = eval_every if eval_every is not None else setting(record, "eval_every")
    objective = objective or setting(record, "objective") or "sft"
    rules.check("summary_file", learning_run(out).summary_file.is_file(), f"missing {SUMMARY_FILE}", where=SUMMARY_FILE)
    needed = [*ALWAYS, *([GREEDY_NOW] if _has_greedy_probes(out) else [])]
    missing = [t for t in (PROBES, *needed) if not (out / f"{t}.parquet").is_file()]
    if not rules.check("tables", not missing, f"missing table(s): {', '.join(missing)}"):
        return rules.report()
    tables = read_run_tables(out, SPECS, [PROBES, *needed], rules, _kind, "dynamics")
    if tables is None:
        return rules.report()
    eval_steps = None
    if isinstance(steps, int) and isinstance(eval_every, int) and steps >= 0:
        eval_steps = expected_eval_steps(steps, eval_every)
        _train_log_rule(tables["train_log"], steps, rules)
    else:
        rules.skip("eval_steps_complete", f"the run's steps and eval_every are not known (no readable {RUN_FILE})")
    try:
        _probe_rules(tables, rules)
        _coverage_rules(tables, eval_steps, rules)
        _identity_rules(tables, rules)
        _range_rules(tables, rules)
        if "train_gradient_stats" in tables:
            _stats_rules(tables, record, rules, objective)
        _concentration_rules(tables, rules)
        _term_rules(tables, objective, eval_steps, rules)
        _agreement_rule(tables["influence_summary"], threshold, rules)
    except Exception as exc:  # malformed beyond what the rules foresaw: a failed check, never a traceback
        rules.broke(exc)
    return rules.report()


def completeness_failures(out_dir: str | Path, steps: int, eval_every: int, objective: str = "sft") -> list[str]:
    """One line per broken rule (what broke, in numbers); empty when the run is complete and consistent."""
    return check_run_folder(out_dir, steps, eval_every, objective).details()


def agreement(out_dir: str | Path) -> float:
    """R² of measured by predicted change over every (eval step, probe) of the run."""
    import pandas as pd

    frame = pd.read_parquet(Path(out_dir) / "influence_summary.parquet")
    return r_squared(frame.predicted_delta, frame.measured_delta)


def agreement_warning(r2: float, threshold: float = AGREEMENT_R2) -> str | None:
    """Why the agreement is a warning (None: R² reaches the threshold)."""
    if r2 != r2:
        return "R² undefined: the measured changes do not vary"
    return None if r2 >= threshold else f"R² {r2:.4f} < {threshold}"


# ------------------------------------------------------------------------------------------------ reading
def _kind(path: Path) -> str | None:
    from lg_pipeline.io.manifest import read_manifest

    return (read_manifest(path) or {}).get("kind")


def _json(path: Path, rules: Rules, rule: str) -> dict[str, Any] | None:
    if not path.is_file():
        rules.fail(rule, f"missing {path.name}", where=path.name)
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        rules.fail(rule, f"{path.name} is not readable JSON", where=path.name)
        return None
    return value if rules.check(rule, isinstance(value, dict), f"{path.name} is not a JSON object",
                                where=path.name) else None


# ------------------------------------------------------------------------------------------------ rules
def _where(table: str) -> str:
    return f"{table}.parquet"


def _train_log_rule(train_log: pd.DataFrame, steps: int, rules: Rules) -> None:
    ok = sorted(train_log.step.dropna().astype(int)) == list(range(steps))
    rules.check("train_log_steps", ok, f"train_log: {len(train_log)} rows for {steps} steps", where=_where("train_log"))


def _probe_rules(tables: dict[str, pd.DataFrame], rules: Rules) -> None:
    probes = tables[PROBES]
    rules.check("probes_unique", ~probes.probe_id.duplicated(keep=False), "probes: a probe id repeats",
                where=_where(PROBES))
    known = set(probes.probe_id)
    types = dict(zip(probes.probe_id, probes.probe_type, strict=True))
    for name in ("logprobs", "influence", "influence_summary", "kernel"):
        if name not in tables:
            continue
        frame = tables[name]
        unknown = ~frame.probe_id.isin(known)
        rules.check("probe_ids_known", ~unknown, f"{name}: {frame.probe_id[unknown].nunique()} unknown probe id(s)",
                    where=_where(name))
        if "probe_type" in frame:
            wrong = frame.probe_id.map(types).ne(frame.probe_type) & ~unknown
            rules.check("probe_types_match", ~wrong, f"{name}: {int(wrong.sum())} rows with another probe type",
                        where=_where(name))


def _grouped(frame: pd.DataFrame, by: list[str], values: list[str]) -> dict[Any, set]:
    """{key of `by`: the set of `values` tuples}: one pass over the rows (a pandas groupby-apply costs more here)."""
    groups: dict[Any, set] = {}
    keys = zip(*(frame[c] for c in by), strict=True) if len(by) > 1 else frame[by[0]]
    rows = zip(*(frame[c] for c in values), strict=True) if len(values) > 1 else frame[values[0]]
    for key, row in zip(keys, rows, strict=True):
        groups.setdefault(key, set()).add(row)
    return groups


def _coverage_rules(tables: dict[str, pd.DataFrame], eval_steps: list[int] | None, rules: Rules) -> None:
    probes = set(tables[PROBES].probe_id)
    summary, logprobs = tables["influence_summary"], tables["logprobs"]
    if eval_steps is not None:
        by_step = _grouped(summary, ["step"], ["probe_id"])
        problems = [
            f"eval step {step}: {len(probes - seen)} of {len(probes)} probes without a summary"
            for step in eval_steps
            if not probes <= (seen := by_step.get(step, set()))
        ]
        other = sorted(int(s) for s in set(by_step) - set(eval_steps) if s == s)
        if other:
            problems.append(f"influence_summary: rows at step(s) {other}, not eval steps")
        rules.check("eval_steps_complete", not problems, "; ".join(problems), where=_where("influence_summary"))
        measured = _grouped(logprobs, ["step"], ["probe_id"])
        asked = [s for step in eval_steps for s in (step, step + 1)]
        problems = [f"logprobs at step {s}: not every probe measured" for s in asked if measured.get(s) != probes]
        other = sorted(int(s) for s in set(measured) - set(asked) if s == s)
        if other:
            problems.append(f"logprobs: rows at step(s) {other}, neither an eval step nor the one after")
        rules.check("logprobs_complete", not problems, "; ".join(problems), where=_where("logprobs"))
    _influence_coverage(tables, rules)
    if "kernel" in tables:
        _batch_coverage(tables, eval_steps, rules)


def _influence_coverage(tables: dict[str, pd.DataFrame], rules: Rules) -> None:
    influence, summary = tables["influence"], tables["influence_summary"]
    matrices = set(influence.parameter)
    per_pair = _grouped(influence, ["step", "probe_id"], ["parameter"])
    pairs = set(zip(summary.step, summary.probe_id, strict=True))
    short = sum(len(per_pair.get(pair, ())) < len(matrices) for pair in pairs | set(per_pair))
    rules.check("influence_complete", short == 0,
                f"influence: {short} of {len(pairs)} (step, probe) pairs lack a term of the {len(matrices)} matrices",
                where=_where("influence"))
    layers = {int(v) for v in influence.layer.dropna() if v >= 0}
    gaps = sorted(set(range(max(layers) + 1)) - layers) if layers else []
    trained = set()
    for name in ("kernel", "train_gradient_stats"):
        if name in tables:
            trained |= set(zip(tables[name].layer, tables[name].module, strict=True))
    absent = sorted(trained - set(zip(influence.layer, influence.module, strict=True)))
    detail = "; ".join(
        [*([f"no term for layer(s) {gaps}"] if gaps else []),
         *([f"no term for {len(absent)} trained matrices, e.g. layer {absent[0][0]} {absent[0][1]}"] if absent else [])]
    )
    rules.check("layers_complete", not gaps and not absent, f"influence: {detail}", where=_where("influence"))


def _batch_coverage(tables: dict[str, pd.DataFrame], eval_steps: list[int] | None, rules: Rules) -> None:
    """Kernel and statistics: every example of each eval step's batch, every matrix, every probe."""
    kernel, stats = tables["kernel"], tables["train_gradient_stats"]
    probes = set(tables[PROBES].probe_id)
    batches = _grouped(stats, ["step"], ["example_id"])
    steps = set(eval_steps) if eval_steps is not None else {int(s) for s in batches if s == s}
    matrices = set(zip(stats.layer, stats.module, strict=True))
    problems = ["kernel: no rows"] if len(kernel) == 0 else []
    seen = _grouped(kernel, ["step", "probe_id"], ["example_id", "layer", "module"])
    for step in sorted(steps):
        examples = batches.get(step, set())
        want = {(e, layer, module) for e in examples for layer, module in matrices}
        lacking = [p for p in sorted(probes) if not examples or seen.get((step, p)) != want]
        if lacking:
            problems.append(f"kernel at step {step}: {len(lacking)} of {len(probes)} probes lack rows")
    rules.check("kernel_complete", not problems, "; ".join(problems), where=_where("kernel"))
    per_example = _grouped(stats, ["step", "example_id"], ["layer", "module"])
    problems = [
        f"train_gradient_stats at step {step}: not every example has every matrix"
        for step in sorted(steps)
        if step not in batches or any(len(per_example[(step, e)]) < len(matrices) for e in batches[step])
    ]
    other = sorted(int(s) for s in set(batches) - steps if s == s)
    if other:
        problems.append(f"train_gradient_stats: rows at step(s) {other}, not eval steps")
    rules.check("train_stats_complete", not problems, "; ".join(problems), where=_where("train_gradient_stats"))


def _identity_rules(tables: dict[str, pd.DataFrame], rules: Rules) -> None:
    import numpy as np

    summary, influence, logprobs = tables["influence_summary"], tables["influence"], tables["logprobs"]
    keys = ["step", "probe_id"]
    terms = influence.assign(size=influence.predicted_delta.abs()).groupby(keys)[["predicted_delta", "size"]].sum()
    terms = terms.rename(columns={"predicted_delta": "total"})
    at = summary.set_index(keys)
    total = terms.total.reindex(at.index).to_numpy()
    size = terms["size"].reindex(at.index).to_numpy()
    logp = logprobs.drop_duplicates(keys).set_index(keys).logp_sum
    before = logp.reindex(at.index).to_numpy()
    after = logp.reindex([(s + 1, p) for s, p in at.index]).to_numpy()
    change = after - before
    predicted, measured = at.predicted_delta.to_numpy(), at.measured_delta.to_numpy()

    def near_sum(value):
        return np.abs(value - total) <= SUM_SLACK * size + 1e-12

    def near_change(value):
        return np.abs(value - change) <= DIFF_SLACK * (np.abs(after) + np.abs(before)) + 1e-12

    n = len(at)
    sums, changes = near_sum(predicted), near_change(measured)
    where = _where("influence_summary")
    rules.check("predicted_is_sum", sums, f"influence_summary: {int((~sums).sum())} of {n} predicted changes differ "
                                          "from the sum of their influence terms", where=where)
    rules.check("measured_is_logp_change", changes, f"influence_summary: {int((~changes).sum())} of {n} measured "
                                                    "changes differ from logprobs after minus before", where=where)
    swapped = ~sums & ~changes & near_sum(measured) & near_change(predicted)
    rules.check("not_swapped", ~swapped, f"influence_summary: {int(swapped.sum())} of {n} rows hold predicted and "
                                         "measured swapped", where=where)
    mean = logprobs.logp_sum / logprobs.n_response_tokens.where(logprobs.n_response_tokens > 0)
    ok = np.abs(logprobs.logp_mean - mean) <= 1e-6 * np.abs(mean) + 1e-9
    rules.check("logp_mean_identity", ok, f"logprobs: {int((~ok).sum())} rows where logp_mean ≠ logp_sum / tokens",
                where=_where("logprobs"))


def _range_rules(tables: dict[str, pd.DataFrame], rules: Rules) -> None:
    logprobs, influence, train_log = tables["logprobs"], tables["influence"], tables["train_log"]
    positive = (logprobs.logp_sum > 0) | (logprobs.logp_mean > 0)
    rules.check("logp_nonpositive", ~positive, f"logprobs: {int(positive.sum())} positive log-probabilities",
                where=_where("logprobs"))
    none = logprobs.n_response_tokens < 1
    rules.check("response_tokens_positive", ~none, f"logprobs: {int(none.sum())} rows without response tokens",
                where=_where("logprobs"))
    labels = [
        isinstance(p, str) and layer == (layer_index(p) if layer_index(p) is not None else -1)
        and m == (p.split(".")[-2] if "." in p else p)
        for p, m, layer in zip(influence.parameter, influence.module, influence.layer, strict=True)
    ]
    rules.check("layer_labels", labels, f"influence: {labels.count(False)} rows whose layer or module is not the "
                                        "parameter's", where=_where("influence"))
    for rule, column, ok in (
        ("update_norm_nonnegative", "update_norm", train_log.update_norm >= 0),
        ("learning_rate_nonnegative", "learning_rate", train_log.learning_rate >= 0),
        ("train_loss_positive", "loss", train_log.loss > 0),
    ):
        bad = ~ok & train_log[column].notna()  # NaN is the `finite` rule's
        rules.check(rule, ~bad, f"train_log: {int(bad.sum())} of {len(bad)} rows", where=_where("train_log"))


def _stats_rules(tables: dict[str, pd.DataFrame], record: Any, rules: Rules, objective: str = "sft") -> None:
    """The gradient check's row rules on the batch statistics (one set per step; a DPO example is two rows)."""
    max_length = setting(record, "max_length")
    rules.where = _where("train_gradient_stats")
    try:
        cap = max_length * (2 if objective == "dpo" else 1) if isinstance(max_length, int) else None
        check_rows(tables["train_gradient_stats"], rules, ("step",), cap)
    finally:
        rules.where = ""


def _agreement_rule(summary: pd.DataFrame, threshold: float, rules: Rules) -> None:
    why = agreement_warning(r_squared(summary.predicted_delta, summary.measured_delta), threshold)
    rules.check("agreement", why is None, why or "", where=_where("influence_summary"), warning=True)


def _has_greedy_probes(out: Path) -> bool:
    import pandas as pd

    try:
        return bool((pd.read_parquet(out / f"{PROBES}.parquet", columns=["probe_type"]).probe_type == "greedy").any())
    except Exception:  # an unreadable probe table is the table rules' to name
        return False


def _concentration_rules(tables: dict[str, pd.DataFrame], rules: Rules) -> None:
    """Ranges of the probability-concentration columns and the training residuals."""
    for name in ("logprobs", GREEDY_NOW):
        if name not in tables:
            continue
        f = tables[name]
        top = f.max_prob_mean
        rules.check("probabilities_in_range", ~((top < 0) | (top > 1)),
                    f"{name}: {int(((top < 0) | (top > 1)).sum())} mean max-token probabilities outside [0, 1]",
                    where=_where(name))
        rules.check("entropy_nonnegative", ~(f.entropy_mean < 0),
                    f"{name}: {int((f.entropy_mean < 0).sum())} negative entropies", where=_where(name))
        bad = (f.a_norm_mean <= 0) | (f.residual_norm_mean < 0)
        rules.check("norms_nonnegative", ~bad, f"{name}: {int(bad.sum())} rows with a negative norm",
                    where=_where(name))
    residuals = tables["train_residuals"]
    bad = residuals.residual_norm_mean < 0
    rules.check("norms_nonnegative", ~bad, f"train_residuals: {int(bad.sum())} negative norms",
                where=_where("train_residuals"))


def _term_rules(tables: dict[str, pd.DataFrame], objective: str, eval_steps: list[int] | None, rules: Rules) -> None:
    """The two DPO terms add up (shares to the predicted change, kernel parts to the kernel); SFT has one."""
    import numpy as np

    summary, kernel, residuals = tables["influence_summary"], tables["kernel"], tables["train_residuals"]
    chosen, rejected, predicted = summary.chosen_share, summary.rejected_share, summary.predicted_delta
    nan = chosen.isna() | rejected.isna()
    lopsided = chosen.isna() ^ rejected.isna()
    undefined = lopsided | (nan & (objective != "dpo"))
    rules.check("shares_defined", ~undefined, f"influence_summary: {int(undefined.sum())} rows with a NaN share "
                                              f"({objective})", where=_where("influence_summary"))
    total = (chosen + rejected).to_numpy()
    off = ~nan.to_numpy() & (np.abs(total - predicted.to_numpy()) > SUM_SLACK * np.maximum(1.0, np.abs(predicted)))
    if objective != "dpo":
        off = off | ~nan.to_numpy() & (rejected.to_numpy() != 0)
    rules.check("shares_sum", ~off, f"influence_summary: {int(off.sum())} of {len(off)} rows whose shares do not add "
                                    "up to predicted_delta", where=_where("influence_summary"))
    parts = kernel.grad_inner_chosen + kernel.grad_inner_rejected
    size = kernel.grad_inner_chosen.abs() + kernel.grad_inner_rejected.abs()
    off = ((kernel.grad_inner - parts).abs() > SUM_SLACK * size + 1e-12).to_numpy()
    if objective != "dpo":
        off = off | (kernel.grad_inner_rejected != 0).to_numpy()
    rules.check("kernel_terms_sum", ~off, f"kernel: {int(off.sum())} of {len(off)} rows whose parts do not add up",
                where=_where("kernel"))
    terms = {"chosen", "rejected"} if objective == "dpo" else {"chosen"}
    stats = tables["train_gradient_stats"]
    want = {(s, e, t) for s, e in zip(stats.step, stats.example_id, strict=True) for t in terms}
    seen = set(zip(residuals.step, residuals.example_id, residuals.term, strict=True))
    rules.check("residuals_complete", want == seen,
                f"train_residuals: {len(want - seen)} (step, example, term) missing, {len(seen - want)} unexpected",
                where=_where("train_residuals"))
    if GREEDY_NOW in tables:
        greedy = tables[GREEDY_NOW]
        ids = set(tables[PROBES].probe_id[tables[PROBES].probe_type == "greedy"])
        stray = ~greedy.probe_id.isin(ids)
        if eval_steps is not None:
            stray = stray | ~greedy.step.isin(eval_steps)
        rules.check("greedy_known", ~stray, f"greedy_now: {int(stray.sum())} rows of another probe or step",
                    where=_where(GREEDY_NOW))
