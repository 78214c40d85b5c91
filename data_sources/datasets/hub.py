"""Hugging Face hub datasets through `datasets.load_dataset`, with field mappings from datasets.yaml.

Hub access is off unless the user turns it on (HF_DATASETS_OFFLINE=0 with network): offline, a hub dataset fails at
once with one line instead of waiting on connection retries. A local mirror (`mirror=` or $LG_HUB_MIRROR, laid out
as <mirror>/<hub path>[/<config>]/ with the hub's data files) is read offline through the same code path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from data_sources.datasets.base import CALCULATOR_ANNOTATION
from lg_pipeline.curation.source import RawRecord
from lg_pipeline.errors import InputError

_FALSE = ("0", "false", "no", "off")


def hub_enabled() -> bool:
    """Network use is opt-in: only an explicit HF_DATASETS_OFFLINE=0 (and no HF_HUB_OFFLINE=1) enables it."""
    datasets_flag = os.environ.get("HF_DATASETS_OFFLINE", "1").strip().lower()
    hub_flag = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower()
    return datasets_flag in _FALSE and hub_flag in (*_FALSE, "")


def _force_offline() -> None:
    """Make `datasets` itself fail fast too (no connection retries) when the hub is not enabled."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------- row transforms
def _split_answer(row: dict, field: str, sep: str, rationale_to: str, answer_to: str) -> None:
    body, found, final = str(row[field]).rpartition(sep)
    row[rationale_to], row[answer_to] = (body, final.strip()) if found else (str(row[field]), "")


def _strip_calculator(row: dict, field: str) -> None:
    row[field] = CALCULATOR_ANNOTATION.sub("", str(row[field]))


def _join_lines(row: dict, field: str, sep: str = " ") -> None:
    row[field] = sep.join(line.strip() for line in str(row[field]).strip().splitlines() if line.strip())


def _join_list(row: dict, field: str, sep: str = " ") -> None:
    value = row[field]
    row[field] = sep.join(str(v).strip() for v in value) if isinstance(value, list | tuple) else str(value)


def _yes_no(row: dict, field: str) -> None:
    value = row[field]
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in ("true", "false", "1", "0"):
        row[field] = "yes" if text in ("true", "1") else "no"


def _collect(row: dict, fields: list[str], to: str) -> None:
    row[to] = [row[f] for f in fields]


def _options_block(row: dict, field: str, style: str, to: str) -> None:
    """Options as the study shows them: "(A) 21" lines for AQuA, "- text" lines for ECQA."""
    lines = []
    for option in row[field]:
        text = str(option).strip()
        match = re.match(r"^\(?([A-E])\)\s*(.*)$", text)
        lines.append(f"({match.group(1)}) {match.group(2)}" if style == "paren" and match else f"- {text}")
    row[to] = "\n".join(lines)


def _choice_label(row: dict, field: str, labels: list[str], to: str) -> None:
    row[to] = labels[int(row[field])]


def _pick(row: dict, key: str, to: str) -> None:
    """The value of the column that another column names (Sen-Making's `reason` is "A", "B" or "C")."""
    row[to] = row[str(row[key]).strip()]


def _boxed(row: dict, field: str, to: str) -> None:
    from lg_pipeline.curation.answers import last_boxed

    row[to] = last_boxed(str(row[field])) or ""


TRANSFORMS: dict[str, Callable[..., None]] = {
    "split_answer": _split_answer,
    "strip_calculator": _strip_calculator,
    "join_lines": _join_lines,
    "join_list": _join_list,
    "yes_no": _yes_no,
    "collect": _collect,
    "options_block": _options_block,
    "choice_label": _choice_label,
    "pick": _pick,
    "boxed": _boxed,
}


# ---------------------------------------------------------------------------------------------- the adapter
class HubSource:
    """One split of a hub dataset mapped onto RawRecord fields by format templates over the row."""

    name = "hf-hub"

    def __init__(
        self,
        path: str,
        split: str = "train",
        name: str | None = None,
        fields: Mapping[str, str] | None = None,
        transforms: list[Mapping[str, Any]] | None = None,
        streaming: bool = False,
        title_list: str | None = None,
        mirror: str | None = None,
        cache_dir: str = ".cache/curation",
    ):
        self.path, self.split, self.config = path, split, name
        self.fields = dict(fields or {"question": "{question}", "answer": "{answer}"})
        self.transforms = [dict(t) for t in transforms or []]
        for t in self.transforms:
            if t.get("op") not in TRANSFORMS:
                raise InputError(f"hub dataset {path}: unknown transform {t.get('op')!r}")
        self.streaming, self.title_list = streaming, title_list
        self.mirror = mirror or os.environ.get("LG_HUB_MIRROR") or None
        self.cache_dir = cache_dir

    def describe(self) -> str:
        where = f" (local mirror {self._local_dir()})" if self._local_dir() else ""
        return f"hf-hub {self.path}" + (f" [{self.config}]" if self.config else "") + f" split {self.split}{where}"

    def _local_dir(self) -> Path | None:
        if not self.mirror:
            return None
        local = Path(self.mirror) / self.path / (self.config or "")
        return local if local.is_dir() else None

    def _load(self) -> Any:
        local = self._local_dir()
        if local is None and not hub_enabled():
            _force_offline()
            flags = [f"{n}={os.environ.get(n)}" for n in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(n)]
            raise InputError(
                f"hub dataset {self.path!r} is not available offline ({', '.join(flags) or 'the hub is opt-in'}); "
                "use the release folder (LG_RELEASE_DIR), an offline variant, or set HF_DATASETS_OFFLINE=0 and "
                "HF_HUB_OFFLINE=0 with network"
            )
        try:
            import datasets
        except ImportError:
            raise InputError("package 'datasets' is not installed (pip install datasets)") from None
        cache = str(Path(self.cache_dir) / "hf")
        try:
            if local is not None:
                return datasets.load_dataset(str(local), split=self.split, cache_dir=cache)
            return datasets.load_dataset(
                self.path, self.config, split=self.split, streaming=self.streaming, cache_dir=cache
            )
        except (FileNotFoundError, ValueError, ConnectionError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise InputError(f"hub dataset {self.path!r}: cannot load ({first_line})") from None

    def _record(self, row: Mapping[str, Any], index: int) -> RawRecord:
        values = dict(row)
        where = f"hub dataset {self.path} row {index}"
        try:
            for t in self.transforms:
                TRANSFORMS[t["op"]](values, **{k: v for k, v in t.items() if k != "op"})
            mapped = {key: template.format_map(values).strip() for key, template in self.fields.items()}
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: field mapping failed ({exc.__class__.__name__}: {exc})") from None
        return RawRecord(
            record_id=mapped.pop("record_id", "") or f"{self.split}-{index}",
            question=mapped.pop("question", ""),
            answer=mapped.pop("answer", ""),
            rationale=mapped.pop("rationale", None) or None,
            detailed=mapped.pop("detailed", None) or None,
            passage=mapped.pop("passage", None) or None,
            title=mapped.pop("title", None) or None,
        )

    def records(self, want: int, seed: int) -> Iterator[RawRecord]:
        from data_sources.datasets.packs import title_list

        titles = title_list(self.title_list)
        # A streamed corpus (all of Wikipedia) is not read to the end: enough matches for the selection to sample.
        cap = max(2 * want, want + 50) if self.streaming else None
        found = 0
        for index, row in enumerate(self._load()):
            if titles is not None and row.get("title") not in titles:
                continue
            yield self._record(row, index)
            found += 1
            if cap is not None and found >= cap:
                return
