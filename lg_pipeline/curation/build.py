"""Building one curated variant (dataset x level x correct/wrong) from its source.

Correct sets render the level's response template (and cut wiki articles, or ask the teacher); wrong sets take the
correct set of the same level and re-pair responses with a seeded derangement. Every row that does not make it
is counted by reason in the metadata.

Row accounting (metadata `row_accounting`, verified by the `curated_row_count` check): `selected` rows were chosen
from the source (fewer than `requested` only when the source ran out: `examined == source_rows`), and every row
lost after that is counted where it is lost (`lost`, by reason), so `rows == selected - sum(lost)`. A row that
disappears without being counted breaks that identity.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from data_sources.catalog import LEVEL_LABELS, DatasetSpec, SourceGroup, parse_variant_key
from lg_pipeline.curation.answers import agrees_with_gold, normalize_answer, response_answer
from lg_pipeline.curation.derange import derange
from lg_pipeline.curation.select import Selection, select_records
from lg_pipeline.curation.settings import BUILDER_VERSION, CurationSettings, derived_seed
from lg_pipeline.curation.wiki import CUT_TOLERANCE, TokenCounter, cut_to_tokens
from lg_pipeline.examples import InputError, stable_id

COLUMNS = [
    "example_id",
    "instruction",
    "response",
    "answer",
    "dataset",
    "level",
    "correctness",
    "source",
    "demo",
    "cut_token_count",
]
MAX_LISTED_IDS = 50
DISAGREES_WITH_GOLD = "detailed_disagrees_with_gold"  # lost reason when keep_disagreeing is False


@dataclass
class Table:
    """Rows of one variant before they become a DataFrame, plus what is known about how they were made.

    `drops`: source records passed over during selection (replaced by later records while the source lasts);
    `lost`: selected rows lost afterwards (teacher gave nothing, no wrong partner, ...), by reason.
    `cut_tokens`: per row, the token count of a response we cut to a budget (None: not cut by us).
    """

    example_ids: list[str]
    instructions: list[str]
    responses: list[str]
    answers: list[str]
    source_tag: str
    meta: dict[str, Any] = field(default_factory=dict)
    drops: Counter = field(default_factory=Counter)
    lost: Counter = field(default_factory=Counter)
    cut_tokens: list[int | None] = field(default_factory=list)
    accounting: dict[str, Any] = field(default_factory=dict)

    def keep(self, indices: list[int]) -> None:
        for name in ("example_ids", "instructions", "responses", "answers", "cut_tokens"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in indices])


def _teacher_response(settings: CurationSettings, key: str, instruction: str) -> str | None:
    if settings.teacher is None:
        raise InputError(
            f"variant {key!r}: Detailed CoT for this dataset needs a teacher (CurationSettings.teacher); "
            "none is configured, and the source carries no detailed responses"
        )
    return settings.teacher.respond(instruction)


def _render(
    spec: DatasetSpec,
    group: SourceGroup,
    level: str,
    chosen: Selection,
    settings: CurationSettings,
    counter: TokenCounter,
    key: str,
) -> Table:
    """Responses of the correct set: the level's template over each record, then teacher or token cut."""
    table = Table([], [], [], [], chosen.source_tag)
    cuts: Counter = Counter()
    token_counts: list[int] = []
    for record, instruction, example_id in zip(chosen.records, chosen.instructions, chosen.example_ids, strict=True):
        values = record.fields()
        if level in group.teacher_levels:
            values["detailed"] = _teacher_response(settings, key, instruction) or ""
            if not values["detailed"].strip():
                table.lost["teacher_no_response"] += 1
                continue
        response = spec.responses[level].format_map(values).strip()
        cut_count = None
        if level in spec.cut_tokens:
            cut = cut_to_tokens(response, spec.cut_tokens[level], counter)
            if cut is None:  # cannot happen after selection, kept as a guard against a changed tokenizer
                table.lost[f"shorter_than_{spec.cut_tokens[level]}_tokens"] += 1
                continue
            response = cut.text
            cuts[cut.how] += 1
            cut_count = cut.tokens
            token_counts.append(cut.tokens)
        table.cut_tokens.append(cut_count)
        table.example_ids.append(example_id)
        table.instructions.append(instruction)
        table.responses.append(response)
        table.answers.append(record.answer.strip())
    if level in spec.cut_tokens:
        table.meta["cut"] = {
            "budget_tokens": spec.cut_tokens[level],
            "tolerance": CUT_TOLERANCE,
            "ends": dict(cuts),
            "tokens_min": min(token_counts, default=0),
            "tokens_max": max(token_counts, default=0),
        }
    return table


def _check_detailed(spec: DatasetSpec, chosen: Selection, table: Table, keep: bool) -> None:
    """Flag Detailed CoT whose final answer disagrees with the gold answer: counted in metadata, and kept (default)
    or dropped as a counted loss (`CurationSettings.keep_disagreeing`)."""
    forms = {
        eid: [r.answer, *r.extra.get("answer_forms", ())]
        for eid, r in zip(chosen.example_ids, chosen.records, strict=True)
    }
    verdicts = {
        eid: agrees_with_gold(resp, forms[eid], spec.answer_kind)
        for eid, resp in zip(table.example_ids, table.responses, strict=True)
    }
    disagree = [eid for eid, v in verdicts.items() if v is False]
    table.meta["detailed_vs_gold"] = {
        "agree": sum(v is True for v in verdicts.values()),
        "disagree": len(disagree),
        "unchecked": sum(v is None for v in verdicts.values()),
        "disagree_ids": disagree[:MAX_LISTED_IDS],
        "disagreeing_rows": "kept" if keep else "dropped",
    }
    if disagree and not keep:
        table.keep([i for i, eid in enumerate(table.example_ids) if verdicts[eid] is not False])
        table.lost[DISAGREES_WITH_GOLD] += len(disagree)


