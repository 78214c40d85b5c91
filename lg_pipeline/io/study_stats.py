"""Import and export of the study's gradient-statistics JSONL files.

The study writes one file per (task, model, dataset variant):
`grads_exp/<task>/<model>/grads_<dataset>_<variant>.jsonl`, one JSON object per example:
`{"instruction", "output", "loss", "<parameter name>": {M_mean, M_max, M_min,
frobenius_norm, S_sum, S_max, S_min}, ...}` with parameter names such as
`model.layers.3.self_attn.q_proj.weight`. Reading that layout lets us compare our
numbers with released ones; writing it lets the study's own plotting scripts read ours.

Name mapping (ours <-> study's):
- correctness `wrong` <-> task suffix `_wrong_answer_shuffle`;
- levels none/simplified/detailed <-> `no_cot`/`with_cot`/`with_cot_gpt4o`; our
  `math_<subject>` datasets live in task `lighteval_math` as `<subject>`, every other
  reasoning dataset in task `cot_500` as `<dataset>_train`;
- wiki levels len100/len500/len1000/longtail <-> `popular_wikipedia_{100,500,1000}` and
  `long_tail_wikipedia` in task `wiki_popularity`, dataset `wiki`;
- model folders: the study's short names map to our model keys (`STUDY_MODELS`), others pass through.
Extra keys we write (`example_id`, `n_tokens`, `n_response_tokens`) are ignored by the study's scripts.
Per matrix exactly the study's seven keys are written; our statistics it has no name for
(`schema.STUDY_EXTRAS`: effective and stable rank) are left out and read back as NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lg_pipeline.errors import InputError
from lg_pipeline.example import number_repeats, stable_id
from lg_pipeline.io.atomic import atomic_write_text, write_parquet
from lg_pipeline.schema import GRADIENT_COLUMNS, MATRIX_STATS, STUDY_NAMES
from lg_pipeline.vocabulary import layer_index

LONG_COLUMNS: tuple[str, ...] = (*GRADIENT_COLUMNS, "model", "dataset", "level", "correctness")
WRONG_SUFFIX = "_wrong_answer_shuffle"
REASONING_TASK, MATH_TASK, WIKI_TASK = "cot_500", "lighteval_math", "wiki_popularity"
MATH_PREFIX = "math_"  # our MATH datasets are math_<subject>; the study names files by subject
WIKI_DATASET = "wiki"
LEVEL_VARIANTS: dict[str, str] = {"none": "no_cot", "simplified": "with_cot", "detailed": "with_cot_gpt4o"}
WIKI_VARIANTS: dict[str, str] = {
    "len100": "popular_wikipedia_100",
    "len500": "popular_wikipedia_500",
    "len1000": "popular_wikipedia_1000",
    "longtail": "long_tail_wikipedia",
}
# The study's model folder -> our model key (data_sources/models.yaml where it lists one).
STUDY_MODELS: dict[str, str] = {
    "qwen2_1_5b": "qwen2-1.5b",
    "qwen2_1_5b_it_new": "qwen2-1.5b-instruct",
    "llama3_8b": "llama-3.1-8b",
    "llama3_8b_it_new": "llama-3.1-8b-instruct",
    "gemma2_2b": "gemma-2-2b",
    "gemma2_2b_it_new": "gemma-2-2b-it",
    "gemma_2_9b": "gemma-2-9b",
    "gemma_2_9b_it_new": "gemma-2-9b-it",
    "llama2_7b": "llama-2-7b",
    "llama2_7b_it_new": "llama-2-7b-chat",
}
OUR_MODELS: dict[str, str] = {ours: study for study, ours in STUDY_MODELS.items()}
_FROM_STUDY: dict[str, str] = {study: ours for ours, study in STUDY_NAMES.items()}


@dataclass(frozen=True)
class StudyFile:
    """What one study JSONL file holds, in our vocabulary."""

    model: str
    dataset: str
    level: str
    correctness: str

    def relpath(self) -> Path:
        """`<task>/<model>/grads_<...>.jsonl` under the study's `grads_exp` folder."""
        suffix = WRONG_SUFFIX if self.correctness == "wrong" else ""
        model = OUR_MODELS.get(self.model, self.model)
        if self.level in WIKI_VARIANTS:
            return Path(WIKI_TASK + suffix, model, f"grads_{WIKI_VARIANTS[self.level]}.jsonl")
        if self.level not in LEVEL_VARIANTS:
            raise ValueError(f"level '{self.level}' has no study file name (known: {_known_levels()})")
        if self.dataset.startswith(MATH_PREFIX):
            task, name = MATH_TASK, self.dataset.removeprefix(MATH_PREFIX)
        else:
            task, name = REASONING_TASK, f"{self.dataset}_train"
        return Path(task + suffix, model, f"grads_{name}_{LEVEL_VARIANTS[self.level]}.jsonl")


