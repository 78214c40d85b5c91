"""Metadata helpers shared by the asset modules: data versions, markdown tables, inline figures."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import dagster as dg


def file_version(path: Path) -> str:
    """A data version from a file's bytes: the UI marks downstream stale when it changes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


def md_table(frame: Any, max_rows: int = 20) -> dg.MetadataValue:
    """A DataFrame as markdown metadata (first rows only)."""
    head = frame.head(max_rows)
    header = "| " + " | ".join(map(str, head.columns)) + " |"
    rule = "|" + "---|" * len(head.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.itertuples(index=False)]
    more = [f"\n_{len(frame) - max_rows} more rows_"] if len(frame) > max_rows else []
    return dg.MetadataValue.md("\n".join([header, rule, *rows, *more]))


def _cell(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:80]


def inline_png(path: Path) -> str:
    """Markdown with the PNG inlined, so the UI shows the figure without opening files."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{data})"
