"""Shared by the figure tests: every figure a test saves, caught at `savefig`, and how large its text is shown.

The size is measured independently of the canvas's own legibility pass: from the text sizes of the figure and the
pixel width of the PNG actually written, shown at the UI's inline width (scaled down, never up).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from lg_pipeline.analysis.canvas import DISPLAY_WIDTH_PX


@dataclass
class Saved:
    """One PNG a figure function wrote: the figure (closed, still readable), its dpi and its width in pixels."""

    fig: Any
    dpi: float
    width_px: int

    def texts(self) -> list[Any]:
        from matplotlib.text import Text

        return [t for t in self.fig.findobj(Text) if t.get_visible() and t.get_text().strip()]

    def smallest_text_px(self, display_width: int = DISPLAY_WIDTH_PX) -> tuple[float, str]:
        """(size in px at the inline width, the text) of the figure's smallest text."""
        shown = min(1.0, display_width / self.width_px)
        text = min(self.texts(), key=lambda t: t.get_fontsize())
        return text.get_fontsize() * self.dpi / 72 * shown, text.get_text()

    def step_axes(self) -> list[Any]:
        """Axes whose x axis counts steps (its label says "step")."""
        return [ax for ax in self.fig.axes if "step" in ax.get_xlabel().lower()]


def capture_saved_figures(monkeypatch) -> list[Saved]:
    """From now on, every figure saved as PNG through `Figure.savefig` is recorded (in order, its last PNG) in the
    returned list."""
    from matplotlib.figure import Figure
    from PIL import Image

    saved: list[Saved] = []
    original = Figure.savefig

    def spy(self, fname, *args, **kwargs):
        result = original(self, fname, *args, **kwargs)
        if kwargs.get("format", "png") == "png":
            if isinstance(fname, io.BytesIO):
                fname.seek(0)
                width = Image.open(io.BytesIO(fname.getvalue())).width
            else:
                width = Image.open(fname).width
            figure = Saved(self, float(kwargs.get("dpi") or self.dpi), width)
            if saved and saved[-1].fig is self:  # drawn again (its text raised): the later PNG is the one written
                saved[-1] = figure
            else:
                saved.append(figure)
        return result

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved
