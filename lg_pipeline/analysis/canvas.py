"""The one figure canvas every figure module draws on: a grid of panels, titles, the modules' colours, text that
stays legible where the figure is looked at, and PNG + PDF written atomically.

Figures are mostly read inline in the Dagster UI, scaled down to `DISPLAY_WIDTH_PX` (what fits the metadata dialog
on a 1280-px screen; `assets.metadata` shows them at that width). There one point of text is
DISPLAY_WIDTH_PX / (72 × the saved figure's width in inches) pixels, so the wider a figure, the smaller its text:
grids are capped at `MAX_WIDTH_IN`, titles are wrapped to the figure's width, and `save_figure` raises any text
still under `MIN_TEXT_PX` at the display width to that size (a caller that sized text by hand cannot make it
illegible). Everything draws with the Agg backend (no display needed).
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from lg_pipeline.io.atomic import atomic_write_bytes
from lg_pipeline.vocabulary import MODULE_COLORS, MODULE_LABELS

FORMATS: tuple[str, ...] = ("png", "pdf")
DPI = 120
PANEL_SIZE: tuple[float, float] = (4.5, 3.4)  # inches per panel before the width cap
MAX_WIDTH_IN = 12.0  # a grid wider than this has narrower panels: at the display width 9 pt text is ~10 px
MAX_COLUMNS = 4  # `wrap` puts more panels than this on further rows
DISPLAY_WIDTH_PX = 960  # the inline width in the UI (`assets.metadata.INLINE_WIDTH` is this)
MIN_TEXT_PX = 9.0  # no text smaller than this at the display width
TEXT_PT = 9.0  # legends, annotations, tick labels where room is short
PANEL_TITLE_PT = 10.0
TITLE_PT = 11.0
_PAD_IN = 0.1  # savefig's pad around the tight bounding box (matplotlib's default `savefig.pad_inches`)
_MATH = re.compile(r"\$[^$]*\$")
_NO_BREAK = "\x00"
_CHAR_EM = 0.55  # the default sans font's average character width in ems (a little over), for folding titles


def pyplot():
    """pyplot on the Agg backend; imported late so importing a figure module stays cheap."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- modules


def module_color(module: str) -> str:
    """The module's fixed colour in every figure; unknown modules get a stable fallback from their name."""
    if module in MODULE_COLORS:
        return MODULE_COLORS[module]
    return f"C{sum(map(ord, module)) % 10}"


def module_label(module: str) -> str:
    """`q_proj` -> `Proj Q`, as every legend names a projection."""
    return f"Proj {MODULE_LABELS.get(module, module)}"