def _known_levels() -> str:
    return ", ".join([*LEVEL_VARIANTS, *WIKI_VARIANTS])


def parse_study_path(path: str | Path) -> StudyFile:
    """Model, dataset, level and correctness from `.../<task>/<model>/grads_<...>.jsonl`."""
    path = Path(path)
    task, folder, stem = path.parent.parent.name, path.parent.name, path.stem
    correctness = "wrong" if task.endswith(WRONG_SUFFIX) else "correct"
    task = task.removesuffix(WRONG_SUFFIX)
    model = STUDY_MODELS.get(folder, folder)
    if not stem.startswith("grads_"):
        raise ValueError(f"{path}: study files are named grads_<dataset>_<variant>.jsonl")
    name = stem.removeprefix("grads_")
    if task == WIKI_TASK:
        level = next((lv for lv, v in WIKI_VARIANTS.items() if v == name), None)
        if level is None:
            raise ValueError(f"{path}: unknown wiki variant '{name}'")
        return StudyFile(model, WIKI_DATASET, level, correctness)
    if task not in (REASONING_TASK, MATH_TASK):
        raise ValueError(f"{path}: unknown study task folder '{task}'")
    for level, variant in LEVEL_VARIANTS.items():  # none is a suffix of another, so order does not matter
        if name.endswith("_" + variant):
            dataset = name[: -len(variant) - 1]
            if task == REASONING_TASK:
                dataset = dataset.removesuffix("_train")
            else:
                dataset = MATH_PREFIX + dataset
            return StudyFile(model, dataset, level, correctness)
    raise ValueError(f"{path}: name does not end in one of {', '.join(LEVEL_VARIANTS.values())}")


def parse_parameter(name: str) -> tuple[int, str] | None:
    """(layer, module) of a per-layer weight such as `model.layers.3.self_attn.q_proj.weight`."""
    layer = layer_index(name)
    if layer is None:
        return None
    return layer, name.removesuffix(".weight").split(".")[-1]


# --------------------------------------------------------------------------- import


def record_rows(record: dict[str, Any], example_id: str) -> list[dict[str, Any]]:
    """Long-table rows (without variant columns) from one study JSONL object."""
    common = {
        "example_id": example_id,
        "loss": record.get("loss", math.nan),
        "n_tokens": record.get("n_tokens"),
        "n_response_tokens": record.get("n_response_tokens"),
    }
    rows = []
    for name, value in record.items():
        parsed = parse_parameter(name) if isinstance(value, dict) else None
        if parsed is None:
            continue
        stats = {_FROM_STUDY[k]: v for k, v in value.items() if k in _FROM_STUDY}
        rows.append({**common, "layer": parsed[0], "module": parsed[1], "parameter": name, **stats})
    return rows


def _example_id(record: dict[str, Any], index: int) -> str:
    """Our id if the line carries one, else the content hash our loader gives the same example."""
    if "example_id" in record:
        return str(record["example_id"])
    if "instruction" in record and "output" in record:
        return stable_id(str(record["instruction"]), str(record["output"]))
    return f"line{index}"


