"""Metadata helpers: curated text is shown literally, tables keep every column."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from assets.metadata import escape_md, md_table, table_value

HOSTILE = "![pixel](http://evil.example/p.png) <img src=x onerror=alert(1)> [link](http://x) | # head\n* item"


def test_curated_text_cannot_become_a_link_image_tag_or_table_break():
    text = escape_md(HOSTILE)
    assert "<img" not in text and "&lt;img" in text
    assert "![" not in text and "](" not in text  # no image or link syntax survives
    assert "\n" not in text and "| " not in text.replace("\\|", "")
    assert text.startswith("\\!\\[pixel\\]\\(http://evil\\.example/p\\.png\\)")


def test_md_table_escapes_every_cell_and_cuts_before_escaping():
    frame = pd.DataFrame({"example_id": ["a|b"], "response": [HOSTILE + "x" * 200], "loss": [1.23456]})
    md = md_table(frame).value
    header, rule, row = md.split("\n")
    assert row.count(" | ") == 2  # three cells: the pipes inside the text are escaped
    assert "1.235" in row and "<img" not in row and "](" not in row
    assert "… | 1.235 |" in row  # cut at 80 characters, then escaped


def test_table_value_keeps_every_column_and_types():
    wide = pd.DataFrame({f"q {t}": [1.5, float("nan")] for t in ("early", "middle", "late", "all")})
    wide.insert(0, "level", ["none", "detailed"])
    value = table_value(wide)
    assert isinstance(value, dg.TableMetadataValue)
    assert [c.name for c in value.schema.columns] == list(wide.columns)
    assert value.records[1].data["q all"] is None and value.records[0].data["level"] == "none"


def test_inline_png_scales_a_wide_figure_for_the_ui_and_keeps_the_file(tmp_path):
    import base64
    import io

    from PIL import Image

    from assets.metadata import INLINE_WIDTH, inline_png

    path = tmp_path / "wide.png"
    Image.new("RGB", (2000, 500), "white").save(path)
    before = path.read_bytes()
    md = inline_png(path, "A [wide] figure")
    assert md.startswith("![A \\[wide\\] figure](data:image/png;base64,")
    shown = Image.open(io.BytesIO(base64.b64decode(md.split("base64,")[1].rstrip(")"))))
    assert shown.size == (INLINE_WIDTH, round(500 * INLINE_WIDTH / 2000))
    assert path.read_bytes() == before


def _shown_widths(md: str) -> list[int]:
    """The pixel width of every image inlined in a Markdown string: what the UI's <img> is drawn at."""
    import base64
    import io
    import re

    from PIL import Image

    found = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    return [Image.open(io.BytesIO(base64.b64decode(data))).width for data in found]


def test_no_inline_figure_is_wider_than_the_dialog_on_a_1280_px_screen(tmp_path):
    from PIL import Image

    from assets.metadata import INLINE_WIDTH, dialog_content_width, fits_dialog, inline_png

    assert dialog_content_width(1280) == 984  # 80vw less 2 x 20 px padding
    assert fits_dialog(INLINE_WIDTH) and not fits_dialog(1080)  # 1080 px overflowed with a scrollbar
    widths = []
    for k, width in enumerate((300, INLINE_WIDTH, INLINE_WIDTH + 1, 1453, 4000)):
        path = tmp_path / f"f{k}.png"
        Image.new("RGB", (width, 200), "white").save(path)
        widths += _shown_widths(inline_png(path))
    assert widths == [300, INLINE_WIDTH, INLINE_WIDTH, INLINE_WIDTH, INLINE_WIDTH]  # never scaled up
    assert all(fits_dialog(w) for w in widths)


def test_a_figure_entry_names_its_files_and_sources(tmp_path):
    from PIL import Image

    from assets.metadata import figure_md

    png = tmp_path / "fig.png"
    Image.new("RGB", (10, 10)).save(png)
    (tmp_path / "fig.pdf").write_bytes(b"%PDF")
    text = figure_md(png, "Loss [all]", "_Drawn from x._")
    assert text.startswith("### Loss \\[all\\]") and "data:image/png;base64," in text
    assert f"PNG `{png}` · PDF `{tmp_path / 'fig.pdf'}`" in text and text.endswith("_Drawn from x._")


def test_run_settings_are_entries_by_name_and_unset_ones_left_out():
    from assets.metadata import run_settings
    from lg_pipeline.dynamics.training import TrainSettings

    meta = run_settings(TrainSettings(learning_rate=3e-4, optimizer="adamw", steps=None, epochs=1.0, seed=7), level="x")
    assert meta == {"objective": "sft", "learning_rate": 3e-4, "optimizer": "adamw", "batch_size": 2,
                    "trainable": "attention", "epochs": 1.0, "seed": 7, "max_length": 1024, "level": "x"}
