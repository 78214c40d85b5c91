"""Final-answer parsing and normalisation.

Wrong-answer sets must never pair an instruction with a response that reaches the same final answer, and Detailed
CoT from a teacher is checked against the gold answer; both need "what answer does this text give", compared
after normalisation ("$1,200.00" == "1200", "(D)" == "d", "Yes." == "yes").
"""

from __future__ import annotations

import re

_FINAL = re.compile(r"(?:the final answer is|so the answer is|the answer is)[:\s]*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None when there is none."""
    span = _boxed_span(text)
    return text[span[0] : span[1]].strip() if span else None


def _boxed_span(text: str) -> tuple[int, int] | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return (begin, i - 1) if depth == 0 else None


def final_answer(text: str) -> str | None:
    """The answer a response states: "The final answer is X" (last one), else \\boxed{X}, else "#### X"."""
    matches = [m.group(1) for line in text.splitlines() if (m := _FINAL.search(line))]
    if matches:
        return matches[-1].strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hashes = _HASHES.findall(text)
    return hashes[-1].strip() if hashes else None


def final_answer_span(text: str) -> tuple[int, int] | None:
    """Where `final_answer` reads the answer: (start, end) in `text` of the last "The final answer is X", else of
    the last \\boxed{X}, else of the last "#### X"; None when the text states none of them."""
    found, offset = None, 0
    for line in text.splitlines(keepends=True):
        if m := _FINAL.search(line.rstrip("\r\n")):
            found = (offset + m.start(1), offset + m.end(1))
        offset += len(line)
    if found:
        return found
    boxed = _boxed_span(text)
    if boxed:
        return boxed
    hashes = list(_HASHES.finditer(text))
    return hashes[-1].span(1) if hashes else None


def numbers_in(text: str) -> list[tuple[int, int]]:
    """(start, end) of every number written in `text`, as `last_number` reads them."""
    return [m.span() for m in _NUMBER.finditer(text)]


def last_number(text: str) -> str | None:
    """The last number written in a text (how long free-form math responses usually end)."""
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _canonical_number(text: str) -> str | None:
    cleaned = re.sub(r"[$£€%\s]|\\\$|\\%", "", text).replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def normalize_answer(text: str | None) -> str:
    """A comparable form of an answer; empty when there is nothing to compare."""
    if not text:
        return ""
    s = _TEXT_WRAP.sub(r"\1", text.strip())
    s = s.strip().strip("$").strip().rstrip(".").strip()
    s = re.sub(r"\s+", " ", s).lower()
    number = _canonical_number(s)
    if number is not None:
        return number
    letter = re.fullmatch(r"\(?([a-e])\)", s) or re.fullmatch(r"([a-e])", s)
    return letter.group(1) if letter else s.strip("\"'")


def response_answer(response: str, level: str, answer_kind: str) -> str | None:
    """The normalised final answer a response gives, or None when it cannot be read off the text."""
    if answer_kind == "none":
        return None
    if level == "none":
        return normalize_answer(response) or None
    stated = final_answer(response)
    if stated is None and answer_kind == "number":
        stated = last_number(response)
    return normalize_answer(stated) or None


def agrees_with_gold(response: str, gold_forms: list[str], answer_kind: str) -> bool | None:
    """Does the response reach the gold answer? None when its answer cannot be read or there is no gold."""
    golds = {normalize_answer(g) for g in gold_forms if normalize_answer(g)}
    if not golds:
        return None
    stated = final_answer(response)
    numeric_gold = any(_canonical_number(g) is not None for g in golds)
    candidates = [stated] if stated is not None else []
    if numeric_gold:
        candidates.append(last_number(response))
    candidates = [normalize_answer(c) for c in candidates if c]
    if not candidates:
        return None
    return any(c in golds for c in candidates)
