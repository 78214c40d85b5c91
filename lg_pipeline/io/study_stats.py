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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lg_pipeline.errors import InputError
from lg_pipeline.example import number_repeats, stable_id
from lg_pipeline.io.atomic import atomic_write_text, write_parquet
from lg_pipeline.schema import GRADIENT_COLUMNS, MATRIX_STATS, STUDY_NAMES
from lg_pipeline.vocabulary import CORRECTNESS, layer_index

VARIANT_COLUMNS: tuple[str, ...] = ("model", "dataset", "level", "correctness")
LONG_COLUMNS: tuple[str, ...] = (*GRADIENT_COLUMNS, *VARIANT_COLUMNS)
IMPORT_KIND = "study_import"  # the manifest kind of an imported table
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


MAX_LAYER = 100_000  # no model has more layers; a larger index is a corrupt name, not a layer


def record_rows(record: dict[str, Any], example_id: str, where: str = "line") -> list[dict[str, Any]]:
    """Long-table rows (without variant columns) from one study JSONL object; a value that is not what the study
    writes (a string loss, a string statistic, an absurd layer index) is an InputError naming `where`."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: a JSON {type(record).__name__}, not an object of statistics")
    common = {
        "example_id": example_id,
        "loss": _number(record.get("loss", math.nan), f"{where}: loss"),
        "n_tokens": _count(record.get("n_tokens"), f"{where}: n_tokens"),
        "n_response_tokens": _count(record.get("n_response_tokens"), f"{where}: n_response_tokens"),
    }
    rows = []
    for name, value in record.items():
        parsed = parse_parameter(name) if isinstance(value, dict) else None
        if parsed is None:
            continue
        if parsed[0] > MAX_LAYER:
            raise InputError(f"{where}: layer {parsed[0]} of {name} is out of range (at most {MAX_LAYER})")
        stats = {_FROM_STUDY[k]: _number(v, f"{where}: {name} {k}") for k, v in value.items() if k in _FROM_STUDY}
        rows.append({**common, "layer": parsed[0], "module": parsed[1], "parameter": name, **stats})
    return rows


def _number(value: Any, what: str) -> float:
    """A statistic as the study writes it: a number, or null/NaN for one it has not."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} is not a number ({json.dumps(value)[:40]})")
    return float(value)


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise InputError(f"{what} is not a token count ({json.dumps(value)[:40]})")
    return value


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
    records: list[tuple[int, Any]] = []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append((index, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {index + 1}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise InputError(f"{path} line {index + 1}: JSON nested too deeply") from None
        if not isinstance(records[-1][1], dict):
            raise InputError(f"{path} line {index + 1}: a JSON {type(records[-1][1]).__name__}, not an object")
    ids = number_repeats(_example_id(record, index) for index, record in records)
    rows = [
        row
        for (index, record), eid in zip(records, ids, strict=True)
        for row in record_rows(record, eid, f"{path} line {index + 1}")
    ]
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
    """Write every (model, dataset, level, correctness) of `stats` into the study's layout under `root`.

    Every target is planned (and checked to stay inside `root`) before the first file is written, so a refused
    table leaves `root` as it was.
    """
    root = Path(root)
    planned: dict[Path, tuple[StudyFile, pd.DataFrame]] = {}
    for key, part in stats.groupby(["model", "dataset", "level", "correctness"], sort=True):
        file = StudyFile(*(path_component(str(v), name) for v, name in zip(key, VARIANT_COLUMNS, strict=True)))
        target = root / file.relpath()
        if not target.resolve().is_relative_to(root.resolve()):
            raise ValueError(f"{file} would be written outside {root} ({target})")
        if target in planned:
            raise ValueError(f"{file} and {planned[target][0]} would both be written to {target}")
        planned[target] = (file, part)
    for target, (_, part) in planned.items():
        write_study_jsonl(part, target)
    return list(planned)


def path_component(value: str, what: str) -> str:
    """`value` as one component of a path: no separator, no `.` or `..`, not absolute, not empty, printable.

    Model, dataset and level names become folder and file names of the export; a table's value is data, and data
    must not choose where a file is written.
    """
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or Path(value).is_absolute()
        or not value.isprintable()
    ):
        raise ValueError(f"{what} {value!r} is not a single path component (no '/', '\\', '..' or absolute name)")
    return value


# --------------------------------------------------------------------------- user paths (the CLI)


def export_stats_tables(
    paths: Iterable[str | Path], root: str | Path, given: Mapping[str, str] | None = None
) -> list[Path]:
    """`export-study`: our Parquet tables into the study's layout under `root`.

    A table's model, dataset, level and correctness come from its columns (a Dagster table), else from its run
    manifest (a CLI table), else from `given` (the command's flags). Every table is read and checked before
    anything is written.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"--out {root}: not a folder")
    frames = [_export_frame(Path(path), given or {}) for path in paths]
    try:
        return export_study_tree(pd.concat(frames, ignore_index=True), root)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _export_frame(path: Path, given: Mapping[str, str]) -> pd.DataFrame:
    """One table's rows with its variant columns filled in; an InputError naming `path` for anything else."""
    from lg_pipeline.io.manifest import read_manifest

    frame = read_table(path, "statistics table")
    missing = [c for c in GRADIENT_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: lacks column(s) {', '.join(missing)} (not a gradient-statistics table)")
    words = [c for c in ("loss", *MATRIX_STATS) if not pd.api.types.is_numeric_dtype(frame[c])]
    if words:
        raise InputError(f"{path}: column(s) {', '.join(words)} hold text, not numbers")
    if frame.empty:
        raise InputError(f"{path}: no rows to export")
    manifest = read_manifest(path) or {}
    unknown = []
    for column in VARIANT_COLUMNS:
        if column in frame.columns:
            continue
        value = _manifest_value(manifest, column) or given.get(column)
        if not value:
            unknown.append(column)
        frame = frame.assign(**{column: value})
    if unknown:
        flags = ", ".join(f"--{c}" for c in unknown)
        raise InputError(f"{path}: lacks column(s) {', '.join(unknown)}, and its manifest does not say them "
                         f"(pass {flags})")
    for column in VARIANT_COLUMNS:
        for value in frame[column].unique():
            try:
                path_component(str(value), column)
            except ValueError as exc:
                raise InputError(f"{path}: {exc}") from None
    bad = sorted(set(frame.correctness.astype(str)) - set(CORRECTNESS))
    if bad:
        raise InputError(f"{path}: correctness {bad[0]!r} is not one of {', '.join(CORRECTNESS)}")
    levels = sorted(set(frame.level.astype(str)) - {*LEVEL_VARIANTS, *WIKI_VARIANTS})
    if levels:
        raise InputError(f"{path}: level {levels[0]!r} has no study file name (known: {_known_levels()})")
    return frame[list(LONG_COLUMNS)]


def _manifest_value(manifest: Mapping[str, Any], column: str) -> str | None:
    """A variant column from a run manifest; a model given as a local folder is named by the folder's name."""
    value = manifest.get(column)
    if not isinstance(value, str) or not value:
        return None
    if column == "model" and manifest.get("model_source") == "local":
        return Path(value).name
    return value


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A Parquet table given on the command line; missing, a folder, empty or torn is one line naming it."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a {what}")
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes), not a {what}")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # ArrowInvalid, OSError: a torn or foreign file
        raise InputError(f"{path}: not a readable Parquet table ({type(exc).__name__})") from None


def import_study_table(root: str | Path, out: str | Path) -> pd.DataFrame:
    """`import-study`: every study file under `root` as one long table, written atomically to `out` with a
    manifest saying what it is (kind `study_import`, the folder it came from)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"study folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    try:
        frame = import_study_tree(root)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if frame.empty:
        raise InputError(f"{root}: the study files hold no statistics")
    write_parquet(frame, out, manifest={"kind": IMPORT_KIND, "data_file": root.name})
    return frame
