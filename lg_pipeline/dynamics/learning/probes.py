"""The fixed probe set of a run: which responses' log-probabilities are followed through training.

For P prompts drawn with the seed, about half among the rows the run trains on and half
among those it never sees:
- trained prompt: `trained` (its response), `other_level:<level>` (the same prompt's response
  at each other CoT level given), `wrong` (its wrong-set response), `other_prompt` (another
  trained prompt's response), `shuffled_words` (its response's words permuted),
  `irrelevant` (a fixed non-task passage), `greedy` (the model's own greedy response at step 0, decoded by the
  run once the model is loaded: `with_greedy`);
- held-out prompt: `held_out` (its own response).
As in Ren & Sutherland's learning-dynamics probes, each is a (prompt, response) pair whose
log-probability is measured, never trained on unless it is `trained`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lg_pipeline.errors import SettingsError, setting
from lg_pipeline.example import Example, stable_id

PROBE_COLUMNS = ("probe_id", "prompt_id", "probe_type", "instruction", "response")
# A fixed passage with no arithmetic in it, for the `irrelevant` probe when no other is given.
IRRELEVANT_TEXT = (
    "The river rises in the northern hills and flows south through farmland and two market towns "
    "before it reaches the sea. In spring the water is high and brown; by late summer it is clear "
    "and slow, and herons wait in the shallows near the old mill."
)


@dataclass(frozen=True)
class Probe:
    """One followed (prompt, response) pair; `prompt_id` is the training row's example id."""

    probe_id: str
    prompt_id: str
    probe_type: str
    instruction: str
    response: str

    def as_example(self) -> Example:
        return Example(self.probe_id, self.instruction, self.response)


def trained_rows(n_rows: int, steps: int, batch_size: int) -> int:
    """How many distinct rows a run of `steps` in-order batches sees (it wraps around after one pass)."""
    return min(n_rows, steps * batch_size)


def rows_to_train(n_rows: int, n_probes: int, steps: int, batch_size: int) -> int:
    """How many leading rows a run trains on: all it reaches, less enough to hold out about half the probe prompts.

    A small table (the offline demo curates a handful of rows) would otherwise be trained on entirely and leave
    no `held_out` probe.
    """
    n_held = min(n_probes // 2, n_rows - 1)
    return min(trained_rows(n_rows, steps, batch_size), n_rows - n_held)


def build_probes(
    train: Sequence[Example],
    n_probes: int,
    n_trained_rows: int,
    seed: int = 0,
    other_levels: Mapping[str, Sequence[Example]] | None = None,
    wrong: Sequence[Example] | None = None,
    irrelevant: str = IRRELEVANT_TEXT,
) -> list[Probe]:
    """The probes of `n_probes` prompts: rows [0, n_trained_rows) are trained, the rest held out."""
    if n_probes < 1:
        raise SettingsError([setting("n_probes", f"{n_probes} is not positive")])
    if n_probes > len(train):
        raise SettingsError([setting("n_probes", f"{n_probes} probes but the training data has {len(train)} rows")])
    rng = random.Random(seed)
    trained_pool = list(range(n_trained_rows))
    held_pool = list(range(n_trained_rows, len(train)))
    # About half held out, more when the run trains on fewer rows than the other half needs.
    n_held = max(n_probes - len(trained_pool), min(len(held_pool), n_probes // 2))
    chosen = sorted(rng.sample(trained_pool, n_probes - n_held)) if n_probes > n_held else []
    held = sorted(rng.sample(held_pool, n_held))
    probes: list[Probe] = []
    for i in chosen:
        probes += _trained_probes(train, i, trained_pool, rng, other_levels or {}, wrong, irrelevant)
    for i in held:
        probes.append(_probe(train[i], "held_out", train[i].response))
    return probes


def _trained_probes(train, i, trained_pool, rng, other_levels, wrong, irrelevant) -> list[Probe]:
    row = train[i]
    out = [_probe(row, "trained", row.response)]
    for level, rows in other_levels.items():
        out.append(_probe(row, f"other_level:{level}", rows[i].response))
    if wrong is not None:
        out.append(_probe(row, "wrong", wrong[i].response))
    others = [j for j in trained_pool if j != i and train[j].response != row.response]
    if others:
        out.append(_probe(row, "other_prompt", train[rng.choice(others)].response))
    words = row.response.split()
    rng.shuffle(words)
    if " ".join(words) != " ".join(row.response.split()):  # a one-word answer has no permutation
        out.append(_probe(row, "shuffled_words", " ".join(words)))
    out.append(_probe(row, "irrelevant", irrelevant))
    return out


GREEDY = "greedy"


def with_greedy(probes: Sequence[Probe], decode: Callable[[list[str]], list[str]]) -> list[Probe]:
    """`probes` and a `greedy` probe per trained prompt: `decode(instructions)` gives the model's greedy responses
    (at step 0, kept fixed). An empty response (the model stops at once) has nothing to measure: no probe."""
    trained = [p for p in probes if p.probe_type == "trained"]
    responses = decode([p.instruction for p in trained]) if trained else []
    greedy = []
    for probe, response in zip(trained, responses, strict=True):
        if response.strip():
            greedy.append(_probe(Example(probe.prompt_id, probe.instruction, probe.response), GREEDY, response))
    return [*probes, *greedy]


def _probe(row: Example, probe_type: str, response: str) -> Probe:
    probe_id = stable_id(row.example_id, probe_type, response)
    return Probe(probe_id, row.example_id, probe_type, row.instruction, response)


def probe_of(row: Example, probe_type: str, response: str) -> Probe:
    """A probe on `row`'s prompt; its id depends on the row, type and response only (a rerun finds it again)."""
    return _probe(row, probe_type, response)


def matched(train: Sequence[Example], other: Sequence[Example]) -> list[Example] | None:
    """A companion set's rows in the order of `train`'s instructions (any order in `other`; extra rows ignored);
    None when one of `train`'s instructions is missing from it. The one rule for companion sets (other CoT levels,
    the wrong-answer set), whoever hands them in."""
    by_instruction = {e.instruction: e for e in other}
    found = [by_instruction.get(e.instruction) for e in train]
    return None if any(e is None for e in found) else found


def missing_instructions(train: Sequence[Example], other: Sequence[Example]) -> int:
    """How many of `train`'s rows have no row with the same instruction in `other`."""
    present = {e.instruction for e in other}
    return sum(e.instruction not in present for e in train)
