"""Rephrase probes: the chosen and the rejected response said otherwise, written by a teacher.

As in Ren & Sutherland's probes (y⁺_gpts, y⁺_gptf and their y⁻ twins): a *semantic-keeping* rephrase says the same
thing in another form, a *format-keeping* one keeps the form and says something else. Following both shows whether
an update moves what a response means or how it looks. Each trained prompt's `trained` (chosen) and `wrong`
(rejected) probe gets both, as probe types `chosen_rephrase:<kind>` and `rejected_rephrase:<kind>`.

The teacher is one of the curation's (`lg_pipeline.curation.teacher`: the HTTP one or a local transformers model),
asked through its cached `complete(prompt)`: a rerun asks nothing again. A teacher without it (the precomputed
one, which only holds Detailed CoT) writes no rephrases; one's own can be given in a probe file instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lg_pipeline.dynamics.learning.probes import Probe, probe_of
from lg_pipeline.example import Example

# The kinds of rephrase, and what the teacher is asked for each (the version names the wording: change it, bump it).
REPHRASE_VERSION = "rephrase-v1"
REPHRASE_PROMPTS = {
    "semantic": (
        "Rephrase the answer below so that it means exactly the same (every step, number and the final answer "
        "kept) but is written differently: other words, other sentence structure, another layout. Reply with the "
        "rephrased answer only.\n\nAnswer:\n{response}"
    ),
    "format": (
        "Rewrite the answer below keeping its format exactly (its layout, length, sentence patterns and markers "
        "such as '####' or '\\boxed{{}}') but changing what it says: other steps, other numbers, another final "
        "answer. Reply with the rewritten answer only.\n\nAnswer:\n{response}"
    ),
}
REPHRASED = {"trained": "chosen", "wrong": "rejected"}  # the probe rephrased -> the name of its rephrase types


def rephrase_types() -> list[str]:
    return [f"{name}_rephrase:{kind}" for name in REPHRASED.values() for kind in REPHRASE_PROMPTS]


def writes_rephrases(teacher: Any) -> bool:
    return callable(getattr(teacher, "complete", None))


def rephrase_probes(probes: Sequence[Probe], teacher: Any) -> list[Probe]:
    """Both rephrases of every `trained` and `wrong` probe, on the same prompt, in the probes' order."""
    out = []
    for probe in probes:
        name = REPHRASED.get(probe.probe_type)
        if name is None:
            continue
        row = Example(probe.prompt_id, probe.instruction, probe.response)
        for kind, template in REPHRASE_PROMPTS.items():
            text = teacher.complete(f"[{REPHRASE_VERSION}] " + template.format(response=probe.response)).strip()
            if text:
                out.append(probe_of(row, f"{name}_rephrase:{kind}", text))
    return out


def rephrase_line(teacher: Any) -> str | None:
    """What a run says when it writes no rephrase probes (None when it writes them)."""
    if teacher is None:
        return "rephrase probes: no teacher configured; left out"
    if not writes_rephrases(teacher):
        return f"rephrase probes: the teacher {getattr(teacher, 'name', teacher)!r} writes no rephrases; left out"
    return None
