"""Variants read from the study's release folder: the first n rows in file order, as released.

Wrong sets are the release's own `*_wrong_answer_shuffle` files (checked to hold the same instructions in the same
order as the correct file); the gold answer comes from the None CoT file, or from the Simplified CoT's stated
answer where the release has no None CoT (MATH).
"""

from __future__ import annotations

from lg_pipeline.curation.answers import final_answer, normalize_answer, response_answer
from lg_pipeline.curation.settings import CurationSettings
from lg_pipeline.curation.spec import DatasetSpec
from lg_pipeline.curation.table import Table
from lg_pipeline.errors import InputError
from lg_pipeline.example import number_repeats, stable_id
from lg_pipeline.io.release import read_release_file

RELEASE_DETAILED_TEACHER = "GPT-4o (responses published in the study's release)"


def release_has(spec: DatasetSpec, level: str, settings: CurationSettings) -> bool:
    return bool(settings.release_dir) and spec.release_file(level, "correct") is not None


def _read_all(spec: DatasetSpec, level: str, correctness: str, settings: CurationSettings) -> list[tuple[str, str]]:
    return read_release_file(settings.release_dir, spec.release_file(level, correctness))


def _read(spec: DatasetSpec, level: str, correctness: str, settings: CurationSettings) -> list[tuple[str, str]]:
    return _read_all(spec, level, correctness, settings)[: settings.n_examples]


def _check_aligned(rows: list[tuple[str, str]], reference: list[tuple[str, str]], name: str, ref_name: str) -> None:
    """Levels and wrong sets must share instructions row by row, or comparisons across them mean nothing."""
    if len(rows) != len(reference):
        raise InputError(f"release file {name}: {len(rows)} rows, but {ref_name} has {len(reference)}")
    for i, ((a, _), (b, _)) in enumerate(zip(rows, reference, strict=True)):
        if a != b:
            raise InputError(f"release file {name} row {i}: instruction differs from {ref_name} row {i}")


def _ids(dataset: str, instructions: list[str]) -> tuple[list[str], int]:
    """Content ids; a repeated instruction (StrategyQA has one) gets an ordinal suffix so the released rows stay."""
    bases = [stable_id(dataset, instruction) for instruction in instructions]
    return number_repeats(bases), len(bases) - len(set(bases))


def _answers(spec: DatasetSpec, correct: list[tuple[str, str]], settings: CurationSettings, level: str) -> list[str]:
    if spec.answer_kind == "none":
        return [""] * len(correct)
    if spec.release_file("none", "correct"):
        gold = _read(spec, "none", "correct", settings)
        _check_aligned(gold, correct, spec.release_file("none", "correct"), spec.release_file(level, "correct"))
        return [answer.strip() for _, answer in gold]
    source = correct
    if spec.release_file("simplified", "correct") and level != "simplified":
        source = _read(spec, "simplified", "correct", settings)
        _check_aligned(source, correct, spec.release_file("simplified", "correct"), spec.release_file(level, "correct"))
    return [final_answer(response) or "" for _, response in source]


def from_release(spec: DatasetSpec, level: str, correctness: str, settings: CurationSettings) -> Table:
    released = _read_all(spec, level, "correct", settings)
    correct = released[: settings.n_examples]
    rows = correct
    name = spec.release_file(level, correctness)
    if correctness == "wrong":
        rows = _read(spec, level, "wrong", settings)
        _check_aligned(rows, correct, name, spec.release_file(level, "correct"))
    ids, duplicates = _ids(spec.name, [instruction for instruction, _ in correct])
    answers = _answers(spec, correct, settings, level)
    table = Table(ids, [i for i, _ in rows], [r for _, r in rows], answers, "release", cut_tokens=[None] * len(rows))
    table.accounting = {"source_rows": len(released), "examined": len(correct), "selected": len(correct)}
    table.meta.update(
        source=f"study release folder: {name}",
        selection=f"first {settings.n_examples} rows in file order",
        teacher=RELEASE_DETAILED_TEACHER if level == "detailed" else None,
        duplicate_instructions=duplicates,
    )
    if correctness == "wrong":
        table.meta["release_wrong_audit"] = _audit(spec, level, rows, correct, answers)
    return table


def _audit(spec: DatasetSpec, level: str, wrong: list, correct: list, answers: list[str]) -> dict[str, int]:
    """How the released shuffle compares with our wrong-set rule (reported, the released rows are kept as is)."""
    same_text = sum(w[1] == c[1] for w, c in zip(wrong, correct, strict=True))
    same_answer = sum(
        1
        for (_, response), gold in zip(wrong, answers, strict=True)
        if normalize_answer(gold) and response_answer(response, level, spec.answer_kind) == normalize_answer(gold)
    )
    return {"own_response": same_text, "same_final_answer_as_gold": same_answer}