def read_study_jsonl(path: str | Path, file: StudyFile | None = None) -> pd.DataFrame:
    """One study JSONL file as our long table; variant columns from `file` or the path."""
    path = Path(path)
    file = file or parse_study_path(path)
    records: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                records.append((index, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {index + 1}: not valid JSON ({exc.msg})") from None
    ids = number_repeats(_example_id(record, index) for index, record in records)
    rows = [row for (_, record), eid in zip(records, ids, strict=True) for row in record_rows(record, eid)]
    frame = pd.DataFrame(rows, columns=list(GRADIENT_COLUMNS))
    for column in ("n_tokens", "n_response_tokens"):
        frame[column] = pd.to_numeric(frame[column])
    return frame.assign(model=file.model, dataset=file.dataset, level=file.level, correctness=file.correctness)


def import_study_tree(root: str | Path) -> pd.DataFrame:
    """Every `<task>/<model>/grads_*.jsonl` under the study's `grads_exp` folder `root`."""
    paths = sorted(Path(root).glob("*/*/grads_*.jsonl"))
    if not paths:
        raise ValueError(f"no study files (<task>/<model>/grads_*.jsonl) under {root}")
    return pd.concat([read_study_jsonl(p) for p in paths], ignore_index=True)[list(LONG_COLUMNS)]


# --------------------------------------------------------------------------- export


def _json_number(value: Any) -> Any:
    """Plain Python numbers for json (numpy scalars are not serialisable); NaN is written as NaN,
    which Python's json reader, and so the study's scripts, accept."""
    return value.item() if hasattr(value, "item") else value


def example_record(rows: pd.DataFrame) -> dict[str, Any]:
    """One study JSONL object from all rows of one example."""
    first = rows.iloc[0]
    record: dict[str, Any] = {k: first[k] for k in ("instruction", "output") if k in rows.columns}
    record["example_id"] = str(first["example_id"])
    record["loss"] = _json_number(first["loss"])
    for column in ("n_tokens", "n_response_tokens"):
        if pd.notna(first[column]):
            record[column] = int(first[column])
    for row in rows.itertuples(index=False):
        record[row.parameter] = {STUDY_NAMES[s]: _json_number(getattr(row, s)) for s in _study_order()}
    return record


def _study_order() -> Iterable[str]:
    """Our stat names in the order the study writes them (M_*, frobenius, S_*)."""
    order = ("grad_mean", "grad_max", "grad_min", "frobenius_norm", "nuclear_norm", "sigma_max", "sigma_min")
    return [s for s in order if s in MATRIX_STATS]


def write_study_jsonl(stats: pd.DataFrame, path: str | Path) -> Path:
    """Write the rows of one variant as one study JSONL file, examples in first-seen order."""
    groups = stats.groupby("example_id", sort=False)
    lines = [json.dumps(example_record(rows.sort_values(["layer"], kind="stable"))) for _, rows in groups]
    return atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


def export_study_tree(stats: pd.DataFrame, root: str | Path) -> list[Path]:
    """Write every (model, dataset, level, correctness) of `stats` into the study's layout under `root`."""
    written: dict[Path, StudyFile] = {}
    for key, part in stats.groupby(["model", "dataset", "level", "correctness"], sort=True):
        file = StudyFile(*map(str, key))
        target = Path(root) / file.relpath()
        if target in written:
            raise ValueError(f"{file} and {written[target]} would both be written to {target}")
        written[target] = file
        write_study_jsonl(part, target)
    return list(written)


# --------------------------------------------------------------------------- user paths (the CLI)


def export_stats_tables(paths: Iterable[str | Path], root: str | Path) -> list[Path]:
    """`export-study`: our Parquet tables (with variant columns) into the study's layout under `root`."""
    frames = []
    for path in paths:
        frame = pd.read_parquet(path)
        missing = [c for c in LONG_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(f"{path}: lacks column(s) {', '.join(missing)} (the pipeline's gradient tables have them)")
        frames.append(frame[list(LONG_COLUMNS)])
    try:
        return export_study_tree(pd.concat(frames, ignore_index=True), root)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def import_study_table(root: str | Path, out: str | Path) -> pd.DataFrame:
    """`import-study`: every study file under `root` as one long table, written atomically to `out`."""
    if not Path(root).is_dir():
        raise InputError(f"{root}: not a folder")
    try:
        frame = import_study_tree(root)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    write_parquet(frame, out)
    return frame
