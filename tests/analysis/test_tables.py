"""MAD tables: layout, ordering and the CSV / Markdown / LaTeX writers."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from lg_pipeline.analysis.tables import (
    cross_model_table,
    family_table,
    latex_escape,
    mad_table,
    relative_difference_table,
    to_csv_text,
    to_latex,
    to_markdown,
    write_table,
)

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
LEVELS = ("detailed", "none", "simplified")  # deliberately not in display order


def summary_rows(model="m", dataset="gsm8k", offset=0.0) -> list[dict]:
    rows = []
    for li, level in enumerate(LEVELS):
        for ci, correctness in enumerate(("wrong", "correct")):
            for mi, module in enumerate(MODULES):
                base = offset + 100 * li + 10 * ci + mi
                rows.append(
                    {
                        "model": model, "dataset": dataset, "level": level, "correctness": correctness,
                        "module": module, "statistic": "nuclear_norm", "n_layers": 18,
                        "mad_all": base, "mad_early": base + 0.1, "mad_middle": base + 0.2, "mad_late": base + 0.3,
                    }
                )  # fmt: skip
    return rows


@pytest.fixture
def summary() -> pd.DataFrame:
    return pd.DataFrame(summary_rows() + summary_rows(dataset="aqua_x", offset=1000) + summary_rows("m2", offset=5))


def test_mad_table_layout_and_order(summary):
    table = mad_table(summary, where={"model": "m", "dataset": "gsm8k"})
    assert table.shape == (6, 16)
    assert list(table.index) == [
        ("none", "correct"), ("none", "wrong"), ("simplified", "correct"),
        ("simplified", "wrong"), ("detailed", "correct"), ("detailed", "wrong"),
    ]  # fmt: skip
    assert list(table.columns[:4]) == [("q_proj", "early"), ("q_proj", "middle"), ("q_proj", "late"), ("q_proj", "all")]
    assert table.loc[("none", "correct"), ("k_proj", "late")] == pytest.approx(100 + 10 + 1 + 0.3)
    assert table.loc[("detailed", "wrong"), ("o_proj", "all")] == pytest.approx(3)


def test_family_and_cross_model_tables(summary):
    family = family_table(summary, "m", ["gsm8k", "aqua_x"])
    assert family.shape == (12, 16)
    assert family.index[0] == ("aqua_x", "none", "correct")
    cross = cross_model_table(summary)
    assert cross.shape == (12, 16)
    # model m averages its two datasets (offsets 0 and 1000); m2 has one dataset with offset 5
    assert cross.loc[("m", "none", "correct"), ("q_proj", "all")] == pytest.approx(110 + 500)
    assert cross.loc[("m2", "none", "correct"), ("q_proj", "all")] == pytest.approx(115)


def test_empty_selection_is_an_error(summary):
    with pytest.raises(ValueError, match="no MAD summary rows"):
        mad_table(summary, where={"model": "absent"})


def test_markdown_is_a_valid_pipe_table(summary):
    text = to_markdown(mad_table(summary, where={"model": "m", "dataset": "gsm8k"}))
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 6
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert {line.count(" | ") for line in lines} == {2 + 16 - 1}
    assert set(lines[1].replace("|", "").split()) <= {"---", "---:"}
    assert "Q Early" in lines[0] and "O All" in lines[0]
    assert lines[2].startswith("| None CoT | Correct | ")


def test_latex_booktabs_structure(summary):
    table = family_table(summary, "m", ["aqua_x"])
    text = to_latex(table, caption="MAD of gemma_2 on AQuA", label="tab:mad")
    assert text.count(r"\toprule") == text.count(r"\midrule") == text.count(r"\bottomrule") == 1
    assert r"\multicolumn{4}{c}{Q}" in text and r"\cmidrule(lr){4-7}" in text
    assert r"\begin{tabular}{lll" + "r" * 16 + "}" in text
    assert r"gemma\_2" in text and r"\label{tab:mad}" in text
    body = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 6
    assert all(line.count("&") == 3 + 16 - 1 and line.endswith(r"\\") for line in body)
    assert body[0].startswith(r"aqua\_x & None CoT & Correct & ")


def test_nan_cells_render_as_dashes(summary):
    summary.loc[0, "mad_early"] = float("nan")
    table = mad_table(summary, where={"model": "m", "dataset": "gsm8k"})
    assert "--" in to_markdown(table) and "--" in to_latex(table)


def test_csv_round_trips_values(summary):
    table = mad_table(summary, where={"model": "m", "dataset": "gsm8k"})
    back = pd.read_csv(io.StringIO(to_csv_text(table)))
    assert list(back.columns[:3]) == ["level", "correctness", "q_proj_early"]
    assert back.shape == (6, 2 + 16)
    assert back["o_proj_all"].iloc[-1] == pytest.approx(3)


def test_write_table_writes_three_files_atomically(tmp_path, summary):
    paths = write_table(mad_table(summary, where={"model": "m"}), tmp_path / "out" / "mad_m", caption="c")
    assert sorted(p.name for p in paths) == ["mad_m.csv", "mad_m.md", "mad_m.tex"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mad_m.csv", "mad_m.md", "mad_m.tex"]


def test_latex_escape():
    assert latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"


def test_relative_difference_table_per_level_and_third_hand_computed():
    from lg_pipeline.analysis.curves import CURVE_COLUMNS

    rows = []
    for level, factor in (("detailed", 1.5), ("none", 1.1)):
        for correctness in ("correct", "wrong"):
            for layer in range(6):
                mean = 10.0 * (factor if correctness == "wrong" and layer >= 3 else 1.0)
                rows.append(("m", "gsm8k", level, correctness, "q_proj", layer, "nuclear_norm", mean, mean, mean, 4, 0))
    table = relative_difference_table(pd.DataFrame(rows, columns=list(CURVE_COLUMNS)))
    assert list(table.index) == ["none", "detailed"]  # the study's order
    assert table.loc["detailed", ("q_proj", "all")] == pytest.approx(25.0)  # 3 layers at 0%, 3 at 50%
    assert table.loc["detailed", ("q_proj", "early")] == pytest.approx(0.0)
    assert table.loc["detailed", ("q_proj", "late")] == pytest.approx(50.0)
    assert table.loc["none", ("q_proj", "late")] == pytest.approx(10.0)
    assert "Detailed CoT" in to_markdown(table)
