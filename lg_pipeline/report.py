"""Every figure and table of a set of models' summaries, plus an index page (no Dagster here).

Layout under `out_dir`: `<model>/<dataset>_{levels,correct_vs_wrong,heatmap}.{png,pdf}`,
`<model>/<family>_mad.{csv,md,tex}`, `base_vs_instruct/…`, `cross_model_mad.*`, `index.md`, `index.html`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lg_pipeline.storage import atomic_write_text

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
        from lg_pipeline.analysis import LEVEL_LABELS

        return {k: v + (" [demo data]" if k in self.demo_levels else "") for k, v in LEVEL_LABELS.items()}


@dataclass
class Report:
    figures: dict[str, list[Path]] = field(default_factory=dict)  # title -> files (png first)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # title -> MAD table
    table_files: dict[str, list[Path]] = field(default_factory=dict)  # title -> csv, md, tex
    index: Path | None = None


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
    if len(mad):
        from lg_pipeline.tables import cross_model_table

        _table(report, "Cross-model MAD of nuclear norm", cross_model_table(mad), out_dir / "cross_model_mad")
    report.index = _write_index(report, out_dir)
    return report


def _label(ds: DatasetInfo) -> str:
    return ds.display_name + (" [demo data]" if ds.demo_levels else "")


def _model_figures(curves, model: ModelInfo, datasets, out: Path, report: Report) -> None:
    from lg_pipeline.plotting import plot_correct_vs_wrong, plot_heatmap, plot_level_panels

    for name in sorted(curves.dataset.unique()):
        ds, one = datasets[name], curves[curves.dataset == name]
        title = f"{model.display_name} · {_label(ds)}"
        report.figures[f"{title} · nuclear norm per layer"] = plot_level_panels(
            one,
            model.display_name,
            _label(ds),
            "nuclear_norm",
            out / f"{name}_levels",
            ds.level_labels(),
            include_ratio=True,
        )
        if one.correctness.nunique() > 1:
            report.figures[f"{title} · correct vs wrong"] = plot_correct_vs_wrong(
                one, model.display_name, _label(ds), "nuclear_norm", out / f"{name}_correct_vs_wrong", ds.level_labels()
            )
        report.figures[f"{title} · heat map"] = plot_heatmap(
            one, model.display_name, _label(ds), out / f"{name}_heatmap", ds.level_labels()
        )


def _model_tables(mad, model: ModelInfo, datasets, out: Path, report: Report) -> None:
    from lg_pipeline.tables import family_table

    present = set(mad.dataset.unique())
    for family in ("math", "commonsense", "wiki"):
        names = [n for n, d in datasets.items() if d.family == family and n in present]
        if names:
            table = family_table(mad, model.name, names)
            _table(report, f"{model.display_name} · {family} · MAD of nuclear norm", table, out / f"{family}_mad")


def _table(report: Report, title: str, table, out_base: Path) -> None:
    from lg_pipeline.tables import write_table

    report.table_files[title] = write_table(table, out_base, caption=title)
    report.tables[title] = table


def _base_vs_instruct(curves, models, datasets, out: Path, report: Report) -> None:
    """Side by side where one family has both a base and an instruct model with results."""
    from lg_pipeline.plotting import plot_base_vs_instruct

    present = [models[m] for m in curves.model.unique()]
    for base in (m for m in present if m.kind == "base"):
        for inst in (m for m in present if m.kind == "instruct" and m.family == base.family):
            shared = set(curves[curves.model == base.name].dataset) & set(curves[curves.model == inst.name].dataset)
            for name in sorted(shared):
                one = curves[curves.dataset == name]
                report.figures[f"{base.display_name} vs {inst.display_name} · {_label(datasets[name])}"] = (
                    plot_base_vs_instruct(
                        one[one.model == base.name],
                        one[one.model == inst.name],
                        base.display_name,
                        inst.display_name,
                        _label(datasets[name]),
                        "nuclear_norm",
                        out / f"{base.name}__{inst.name}__{name}",
                        datasets[name].level_labels(),
                    )
                )


def _write_index(report: Report, out_dir: Path) -> Path:
    """index.md and index.html linking every figure and table of this run."""
    md = ["# lg-pipeline figures", ""]
    page = ["<html><head><meta charset='utf-8'><title>lg-pipeline figures</title></head><body>"]
    for title, files in report.figures.items():
        links = ", ".join(f"[{p.suffix[1:]}]({p.relative_to(out_dir)})" for p in files)
        md.append(f"- {title}: {links}")
        png = next(p for p in files if p.suffix == ".png").relative_to(out_dir)
        page.append(f"<h3>{html.escape(title)}</h3><img src='{png}' style='max-width:100%'>")
    md += ["", "## Tables", ""]
    for title, files in report.table_files.items():
        md.append(f"- {title}: " + ", ".join(f"[{p.suffix[1:]}]({p.relative_to(out_dir)})" for p in files))
    page.append("</body></html>")
    atomic_write_text(out_dir / "index.html", "\n".join(page))
    return atomic_write_text(out_dir / "index.md", "\n".join(md) + "\n")
