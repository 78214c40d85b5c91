"""How many response tokens of each probe `max_length` cuts, and the refusal of cut probes.

A probe cut at `max_length` is measured on part of its response only: its log-probability (and every change of
it) then describes another, shorter response, silently. So each probe's cut is counted before training (the
`cut_tokens` column of the run's `probes` table), and a run refuses cut probes unless it is told to allow them.
The count follows the `pair` encoding the run measures with (`gradients.encoding.encode`: prompt ids, then
response ids, cut at `max_length`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lg_pipeline.dynamics.learning.probes import Probe
from lg_pipeline.errors import SettingsError, setting
from lg_pipeline.gradients.encoding import prompt_ids


def cut_tokens(tokenizer: Any, probe: Probe, chat: bool, max_length: int) -> int:
    """Response tokens of `probe` beyond `max_length` (0 when it fits; all of them when none is left)."""
    prompt = prompt_ids(tokenizer, probe.instruction, chat)
    response = tokenizer(probe.response, add_special_tokens=False)["input_ids"]
    return max(0, min(len(response), len(prompt) + len(response) - max_length))


def probe_cuts(tokenizer: Any, probes: Sequence[Probe], chat: bool, max_length: int) -> dict[str, int]:
    """`cut_tokens` of every probe, by probe id."""
    return {p.probe_id: cut_tokens(tokenizer, p, chat, max_length) for p in probes}


def cut_probes_line(probes: Sequence[Probe], cuts: Mapping[str, int], max_length: int) -> str:
    """What a run that allows cut probes says of them, in one line."""
    cut = [p for p in probes if cuts.get(p.probe_id, 0) > 0]
    worst = max(cut, key=lambda p: cuts[p.probe_id])
    return (
        f"{len(cut)} of {len(probes)} probes cut at max_length={max_length} (most: {cuts[worst.probe_id]} response "
        f"tokens of {worst.probe_type} {worst.probe_id}); measured on what is left (probes.cut_tokens)"
    )


def refuse_cut_probes(probes: Sequence[Probe], cuts: Mapping[str, int], max_length: int) -> None:
    """A SettingsError naming the first cut probe and how many tokens were cut (and how many more probes are)."""
    cut = [p for p in probes if cuts.get(p.probe_id, 0) > 0]
    if not cut:
        return
    first = cut[0]
    more = f" (and {len(cut) - 1} more probes)" if len(cut) > 1 else ""
    text = (
        f"{max_length} cuts {cuts[first.probe_id]} response tokens of probe {first.probe_id} "
        f"({first.probe_type} of prompt {first.prompt_id}){more}; raise it, or allow cut probes"
    )
    raise SettingsError([setting("max_length", text) + " ({allow_probe_truncation})"])
