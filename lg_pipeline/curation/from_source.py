"""Variants built from a dataset source: the level's template over each selected record (teacher, token cut),
and wrong sets re-paired by a seeded derangement of the correct set."""

from __future__ import annotations

from collections import Counter

from lg_pipeline.curation.answers import agrees_with_gold, normalize_answer, response_answer
from lg_pipeline.curation.derange import derange
from lg_pipeline.curation.select import Selection, select_records
from lg_pipeline.curation.settings import CurationSettings, derived_seed
from lg_pipeline.curation.spec import DatasetSpec, SourceGroup
from lg_pipeline.curation.table import MAX_LISTED_IDS, Table
from lg_pipeline.curation.wiki import CUT_TOLERANCE, TokenCounter, cut_to_tokens
from lg_pipeline.errors import InputError

DISAGREES_WITH_GOLD = "detailed_disagrees_with_gold"  # lost reason when keep_disagreeing is False


def _teacher_response(settings: CurationSettings, key: str, instruction: str) -> str | None:
    if settings.teacher is None:
        raise InputError(
            f"variant {key!r}: Detailed CoT for this dataset needs a teacher and none is configured (the source "
            "carries no detailed responses): set `resources.curation.config.teacher` in the launchpad, or LG_TEACHER "
            "(openai | transformers | precomputed)"
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
