"""The study's MAD tables: rows per variant, columns module x (early, middle, late, all).

A table is a pandas DataFrame whose index holds the row keys (dataset/level/correctness
codes, or model for the cross-model summary) and whose columns are a two-level index
(module, third). Writers render it three ways: CSV keeps the raw codes for machines,
Markdown and LaTeX (booktabs) use display labels for people and papers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from lg_pipeline.analysis.curves import THIRDS, ordered
from lg_pipeline.io.atomic import atomic_write_text
from lg_pipeline.vocabulary import ATTENTION, CORRECTNESS_LABELS, LEVEL_LABELS, MODULE_LABELS

TABLE_THIRDS: tuple[str, ...] = (*THIRDS, "all")
THIRD_LABELS: dict[str, str] = {"early": "Early", "middle": "Middle", "late": "Late", "all": "All"}
KEY_LABELS: dict[str, str] = {"model": "Model", "dataset": "Dataset", "level": "Level", "correctness": "Response"}
_KEY_ORDER: dict[str, Sequence[str]] = {"level": tuple(LEVEL_LABELS), "correctness": tuple(CORRECTNESS_LABELS)}


# --------------------------------------------------------------------------- building


def mad_table(
    summary: pd.DataFrame,
    row_keys: Sequence[str] = ("level", "correctness"),
    statistic: str = "nuclear_norm",
    modules: Sequence[str] | None = None,
    where: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """Pivot a `mad_summary` into the study's layout.

    `where` filters rows first (a value or a list of values per column). Keys not in
    `row_keys` are averaged over, e.g. the cross-model table averages a model's MADs over
    the datasets of a family. Modules default to the attention projections present.
    """
    data = _filter(summary[summary["statistic"] == statistic], where or {})
    if data.empty:
        raise ValueError(f"no MAD summary rows for statistic '{statistic}' with filter {dict(where or {})}")
    mods = list(modules) if modules else [m for m in ATTENTION if m in set(data["module"])]
    long = data[data["module"].isin(mods)].melt(
        id_vars=[*row_keys, "module"], value_vars=[f"mad_{t}" for t in TABLE_THIRDS], var_name="third", value_name="mad"
    )
    long["third"] = long["third"].str.removeprefix("mad_")
    table = long.groupby([*row_keys, "module", "third"], dropna=False)["mad"].mean().unstack(["module", "third"])
    columns = pd.MultiIndex.from_product([mods, list(TABLE_THIRDS)], names=["module", "third"])
    table = table.reindex(columns=columns)
    return table.reindex(_row_order(table.index, row_keys))


def family_table(
    summary: pd.DataFrame,
    model: str,
    datasets: Sequence[str],
    statistic: str = "nuclear_norm",
    modules: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One model over the datasets of one family: rows (dataset, level, correctness)."""
    where = {"model": model, "dataset": list(datasets)}
    return mad_table(summary, ("dataset", "level", "correctness"), statistic, modules, where)