def correct_from_source(spec: DatasetSpec, level: str, settings: CurationSettings, key: str) -> Table:
    group = spec.group_for(level)
    if group is None:
        raise InputError(f"variant {key!r}: only the study's release folder has this level; set release_dir")
    counter = TokenCounter(settings.tokenizer)
    chosen = select_records(spec, group, settings, counter)
    table = _render(spec, group, level, chosen, settings, counter, key)
    table.drops.update(chosen.drops)
    table.accounting = {
        "source_rows": chosen.available,
        "examined": chosen.examined,
        "selected": len(chosen.records),
    }
    table.meta.update(
        source=chosen.source,
        selection=f"{group.selection}: examined {chosen.examined} source records, kept {len(chosen.records)}",
        teacher=_teacher_name(spec, group, level, settings),
    )
    if level in spec.cut_tokens:
        table.meta["tokenizer"] = counter.name
    if level == "detailed":
        _check_detailed(spec, chosen, table, settings.keep_disagreeing)
    return table


def _teacher_name(spec: DatasetSpec, group: SourceGroup, level: str, settings: CurationSettings) -> str | None:
    if level in group.teacher_levels:
        return getattr(settings.teacher, "name", type(settings.teacher).__name__)
    if "{detailed}" in spec.responses.get(level, ""):
        return str(group.options.get("teacher_name", "carried by the source"))
    return None


def make_wrong(spec: DatasetSpec, level: str, table: Table, settings: CurationSettings) -> Table:
    """Re-pair each instruction with another instance's response (never its own, never the same final answer)."""
    comparable = spec.answer_kind != "none"
    gold = [(normalize_answer(a) or None) if comparable else None for a in table.answers]
    given = [response_answer(r, level, spec.answer_kind) for r in table.responses]
    donor_answer = [g if g is not None else a for g, a in zip(given, gold, strict=True)]
    seed = derived_seed(settings.seed, spec.name, level, "derangement")
    result = derange(gold, donor_answer, table.responses, seed)
    keep = sorted(result.donor)
    wrong = Table(
        [table.example_ids[i] for i in keep],
        [table.instructions[i] for i in keep],
        [table.responses[result.donor[i]] for i in keep],
        [table.answers[i] for i in keep],
        table.source_tag,
        dict(table.meta),
        Counter(table.drops),
        Counter(table.lost),
        [table.cut_tokens[result.donor[i]] for i in keep],  # the donor's response, so the donor's cut
        dict(table.accounting),
    )
    if result.unpaired:
        wrong.lost["no_wrong_response_available"] += len(result.unpaired)
    wrong.meta["derangement"] = {
        "method": "seeded random cycle repaired by swaps; donor != self, != same text, != same final answer",
        "seed": seed,
        "pairs": len(keep),
        "unpaired_ids": [table.example_ids[i] for i in result.unpaired][:MAX_LISTED_IDS],
    }
    return wrong


def base_metadata(key: str, spec: DatasetSpec, level: str, correctness: str, settings: CurationSettings) -> dict:
    return {
        "variant": key,
        "dataset": spec.name,
        "display_name": spec.display_name,
        "family": spec.family,
        "level": level,
        "level_label": LEVEL_LABELS[level],
        "correctness": correctness,
        "builder_version": BUILDER_VERSION,
        "seed": settings.seed,
        "n_requested": settings.n_examples,
        "demo": spec.is_demo(level),
    }


def ids_digest(example_ids: list[str]) -> str:
    """One hash of the ordered ids: equal digests mean identical instruction sets in the same order."""
    return stable_id(*example_ids) if example_ids else ""


def finish(table: Table, meta: dict) -> tuple[list[dict], dict]:
    columns = (table.example_ids, table.instructions, table.responses, table.answers, table.cut_tokens)
    rows = [
        {"example_id": e, "instruction": i, "response": r, "answer": a, "cut_token_count": c}
        for e, i, r, a, c in zip(*columns, strict=True)
    ]
    meta = {**meta, **table.meta}
    meta.update(
        n_rows=len(rows),
        shortfall=max(meta["n_requested"] - len(rows), 0),
        drops=dict(sorted((table.drops + table.lost).items())),
        row_accounting={
            "requested": meta["n_requested"],
            **table.accounting,
            "lost": dict(sorted(table.lost.items())),
        },
        ids_digest=ids_digest(table.example_ids),
    )
    return rows, meta


def build_rows(key: str, settings: CurationSettings) -> tuple[list[dict], dict, str]:
    """Rows (without the constant columns), metadata and the per-row source tag of one variant."""
    from lg_pipeline.curation.release_build import from_release, release_has

    settings.check()
    spec, level, correctness = parse_variant_key(key)
    meta = base_metadata(key, spec, level, correctness, settings)
    if release_has(spec, level, settings):
        table = from_release(spec, level, correctness, settings)
        meta["demo"] = False  # the release's rows are the study's data, even where the offline stand-in is a demo
    else:
        table = correct_from_source(spec, level, settings, key)
        if correctness == "wrong":
            table = make_wrong(spec, level, table, settings)
    rows, meta = finish(table, meta)
    return rows, meta, table.source_tag