def module_legend(ax, modules: Sequence[str], styles: Mapping[str, str] | None = None) -> None:
    """A compact legend: one colour entry per module, then one black entry per line style (name -> style)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=module_color(m), label=module_label(m)) for m in modules]
    handles += [Line2D([], [], color="black", linestyle=ls, label=name) for name, ls in (styles or {}).items()]
    ax.legend(handles=handles, fontsize=TEXT_PT, loc="best")


def figure_legend(fig, handles: Sequence, title: str | None = None) -> None:
    """One legend for the whole figure, below its panels (outside them, so it hides no data), in columns."""
    labels = [h.get_label() for h in handles]
    n_cols = min(4, max(1, len(handles)))
    fig.legend(handles, labels, loc="outside lower center", ncols=n_cols, fontsize=TEXT_PT, title=title, frameon=False)


# --------------------------------------------------------------------------- grid and titles


def grid(n_rows: int, n_cols: int, *, panel: tuple[float, float] = PANEL_SIZE, sharey: bool | str = False):
    """A figure of n_rows × n_cols panels (axes as a 2-D array), constrained layout, at most `MAX_WIDTH_IN` wide.

    Narrowing the panels keeps their text legible where the figure is shown scaled to the display width; their
    height shrinks less than their width, so a panel never gets too flat for its title and labels. `sharey`:
    matplotlib's (`"row"`: one y range per row).
    """
    width = panel[0] * n_cols
    scale = min(1.0, MAX_WIDTH_IN / width)
    size = (width * scale, panel[1] * n_rows * max(scale, 0.8))
    return pyplot().subplots(n_rows, n_cols, squeeze=False, figsize=size, layout="constrained", sharey=sharey)


def wrap(n_panels: int, *, panel: tuple[float, float] = PANEL_SIZE, sharey: bool | str = False):
    """`n_panels` independent panels, at most `MAX_COLUMNS` a row; returns the figure and the panels in reading
    order (spare cells of the last row are hidden)."""
    n_cols = max(1, min(MAX_COLUMNS, n_panels))
    n_rows = -(-max(1, n_panels) // n_cols)
    fig, axes = grid(n_rows, n_cols, panel=panel, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.axis("off")
    return fig, flat[:n_panels]


def wrapped(text: str, width_in: float, size_pt: float) -> str:
    """`text` with each line folded at spaces to fit `width_in` inches at `size_pt` points; never inside a
    `$…$` math span (a span cut in two would not parse)."""
    chars = max(12, int(width_in * 72 / (_CHAR_EM * size_pt)))
    kept = _MATH.sub(lambda m: m.group(0).replace(" ", _NO_BREAK), text)
    lines = (textwrap.fill(line, chars, break_long_words=False) for line in kept.split("\n"))
    return "\n".join(lines).replace(_NO_BREAK, " ")


def panel_title(ax, text: str, size: float = PANEL_TITLE_PT) -> None:
    """A panel's title, folded to the panel's width (its share of the figure's, less room for the y axis)."""
    spec = ax.get_subplotspec()
    share = len(spec.colspan) / spec.get_gridspec().ncols if spec is not None else 1.0
    ax.set_title(wrapped(text, 0.9 * share * ax.figure.get_figwidth(), size), fontsize=size)


def figure_title(fig, headline: str, detail: str | None = None) -> None:
    """The figure's title: what is drawn, then in parentheses how (responses, interval, scales), folded to the
    figure's width."""
    text = headline + (f"\n({detail})" if detail else "")
    fig.suptitle(wrapped(text, fig.get_figwidth(), TITLE_PT), fontsize=TITLE_PT)


def responses(correctness: str | None) -> str:
    """Which responses a curve averages over, as titles say it: `correct responses`, `all responses`."""
    return f"{correctness} responses" if correctness else "all responses"


def integer_ticks(axis) -> None:
    """Integer ticks only (training steps, layers): no 2.5 between whole steps."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def band_curve(ax, stats, color: str, label: str | None = None) -> None:
    """A curve across seeds: the mean (line and markers) over its min–max range (a shaded band, drawn only where
    more than one seed is there). `stats`: `step`, `mean`, `min`, `max`, `n_seeds` columns (`dynamics.seeds`)."""
    stats = stats.sort_values("step")
    ax.plot(stats.step, stats["mean"], marker="o", ms=3, color=color, label=label)
    several = stats[stats.n_seeds > 1]
    if len(several):
        ax.fill_between(several.step, several["min"], several["max"], color=color, alpha=0.2, lw=0)


# --------------------------------------------------------------------------- legibility and saving


def _texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def display_px_per_pt(fig, dpi: int = DPI, display_width: int = DISPLAY_WIDTH_PX) -> float:
    """Pixels one point of text takes when the saved figure (tight bounding box, as `save_figure` writes it) is
    shown at `display_width` px, or at its own size when it is narrower."""
    fig.draw_without_rendering()  # the constrained layout, so the bounding box is the saved one
    width_in = fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * _PAD_IN
    return _px_per_pt(width_in * dpi, dpi, display_width)


def _px_per_pt(width_px: float, dpi: float, display_width: int = DISPLAY_WIDTH_PX) -> float:
    return dpi / 72 * min(1.0, display_width / width_px)


def make_legible(fig, dpi: int = DPI, min_px: float = MIN_TEXT_PX, display_width: int = DISPLAY_WIDTH_PX) -> None:
    """Raise every text under `min_px` at the display width to that size (tick labels through `tick_params`, so
    ticks made later follow). Larger text can widen the figure, so it measures again, a few times at most."""
    for _ in range(3):
        need = min_px / display_px_per_pt(fig, dpi, display_width)
        small = [t for t in _texts(fig) if t.get_fontsize() < need]
        if not small:
            return
        size = need * 1.02  # a little over: the PNG's width is rounded to whole pixels
        for ax in fig.axes:
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                if any(t.get_fontsize() < need for t in axis.get_ticklabels(which="both")):
                    ax.tick_params(axis=name, which="both", labelsize=size)
        for text in small:
            text.set_fontsize(size)


def _render(fig, fmt: str, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=_PAD_IN)
    return buffer.getvalue()


def _png_width(data: bytes) -> int:
    """The width in the PNG's header (IHDR, the first chunk: bytes 16-19), without decoding the image."""
    return int.from_bytes(data[16:20], "big")


def save_figure(fig, out_base: Path, formats: Sequence[str] = FORMATS, dpi: int = DPI) -> list[Path]:
    """Save as `<out_base>.<fmt>` for each format, each written atomically, then close the figure; returns the
    paths in the order of `formats`.

    The PNG is checked as written: if its smallest text is under `MIN_TEXT_PX` at the display width, the text is
    raised (`make_legible`) and the figure drawn again. Checking the rendered width, not predicting it, costs no
    extra layout pass for the figures that are fine (most of them).
    """
    out_base = Path(out_base)
    try:
        rendered = {}
        if "png" in formats:
            rendered["png"] = _render(fig, "png", dpi)
            smallest = min((t.get_fontsize() for t in _texts(fig)), default=float("inf"))
            if smallest * _px_per_pt(_png_width(rendered["png"]), dpi) < MIN_TEXT_PX:
                make_legible(fig, dpi)
                rendered["png"] = _render(fig, "png", dpi)
        for fmt in formats:
            if fmt not in rendered:  # not setdefault: its argument, a whole render, would be drawn every time
                rendered[fmt] = _render(fig, fmt, dpi)
        return [atomic_write_bytes(out_base.with_name(f"{out_base.name}.{fmt}"), rendered[fmt]) for fmt in formats]
    finally:
        pyplot().close(fig)


def png(paths: Sequence[Path]) -> Path:
    """The PNG among a figure's files."""
    return next(p for p in paths if p.suffix == ".png")
