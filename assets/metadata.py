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
        return None if math.isnan(value) else round(value, 6)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value if isinstance(value, (int, bool)) or value is None else str(value)


INLINE_WIDTH = 1080  # px: the UI's metadata dialog shows an image at its own size, and no wider than this fits


def inline_png(path: Path, title: str | None = None, max_width: int = INLINE_WIDTH) -> str:
    """Markdown with the PNG inlined, so the UI shows the figure without opening files; wider figures are scaled
    down to `max_width` for the UI (the file on disk keeps its full resolution)."""
    data = path.read_bytes()
    from PIL import Image  # matplotlib's own dependency

    with Image.open(io.BytesIO(data)) as image:
        if image.width > max_width:
            scaled = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
            buffer = io.BytesIO()
            scaled.save(buffer, format="PNG", optimize=True)
            data = buffer.getvalue()
    return f"![{escape_md(title or path.stem)}](data:image/png;base64,{base64.b64encode(data).decode()})"
