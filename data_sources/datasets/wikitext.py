"""MediaWiki XML dumps and wikitext -> running prose, for Wikipedia articles shipped inside installed packages.

`dump_pages` streams the articles (namespace 0, no redirects) of a dump file (.xml or .xml.bz2). `wikitext_to_prose`
keeps the article's running text the way the study's curated articles read: paragraphs of sentences, one per line,
without headings, lists, tables, images, references, infobox or citation templates, and without the trailing
sections that are not prose (See also, References, External links, ...). A few inline templates that carry words of
the sentence (`lang`, `convert`, `nowrap`, ...) keep their text; every other template is dropped, which can leave a
sentence missing a figure (e.g. a value written with {{val}}). Parsing uses mwparserfromhell (imported lazily).
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lg_pipeline.errors import InputError

# Level-2 sections from which on an article is lists and references, not prose.
END_SECTIONS = frozenset(
    {
        "see also",
        "references",
        "notes",
        "notes and references",
        "footnotes",
        "citations",
        "sources",
        "works cited",
        "bibliography",
        "selected bibliography",
        "further reading",
        "external links",
        "gallery",
        "publications",
        "selected works",
        "works",
        "discography",
        "filmography",
    }
)
_SKIPPED_TAGS = frozenset({"table", "gallery", "math", "div", "timeline", "imagemap", "references"})
_KEEP_FIRST_PARAM = frozenset({"nowrap", "nobr", "small", "em", "strong", "sic"})
# Links that are not words of the text: files, categories, interlanguage links ([[de:...]]).
_NOT_PROSE_LINK = re.compile(r"^\s*:?\s*(?:file|image|media|category|simple|[a-z]{2,3}(?:-[a-z]+)*)\s*:", re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref\s*>", re.S | re.I)
_LEVEL2_HEADING = re.compile(r"^==(?!=)(.+?)(?<!=)==\s*$", re.M)
_LIST_OR_TABLE_LINE = re.compile(r"^[*#;:|!{].*$", re.M)
_LEADING_PUNCT_IN_PARENS = re.compile(r"\(\s*(?:[,;:]\s*)+")
_EMPTY_PARENS = re.compile(r"\s*\(\s*[,;:.\s]*\)")
# Apostrophes left of unbalanced italics or bold: the source's ''Iliad'''s reads Iliad's.
_POSSESSIVE_AFTER_MARKUP = re.compile(r"'''(?=s\b)")
_STRAY_MARKUP_QUOTES = re.compile(r"'{2,}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)\]]*$")
_STARTS_SENTENCE = re.compile(r"[\w\"'“‘]")
MIN_PARAGRAPH_WORDS = 8


def _mwparser() -> Any:
    try:
        import mwparserfromhell
    except ImportError:
        raise InputError("package 'mwparserfromhell' is not installed (pip install mwparserfromhell)") from None
    return mwparserfromhell


def dump_pages(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """(page id, title, wikitext) of every article in a MediaWiki XML dump, in file order."""
    path = Path(path)
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rb") as handle:
            namespace = ""
            for _, element in ET.iterparse(handle, events=("end",)):
                tag = element.tag
                if not namespace and tag.startswith("{"):
                    namespace = tag[: tag.index("}") + 1]
                if tag != f"{namespace}page":
                    continue
                is_article = element.findtext(f"{namespace}ns") == "0" and element.find(f"{namespace}redirect") is None
                if is_article:
                    yield (
                        element.findtext(f"{namespace}id") or "",
                        element.findtext(f"{namespace}title") or "",
                        element.findtext(f"{namespace}revision/{namespace}text") or "",
                    )
                element.clear()
    except (OSError, EOFError, ET.ParseError) as exc:
        raise InputError(f"wiki dump {path}: cannot read ({exc.__class__.__name__}: {exc})") from None


def _template_text(template: Any) -> str:
    """The words an inline template contributes to its sentence ("" for infoboxes, citations, ...)."""
    name = str(template.name).strip().lower()
    params = [p for p in template.params if not p.showkey]
    if name in _KEEP_FIRST_PARAM and params:
        return str(params[0].value)
    if name in ("lang", "transl") and len(params) >= 2:
        return str(params[-1].value)
    if name.startswith("lang-") and params:
        return str(params[0].value)
    if name in ("convert", "cvt") and len(params) >= 2:
        return f"{params[0].value} {params[1].value}"
    return ""


def _before_end_sections(wikitext: str) -> str:
    """The article up to its first level-2 heading of lists and references (See also, References, ...)."""
    for match in _LEVEL2_HEADING.finditer(wikitext):
        if match.group(1).strip(" '").lower() in END_SECTIONS:
            return wikitext[: match.start()]
    return wikitext


def _prune(code: Any, mw: Any) -> None:
    """Drop, at every depth, what is not words of the text; headings become line breaks; templates their words.

    Depth matters: an unbalanced '' in the source makes the parser nest the rest of a section in an italics tag."""
    from mwparserfromhell.nodes import ExternalLink, Heading, Tag, Template, Text, Wikilink

    kept = []
    for node in code.nodes:
        if isinstance(node, Heading):
            node = Text("\n")
        elif isinstance(node, Template):
            words = mw.parse(_template_text(node))
            _prune(words, mw)
            node = Text(words.strip_code())
        elif isinstance(node, Wikilink):
            if _NOT_PROSE_LINK.match(str(node.title)):
                continue
            if node.text is not None:
                _prune(node.text, mw)
        elif isinstance(node, Tag):
            if str(node.tag).strip().lower() in _SKIPPED_TAGS:
                continue
            if node.contents is not None:
                _prune(node.contents, mw)
        elif isinstance(node, ExternalLink) and node.title is not None:
            _prune(node.title, mw)
        kept.append(node)
    code.nodes = kept


def wikitext_to_prose(wikitext: str) -> str:
    """The running prose of an article: paragraphs of whole sentences, one per line (see the module docstring)."""
    mw = _mwparser()
    code = mw.parse(_REF.sub("", _before_end_sections(_COMMENT.sub("", wikitext))))
    _prune(code, mw)
    text = mw.parse(_LIST_OR_TABLE_LINE.sub("", str(code))).strip_code(normalize=True, collapse=True)
    paragraphs = []
    for line in text.splitlines():
        line = _LEADING_PUNCT_IN_PARENS.sub("(", " ".join(line.split()))
        line = _STRAY_MARKUP_QUOTES.sub("", _POSSESSIVE_AFTER_MARKUP.sub("'", line))
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", _EMPTY_PARENS.sub("", line))
        # A paragraph starts with a word and ends a sentence; what is left of captions and lists does not.
        if len(line.split()) >= MIN_PARAGRAPH_WORDS and _STARTS_SENTENCE.match(line) and _ENDS_SENTENCE.search(line):
            paragraphs.append(line)
    return "\n".join(paragraphs)
