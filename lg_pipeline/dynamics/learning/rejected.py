"""Same-prompt rejected responses: the correct response with its final answer changed, everything else kept.

DPO's rejected response y⁻ should answer the same prompt as the chosen one (Ren & Sutherland's y_u⁻); a wrong set
drawn from other questions (`shuffled`) is off-prompt, so its log-probability mostly measures "another question's
text". For math the rule here makes an on-prompt rejected response without a teacher: the number the response
gives as its final answer (in "The final answer is X", `\\boxed{X}` or `#### X`, else the last number written)
gets one more in its whole part, its format kept (sign, thousands separators, decimals), so the response reads as
the same solution reaching a wrong answer. A response with no number in its final answer (a letter, a word) has no
same-prompt rejected response by this rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lg_pipeline.curation.answers import final_answer_span, numbers_in
from lg_pipeline.example import Example, stable_id

REJECTED_SOURCES = ("auto", "same_prompt", "shuffled")
_NUMBER_ONLY = re.compile(r"[$£€]?\s*-?[\d,]*\.?\d+\s*%?\.?")


def changed_number(number: str) -> str:
    """`number` with one more in its whole part, written as it was: "72" -> "73", "1,299" -> "1,300",
    "3.50" -> "4.50", "-3" -> "-4" (the magnitude grows, so the sign and every separator stay)."""
    sign = "-" if number.startswith("-") else ""
    whole, dot, decimals = number.removeprefix("-").partition(".")
    value = int(whole.replace(",", "") or "0") + 1
    return f"{sign}{value:,}{dot}{decimals}" if "," in whole else f"{sign}{value}{dot}{decimals}"


def with_changed_answer(response: str, marked_only: bool = False) -> str | None:
    """The response with the last number of its final answer changed (`changed_number`); None when that answer has
    no number. `marked_only`: only an answer stated with a marker, or a response that is just a number (how `auto`
    tells math from text whose family is not known)."""
    span = final_answer_span(response)
    if span is None and marked_only and _NUMBER_ONLY.fullmatch(response.strip()) is None:
        return None
    start, end = span if span else (0, len(response))
    numbers = numbers_in(response[start:end])
    if not numbers:
        return None
    a, b = numbers[-1]
    a, b = start + a, start + b
    return response[:a] + changed_number(response[a:b]) + response[b:]


def same_prompt_rejected(rows: Sequence[Example], marked_only: bool = False) -> tuple[list[Example] | None, int]:
    """Each row's same-prompt rejected response (ids derived from the row's), or None with the number of rows that
    have none (the rule then covers the set only partly, and a partial set is never used)."""
    out, missing = [], 0
    for row in rows:
        changed = with_changed_answer(row.response, marked_only)
        if changed is None:
            missing += 1
            continue
        out.append(Example(stable_id(row.example_id, "same_prompt_rejected"), row.instruction, changed))
    return (None, missing) if missing else (out, 0)
