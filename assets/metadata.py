"""Metadata helpers shared by the asset modules: data versions, tables, inline figures, Markdown escaping."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re
from pathlib import Path
from typing import Any

import dagster as dg

from lg_pipeline.analysis.canvas import DISPLAY_WIDTH_PX

# Characters with a meaning in (GitHub) Markdown: each is backslash-escaped in text we did not write.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
CELL_CHARS = 80


def file_version(path: Path) -> str:
    """A data version from a file's bytes: the UI marks downstream stale when it changes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


def escape_md(text: str) -> str:
    """Text shown literally in Markdown metadata: no link, image, HTML tag, heading or table break survives.

    Curated rows hold text from datasets and teachers; rendered raw, `![x](http://host/pixel)` would make every
    viewer's browser fetch from that host and `<b>`/`|`/newlines would break the table. HTML-escape first
    (the UI's sanitizer drops what it does not know, which would hide text), then escape Markdown's
    punctuation, then fold newlines to spaces.
    """
    text = html.escape(str(text), quote=False)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def md_table(frame: Any, max_rows: int = 20) -> dg.MetadataValue:
    """A DataFrame as markdown metadata (first rows only); every cell escaped (`escape_md`)."""
    head = frame.head(max_rows)
    header = "| " + " | ".join(escape_md(c) for c in head.columns) + " |"
    rule = "|" + "---|" * len(head.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.itertuples(index=False)]
    more = [f"\n_{len(frame) - max_rows} more rows_"] if len(frame) > max_rows else []
    return dg.MetadataValue.md("\n".join([header, rule, *rows, *more]))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    cut = text[:CELL_CHARS] + ("…" if len(text) > CELL_CHARS else "")  # cut before escaping: never half an escape
    return escape_md(cut)


def table_value(frame: Any, max_rows: int = 100) -> dg.MetadataValue:
    """A DataFrame as Dagster table metadata (the UI draws it as a table, every column, no Markdown to break)."""
    flat = frame.copy()
    flat.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in flat.columns]
    flat = flat.head(max_rows)
    columns = [dg.TableColumn(str(c), _column_type(flat[c])) for c in flat.columns]
    records = [dg.TableRecord({str(k): _record_value(v) for k, v in row.items()}) for row in flat.to_dict("records")]
    return dg.MetadataValue.table(records, dg.TableSchema(columns))


def _column_type(series: Any) -> str:
    kind = getattr(series.dtype, "kind", "O")
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(kind, "string")


def _record_value(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.6g}")  # 6 significant digits: small deltas stay
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value if isinstance(value, (int, bool)) or value is None else str(value)


# Where an inline figure is shown: Dagster 1.13 opens Markdown metadata over 1,000 characters in a dialog
# (`MetadataEntryDialogAction`: width auto, max-width 80vw) whose Markdown box has 20 px padding on each side and
# scrolls what is wider. Its Markdown renderer (react-markdown, rehype-sanitize, no raw HTML) draws `![t](src)` as a
# plain <img> at the image's own pixel size: no `max-width`, `style` or `width` can be given from Markdown (an
# `<img>` tag is shown as text). So the image itself must be no wider than the dialog's content on the smallest
# screen we support, which `fits_dialog` states; the figures are drawn to be legible at exactly this width.
SMALLEST_SCREEN_PX = 1280
DIALOG_SHARE = 0.8  # of the window's width
DIALOG_PADDING_PX = 20
INLINE_WIDTH = DISPLAY_WIDTH_PX


def dialog_content_width(screen_px: int = SMALLEST_SCREEN_PX) -> int:
    """The widest image the metadata dialog shows without a scrollbar on a window `screen_px` wide."""
    return int(DIALOG_SHARE * screen_px) - 2 * DIALOG_PADDING_PX


def fits_dialog(width_px: int, screen_px: int = SMALLEST_SCREEN_PX) -> bool:
    return width_px <= dialog_content_width(screen_px)


def inline_png(path: Path, title: str | None = None, max_width: int = INLINE_WIDTH) -> str:
    """Markdown with the PNG inlined, so the UI shows the figure without opening files; wider figures are scaled
    down to `max_width` for the UI (the file on disk keeps its full resolution), so none overflows the dialog."""
    data = path.read_bytes()
    from PIL import Image  # matplotlib's own dependency

    with Image.open(io.BytesIO(data)) as image:
        if image.width > max_width:
            scaled = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
            buffer = io.BytesIO()
            scaled.save(buffer, format="PNG", optimize=True)
            data = buffer.getvalue()
    return f"![{escape_md(title or path.stem)}](data:image/png;base64,{base64.b64encode(data).decode()})"


def figure_md(png: Path, title: str | None = None, drawn_from: str = "") -> str:
    """A figure as the UI shows it: its title, the image inline, its files (the PNG and, where written, the PDF
    beside it) and where it was drawn from, so every figure says which file it is and what it shows."""
    files = " · ".join(f"{p.suffix[1:].upper()} `{p}`" for p in (png, png.with_suffix(".pdf")) if p.is_file())
    parts = [f"### {escape_md(title)}" if title else "", inline_png(png, title), files, drawn_from]
    return "\n\n".join(part for part in parts if part)


# The training settings a dynamics run's materialization lists by name (the UI shows each as its own row).
RUN_SETTINGS = ("objective", "learning_rate", "optimizer", "batch_size", "trainable", "steps", "epochs", "seed",
                "max_length")


def run_settings(train: Any, **more: Any) -> dict[str, Any]:
    """A run's training settings (a `TrainSettings`) as metadata entries, unset ones left out, then `more`."""
    from dataclasses import asdict

    fields = asdict(train)
    return {**{name: fields[name] for name in RUN_SETTINGS if fields.get(name) is not None}, **more}
