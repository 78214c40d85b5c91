"""Every figure and table of a set of models' summaries, plus an index page (no Dagster here).

Layout under `out_dir`: `<model>/<dataset>_{levels,correct_vs_wrong,heatmap}.{png,pdf}`,
`<model>/<dataset>_{levels_log,relative_difference}.*` (where they apply), `<model>/<family>_mad.{csv,md,tex}`,
`base_vs_instruct/…`, `cross_model/<dataset>.*`, `cross_model_mad.*`, `index.md`, `index.html` (grouped per model
and dataset; `Report.index`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lg_pipeline.analysis.study_overlay import STUDY_OVERLAY, add_study_overlays
from lg_pipeline.io.atomic import atomic_write_text
from lg_pipeline.vocabulary import FAMILIES, LEVEL_LABELS

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ModelInfo:
    name: str
    display_name: str
    kind: str  # base | instruct
    family: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    display_name: str
    family: str  # math | commonsense | wiki
    demo_levels: frozenset[str] = frozenset()  # levels whose rows are built-in demo data

    def level_labels(self) -> dict[str, str]:
        return {k: v + (" [demo data]" if k in self.demo_levels else "") for k, v in LEVEL_LABELS.items()}


# What a record shows. Figures have a PNG first among their files; tables carry their DataFrame.
LEVELS, LEVELS_LOG, CORRECT_VS_WRONG, HEATMAP = "levels", "levels_log", "correct_vs_wrong", "heatmap"
BASE_VS_INSTRUCT, CROSS_MODEL = "base_vs_instruct", "cross_model"
MAD_TABLE, CROSS_MODEL_MAD, RELATIVE_DIFFERENCE = "mad_table", "cross_model_mad", "relative_difference"
FIGURE_KINDS = (LEVELS, LEVELS_LOG, CORRECT_VS_WRONG, HEATMAP, BASE_VS_INSTRUCT, CROSS_MODEL, STUDY_OVERLAY)


@dataclass(frozen=True)
class Artifact:
    """One figure or table: what it shows (kind, models, datasets) and the files it was written to.

    `datasets` is None when it draws on every dataset of its models (the cross-model table).
    """

    kind: str
    title: str
    models: tuple[str, ...]
    datasets: tuple[str, ...] | None
    files: tuple[Path, ...]
    table: pd.DataFrame | None = field(default=None, compare=False)

    @property
    def is_figure(self) -> bool:
        return self.kind in FIGURE_KINDS

    @property
    def png(self) -> Path | None:
        return next((p for p in self.files if p.suffix == ".png"), None)


@dataclass
class Report:
    artifacts: list[Artifact] = field(default_factory=list)
    index: Path | None = None

    @property
    def figures(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.is_figure]

    @property
    def tables(self) -> list[Artifact]:
        return [a for a in self.artifacts if not a.is_figure]

    def add(self, kind: str, title: str, models, datasets, files, table=None) -> None:
        self.artifacts.append(
            Artifact(kind, title, tuple(models), None if datasets is None else tuple(datasets), tuple(files), table)
        )


def build_report(
    curves: pd.DataFrame,
    mad: pd.DataFrame,
    models: dict[str, ModelInfo],
    datasets: dict[str, DatasetInfo],
    out_dir: Path,
) -> Report:
    """Draw the study's figures for every (model, dataset) in `curves`, and its MAD tables."""
    report = Report()
    for model in sorted(curves.model.unique()):
        _model_figures(curves[curves.model == model], models[model], datasets, out_dir / model, report)
        _model_tables(mad[mad.model == model], models[model], datasets, out_dir / model, report)
    _base_vs_instruct(curves, models, datasets, out_dir / "base_vs_instruct", report)
    _cross_model(curves, models, datasets, out_dir / "cross_model", report)
    add_study_overlays(curves, models, datasets, out_dir / "study_overlay", report)
    if len(mad):
        from lg_pipeline.analysis.tables import cross_model_table

        title = "Cross-model MAD of nuclear norm"
        table = cross_model_table(mad)
        files = _write_table(title, table, out_dir / "cross_model_mad")
        report.add(CROSS_MODEL_MAD, title, sorted(mad.model.unique()), None, files, table)
    report.index = _write_index(report, out_dir)
    return report


def _label(ds: DatasetInfo) -> str:
    return ds.display_name + (" [demo data]" if ds.demo_levels else "")


def _model_figures(curves, model: ModelInfo, datasets, out: Path, report: Report) -> None:
    from lg_pipeline.analysis.plotting import plot_correct_vs_wrong, plot_heatmap, plot_level_panels, spans_decades
    from lg_pipeline.analysis.tables import relative_difference_table

    for name in sorted(curves.dataset.unique()):
        ds, one = datasets[name], curves[curves.dataset == name]
        title = f"{model.display_name} · {_label(ds)}"
        labels, args = ds.level_labels(), (model.display_name, _label(ds), "nuclear_norm")
        files = plot_level_panels(one, *args, out / f"{name}_levels", labels, include_ratio=True)
        report.add(LEVELS, f"{title} · nuclear norm and ratio per layer, by level", [model.name], [name], files)
        correct = one[(one.correctness == "correct") & (one.statistic == "nuclear_norm")]
        if spans_decades(correct) or spans_decades(correct, "module"):  # levels or projections tenfold apart
            files = plot_level_panels(one, *args, out / f"{name}_levels_log", labels, include_ratio=True, log_y=True)
            log_title = f"{title} · nuclear norm and ratio per layer, by level (log y)"
            report.add(LEVELS_LOG, log_title, [model.name], [name], files)
        if one.correctness.nunique() > 1:
            files = plot_correct_vs_wrong(one, *args, out / f"{name}_correct_vs_wrong", labels)
            report.add(CORRECT_VS_WRONG, f"{title} · correct vs wrong, nuclear norm", [model.name], [name], files)
            table = relative_difference_table(one)
            table_title = f"{title} · relative difference correct vs wrong (%), nuclear norm"
            files = _write_table(table_title, table, out / f"{name}_relative_difference")
            report.add(RELATIVE_DIFFERENCE, table_title, [model.name], [name], files, table)
        files = plot_heatmap(one, model.display_name, _label(ds), out / f"{name}_heatmap", labels)
        report.add(HEATMAP, f"{title} · heat map of nuclear norm, layer x projection", [model.name], [name], files)


def _cross_model(curves, models: dict[str, ModelInfo], datasets, out: Path, report: Report) -> None:
    """Every model with results on a dataset, on one axis (where two or more share it)."""
    from lg_pipeline.analysis.plotting import plot_cross_model

    for name in sorted(curves.dataset.unique()):
        one = curves[curves.dataset == name]
        names = sorted(one.model.unique())
        if len(names) < 2:
            continue
        displays = {m: models[m].display_name for m in names}
        files = plot_cross_model(one, displays, _label(datasets[name]), "nuclear_norm", out / name,
                                 datasets[name].level_labels())  # fmt: skip
        title = f"Every model · {_label(datasets[name])} · nuclear norm per depth"
        report.add(CROSS_MODEL, title, names, [name], files)


def _model_tables(mad, model: ModelInfo, datasets, out: Path, report: Report) -> None:
    from lg_pipeline.analysis.tables import family_table

    present = set(mad.dataset.unique())
    for family in FAMILIES:
        names = [n for n, d in datasets.items() if d.family == family and n in present]
        if names:
            table = family_table(mad, model.name, names)
            title = f"{model.display_name} · {family} · MAD of nuclear norm"
            files = _write_table(title, table, out / f"{family}_mad")
            report.add(MAD_TABLE, title, [model.name], names, files, table)


def _write_table(title: str, table, out_base: Path) -> list[Path]:
    from lg_pipeline.analysis.tables import write_table

    return write_table(table, out_base, caption=title)


def _base_vs_instruct(curves, models, datasets, out: Path, report: Report) -> None:
    """Side by side where one family has both a base and an instruct model with results."""
    from lg_pipeline.analysis.plotting import plot_base_vs_instruct

    present = [models[m] for m in curves.model.unique()]
    for base in (m for m in present if m.kind == "base"):
        for inst in (m for m in present if m.kind == "instruct" and m.family == base.family):
            shared = set(curves[curves.model == base.name].dataset) & set(curves[curves.model == inst.name].dataset)
            for name in sorted(shared):
                one = curves[curves.dataset == name]
                files = plot_base_vs_instruct(
                    one[one.model == base.name],
                    one[one.model == inst.name],
                    base.display_name,
                    inst.display_name,
                    _label(datasets[name]),
                    "nuclear_norm",
                    out / f"{base.name}__{inst.name}__{name}",
                    datasets[name].level_labels(),
                )
                title = f"{base.display_name} vs {inst.display_name} · {_label(datasets[name])}"
                report.add(BASE_VS_INSTRUCT, title, [base.name, inst.name], [name], files)


def group_of(item: Artifact) -> str:
    """The heading a figure or table is listed under: its model(s), then its dataset(s)."""
    models = " vs ".join(item.models) if len(item.models) <= 3 else "every model"
    datasets = ", ".join(item.datasets) if item.datasets else "all datasets"
    return f"{models} · {datasets}"


def grouped(items: list[Artifact]) -> dict[str, list[Artifact]]:
    """Artifacts by `group_of`, single-model groups first, in a stable order."""
    out: dict[str, list[Artifact]] = {}
    for item in sorted(items, key=lambda a: (len(a.models) > 1, a.models, a.datasets or ())):
        out.setdefault(group_of(item), []).append(item)
    return out


def _write_index(report: Report, out_dir: Path) -> Path:
    """index.md and index.html linking every figure and table of this run, grouped per model and dataset;
    returns the HTML page (what a person opens)."""
    md = ["# lg-pipeline figures", ""]
    page = ["<html><head><meta charset='utf-8'><title>lg-pipeline figures</title></head><body>"]
    page.append("<h1>lg-pipeline figures</h1>")
    for group, items in grouped(report.artifacts).items():
        md += [f"## {group}", ""]
        page.append(f"<h2>{html.escape(group)}</h2>")
        for item in items:
            rel = [p.relative_to(out_dir) for p in item.files]
            md.append(f"- {item.title}: " + ", ".join(f"[{p.suffix[1:]}]({p})" for p in rel))
            links = " ".join(f"<a href='{html.escape(str(p))}'>{p.suffix[1:]}</a>" for p in rel)
            page.append(f"<h3>{html.escape(item.title)}</h3><p>{links}</p>")
            if item.png is not None:
                page.append(f"<img src='{html.escape(str(item.png.relative_to(out_dir)))}' style='max-width:100%'>")
            elif item.table is not None:
                page.append(_html_table(item.table))
        md.append("")
    page.append("</body></html>")
    atomic_write_text(out_dir / "index.md", "\n".join(md))
    return atomic_write_text(out_dir / "index.html", "\n".join(page))


def _html_table(table) -> str:
    flat = table.copy()
    flat.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in flat.columns]
    return flat.reset_index().to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