def cross_model_table(
    summary: pd.DataFrame,
    statistic: str = "nuclear_norm",
    datasets: Sequence[str] | None = None,
    modules: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows (model, level, correctness), each MAD averaged over the given (or all) datasets."""
    where = {"dataset": list(datasets)} if datasets else None
    return mad_table(summary, ("model", "level", "correctness"), statistic, modules, where)


def relative_difference_table(
    curves: pd.DataFrame, statistic: str = "nuclear_norm", modules: Sequence[str] | None = None
) -> pd.DataFrame:
    """Correct vs wrong of one model on one dataset: rows = level, cells = the mean over layers of the study's
    relative difference |correct - wrong| / |correct| (in %), per module over all layers and each third.
    """
    from lg_pipeline.analysis.curves import compare_curves, thirds

    data = curves[curves["statistic"] == statistic]
    per_layer = compare_curves(data, "correctness", "correct", "wrong")
    if per_layer.empty:
        raise ValueError(f"no level has both correct and wrong curves for statistic '{statistic}'")
    mods = list(modules) if modules else [m for m in ATTENTION if m in set(per_layer["module"])]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for (level, module), group in per_layer[per_layer["module"].isin(mods)].groupby(["level", "module"]):
        values = group.sort_values("layer")["rel_diff"].to_numpy() * 100
        split = thirds(len(values)).items() if len(values) >= 3 else ()
        parts = {"all": values, **{t: values[idx] for t, idx in split}}
        for third, part in parts.items():
            cells.setdefault((module, third), {})[level] = float(part.mean()) if len(part) else float("nan")
    table = pd.DataFrame(cells)
    table.index.name = "level"
    table = table.reindex(columns=pd.MultiIndex.from_product([mods, list(TABLE_THIRDS)], names=["module", "third"]))
    return table.reindex(_row_order(table.index, ["level"]))


def _filter(frame: pd.DataFrame, where: Mapping[str, object]) -> pd.DataFrame:
    for column, value in where.items():
        values = value if isinstance(value, (list, tuple, set)) else [value]
        frame = frame[frame[column].isin(values)]
    return frame


def _row_order(index: pd.Index, row_keys: Sequence[str]) -> pd.Index:
    """Levels and correctness in the study's order (None, Simplified, Detailed; correct first)."""
    frame = index.to_frame(index=False).astype(str)
    ranks = {}
    for key in row_keys:
        order = ordered(frame[key], _KEY_ORDER.get(key, ()))
        ranks[key] = frame[key].map({v: i for i, v in enumerate(order)})
    return index[pd.DataFrame(ranks).sort_values(list(row_keys), kind="stable").index]


# --------------------------------------------------------------------------- rendering


def _fmt(value: float, digits: int) -> str:
    return "--" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _label(key: str, value: object) -> str:
    labels = {"level": LEVEL_LABELS, "correctness": CORRECTNESS_LABELS}.get(key, {})
    return labels.get(str(value), str(value))


def _row_labels(table: pd.DataFrame) -> list[list[str]]:
    names = list(table.index.names)
    rows = table.index if isinstance(table.index, pd.MultiIndex) else [(v,) for v in table.index]
    return [[_label(k, v) for k, v in zip(names, row, strict=True)] for row in rows]


def _header_labels(table: pd.DataFrame) -> list[tuple[str, str]]:
    return [(MODULE_LABELS.get(m, m), THIRD_LABELS.get(t, t)) for m, t in table.columns]


def to_csv_text(table: pd.DataFrame) -> str:
    """Flat CSV: raw row keys, then one `<module>_<third>` column per cell."""
    flat = table.copy()
    flat.columns = [f"{m}_{t}" for m, t in table.columns]
    return flat.reset_index().to_csv(index=False, float_format="%.6g")


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub pipe table; headers read "Q Early" etc."""
    head = [KEY_LABELS.get(n, n) for n in table.index.names] + [f"{m} {t}" for m, t in _header_labels(table)]
    lines = [_pipe(head), _pipe(["---"] * len(table.index.names) + ["---:"] * table.shape[1])]
    for labels, values in zip(_row_labels(table), table.to_numpy(), strict=True):
        lines.append(_pipe(labels + [_fmt(v, digits) for v in values]))
    return "\n".join(lines) + "\n"


def _pipe(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters so dataset and model names print as written."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "", digits: int = 3) -> str:
    """A booktabs table: module headers spanning their thirds, with cmidrules under them."""
    n_keys = len(table.index.names)
    modules = list(dict.fromkeys(m for m, _ in _header_labels(table)))
    width = len(TABLE_THIRDS)
    spans = " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(m)}}}" for m in modules)
    rules = " ".join(
        rf"\cmidrule(lr){{{n_keys + 1 + i * width}-{n_keys + (i + 1) * width}}}" for i in range(len(modules))
    )
    keys = " & ".join(latex_escape(KEY_LABELS.get(n, n)) for n in table.index.names)
    thirds = " & ".join(latex_escape(t) for _, t in _header_labels(table))
    body = [
        " & ".join([latex_escape(x) for x in labels] + [_fmt(v, digits) for v in values]) + r" \\"
        for labels, values in zip(_row_labels(table), table.to_numpy(), strict=True)
    ]
    lines = [r"\begin{table}[t]", r"\centering"]
    lines += [rf"\caption{{{latex_escape(caption)}}}"] if caption else []
    lines += [rf"\label{{{label}}}"] if label else []
    lines += [
        rf"\begin{{tabular}}{{{'l' * n_keys}{'r' * table.shape[1]}}}",
        r"\toprule",
        " & ".join([""] * n_keys + [spans]) + r" \\",
        rules,
        keys + " & " + thirds + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files


def write_table(table: pd.DataFrame, out_base: Path, caption: str = "", label: str = "", digits: int = 3) -> list[Path]:
    """Write `<out_base>.csv`, `.md` and `.tex`; returns the paths written."""
    out_base = Path(out_base)
    texts = {
        ".csv": to_csv_text(table),
        ".md": to_markdown(table, digits),
        ".tex": to_latex(table, caption, label, digits),
    }
    return [atomic_write_text(out_base.with_name(out_base.name + ext), text) for ext, text in texts.items()]
