"""Cutting Wikipedia articles to a token budget (the study's ~100/500/1000-token popular articles).

Policy (documented in metadata): an article with fewer tokens than the budget is dropped and counted, never padded
or kept short. Otherwise every cut lands within ±5% (`CUT_TOLERANCE`) of the budget: the response is the longest
run of whole sentences that fits the budget when that run keeps at least 95% of it (`min_fraction`), i.e. when a
sentence end falls within [95%, 100%] of the budget; when none does, the text is cut mid-sentence at exactly the
budget (a subword tokenizer may count the re-tokenized prefix a token off). The curated table records each cut's
token count (`cut_token_count`), which the `curated_wiki_cut_length` check verifies. Tokens are the model
tokenizer's when one is given; otherwise a documented fallback (words and punctuation marks, which under-counts
subword tokens by roughly a quarter to a third on English prose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FALLBACK_TOKENIZER = "fallback: regex words and punctuation marks (approximate; pass a tokenizer for model tokens)"
_WORDS = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)|\n")
CUT_TOLERANCE = 0.05  # every cut is within ±5% of its token budget


class TokenCounter:
    """Token counts and exact-length prefixes under one tokenizer (a HF tokenizer or the regex fallback)."""

    def __init__(self, tokenizer: Any | None = None):
        self.tokenizer = tokenizer
        self.name = FALLBACK_TOKENIZER if tokenizer is None else _tokenizer_name(tokenizer)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count(self, text: str) -> int:
        return len(_WORDS.findall(text)) if self.tokenizer is None else len(self._ids(text))

    def prefix(self, text: str, n: int) -> str:
        """The text of the first n tokens."""
        if self.tokenizer is None:
            spans = [m.end() for m in _WORDS.finditer(text)]
            return text[: spans[n - 1]] if len(spans) >= n else text
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            return text[: offsets[n - 1][1]] if len(offsets) >= n else text
        return self.tokenizer.decode(self._ids(text)[:n], skip_special_tokens=True)


def _tokenizer_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or tokenizer.__class__.__name__)


@dataclass(frozen=True)
class Cut:
    text: str
    tokens: int
    how: str  # "sentence" (ends at a sentence end) | "exact" (cut mid-sentence at exactly the budget) | "whole"


def sentence_ends(text: str) -> list[int]:
    """Character offsets just after each sentence end (., !, ? with closing quotes/brackets, or a line break)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return sorted(set(ends + [len(text.rstrip())]))


def cut_to_tokens(text: str, budget: int, counter: TokenCounter, min_fraction: float = 1 - CUT_TOLERANCE) -> Cut | None:
    """Cut `text` to `budget` tokens by the policy above; None when the text is shorter than the budget.

    Whole sentences when the last sentence end within the budget keeps at least `min_fraction` of it (default 95%),
    else exactly `budget` tokens.
    """
    text = text.strip()
    total = counter.count(text)
    if total < budget:
        return None
    if total == budget:
        return Cut(text, total, "whole")
    ends = sentence_ends(text)
    lo, hi, best = 0, len(ends) - 1, None
    while lo <= hi:  # token counts grow with the end offset: binary search for the last end within budget
        mid = (lo + hi) // 2
        if counter.count(text[: ends[mid]]) <= budget:
            best, lo = ends[mid], mid + 1
        else:
            hi = mid - 1
    if best is not None:
        candidate = text[:best].strip()
        tokens = counter.count(candidate)
        if tokens >= min_fraction * budget:
            return Cut(candidate, tokens, "sentence")
    exact = counter.prefix(text, budget).strip()
    return Cut(exact, counter.count(exact), "exact")
