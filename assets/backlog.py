"""What is still to compute: catalog models x buildable variants, minus what Dagster already has.

Pure planning (no Dagster calls) so the rules are testable on plain data; `assets.automation.sensors` feeds it
the instance's partition statuses and turns the plan into run requests.
"""

from __future__ import annotations

import fnmatch
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lg_pipeline.vocabulary import VariantKey

# Partition states as the planner sees them (from Dagster's AssetPartitionStatus, None = never materialized).
MATERIALIZED, FAILED, IN_PROGRESS = "materialized", "failed", "in_progress"


@dataclass(frozen=True)
class Backlog:
    """One planning pass: models to register, curated tables to build first, gradient partitions to run."""

    register: tuple[str, ...] = ()
    curate: tuple[str, ...] = ()
    compute: tuple[tuple[str, str], ...] = ()
    waiting: tuple[tuple[str, str], ...] = ()  # need a curated table that is being built (or failed)
    blocked: tuple[tuple[str, str], ...] = ()  # their curated table failed a blocking check: fix the data first
    unavailable: Mapping[str, str] = field(default_factory=dict)  # model -> why it cannot run here

    @property
    def empty(self) -> bool:
        return not (self.register or self.curate or self.compute)

    def describe(self, skipped: bool = True) -> str:
        """One line; `skipped=False` leaves out the models that cannot run (the sensor says those once)."""
        parts = [
            f"{len(self.register)} new model(s)" if self.register else "",
            f"{len(self.curate)} curated table(s) to build" if self.curate else "",
            f"{len(self.compute)} gradient partition(s) to compute" if self.compute else "",
            f"{len(self.waiting)} waiting for their curated table" if self.waiting else "",
            f"{len(self.blocked)} blocked by a failed curated check" if self.blocked else "",
            *(f"{m} skipped: {why}" for m, why in sorted(self.unavailable.items()) if skipped),
        ]
        return "; ".join(p for p in parts if p) or "nothing missing"


@dataclass(frozen=True)
class Availability:
    """The variants that can be built here, and why each other one cannot."""

    buildable: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)  # variant -> why it cannot be built here

    def note(self) -> str:
        """One line per reason, naming the datasets (Markdown, for descriptions and the sensor's log)."""
        if not self.reasons:
            return ""
        lines = []
        for why, variants in by_reason(self.reasons).items():
            datasets = ", ".join(sorted({VariantKey.parse(v).dataset for v in variants}))
            lines.append(f"- {len(variants)} variant(s) of {datasets}: {why}")
        return f"Not partitioned here ({len(self.reasons)} variants that cannot be built in this environment):\n" + (
            "\n".join(lines)
        )


def by_reason(reasons: Mapping[str, str]) -> dict[str, list[str]]:
    """{why: sorted variants}, reasons in sorted order: how the notes group what cannot be built."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for variant, why in reasons.items():
        grouped[why].append(variant)
    return {why: sorted(grouped[why]) for why in sorted(grouped)}


TEACHER_NEEDED = "needs a teacher: set `teacher` on the curation resource or LG_TEACHER"


def teacher_set(teacher: str | None = None) -> bool:
    """Whether a teacher is configured: `teacher` (a curation resource's setting), else `LG_TEACHER`."""
    value = os.environ.get("LG_TEACHER", "") if teacher is None else teacher
    return value.strip().lower() not in ("", "none")


def _reason(spec, key: VariantKey, release_dir: str | None, hub: bool, teacher: bool) -> str | None:
    group = spec.group_for(key.level)
    released = spec.release_file(key.level, key.correctness)
    if release_dir and released and os.path.isfile(os.path.join(release_dir, released)):
        return None
    if group is None:
        where = f"not in {release_dir}" if release_dir else "set LG_RELEASE_DIR to the release folder"
        return f"only in the study's release ({where})"
    if group.adapter == "hub" and not (group.offline or hub):
        return "a hub dataset and HF_HUB_OFFLINE/HF_DATASETS_OFFLINE keep the hub off (set both 0, or LG_RELEASE_DIR)"
    if not (group.offline or hub):
        return f"its source ({group.adapter}) is not available offline"
    if key.level in group.teacher_levels and not teacher:
        return TEACHER_NEEDED
    return None


def why_unbuildable(
    variant: str | VariantKey, release_dir: str | None = None, teacher: bool | None = None
) -> str | None:
    """Why the variant cannot be built here (None: it can): the one answer behind the variant partitions, their
    descriptions, the automation's backlog and the first line of a run that cannot build it.

    `release_dir`, `teacher` (whether a teacher writes Detailed CoT) default to this environment's (`LG_RELEASE_DIR`,
    `LG_TEACHER`); a curation run passes its resource's.
    """
    from data_sources.datasets.catalog import dataset_spec
    from data_sources.datasets.hub import hub_enabled

    key = VariantKey.parse(variant)
    release_dir = os.environ.get("LG_RELEASE_DIR") or None if release_dir is None else release_dir
    return _reason(dataset_spec(key), key, release_dir, hub_enabled(), teacher_set() if teacher is None else teacher)


def variant_availability(release_dir: str | None = None, teacher: bool | None = None) -> Availability:
    """Which catalog variants can be built here (`why_unbuildable` of each, with the same defaults).

    The partitions pass teacher=True (a teacher can also be given in the launchpad); the automation asks for the
    environment's, so it never fills in a teacher level that would fail every night.
    """
    from data_sources.datasets.catalog import variant_keys

    buildable, reasons = [], {}
    for key in variant_keys():
        why = why_unbuildable(key, release_dir, teacher)
        if why:
            reasons[str(key)] = why
        else:
            buildable.append(str(key))
    return Availability(tuple(buildable), reasons)


def buildable_variants(patterns: str | None = None, release_dir: str | None = None) -> list[str]:
    """Variants this environment can build (`variant_availability`, the variant partitions); `LG_AUTO_VARIANTS`
    (comma-separated globs over the variants in full or their partition keys: `champ__*`, `champ-*`) narrows what
    is filled in.

    Unbuildable variants are never listed: a run for them would fail, every night.
    """
    from data_sources.datasets.catalog import dataset_codes

    ordered = list(variant_availability(release_dir).buildable)
    globs = [p.strip() for p in (patterns or os.environ.get("LG_AUTO_VARIANTS", "*")).split(",") if p.strip()]
    codes = dataset_codes()
    names = {k: (k, VariantKey.parse(k).code(codes)) for k in ordered}  # in full or as a partition key (champ-*)
    return [k for k in ordered if any(fnmatch.fnmatchcase(n, g) for n in names[k] for g in globs)]


def unavailable_reason(spec: Any) -> str | None:
    """Why a catalog model cannot be computed in this environment (None: it can), checked without loading it."""
    import importlib.util

    if spec.source == "hub":
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
            return f"hub model ({spec.repo_id}) and HF_HUB_OFFLINE is set"
        return None
    if spec.source == "local":
        return None if Path(spec.path or "", "config.json").is_file() else f"no transformers folder at {spec.path}"
    found = importlib.util.find_spec(spec.package or "") if spec.package else None
    return None if found is not None else f"package {spec.package} is not installed"


def plan(
    catalog: Mapping[str, Any],
    registered: Iterable[str],
    variants: Iterable[str],
    curated_status: Mapping[str, str | None],
    gradient_status: Mapping[tuple[str, str], str | None],
    retry_failed: bool = False,
    failed_checks: Iterable[tuple[str, str]] = (),
    blocked_variants: Iterable[str] = (),
) -> Backlog:
    """The work still missing.

    retry_failed=False (the catalog sensor): only what was never attempted. True (the nightly schedule): also
    partitions whose last run failed or whose check failed — the engine resumes and retries failed examples.
    Variants whose curated table failed a blocking check are held back: their runs would fail at once, every night.
    """
    registered, variants, failed_checks = set(registered), list(variants), set(failed_checks)
    blocked_variants = set(blocked_variants)
    unavailable = {name: why for name, spec in catalog.items() if (why := unavailable_reason(spec))}
    models = [m for m in catalog if m not in unavailable]
    redo = {None, FAILED} if retry_failed else {None}
    ready = {v for v in variants if curated_status.get(v) == MATERIALIZED}
    wanted = [
        (m, v)
        for m in models
        for v in variants
        if gradient_status.get((m, v)) in redo or (retry_failed and (m, v) in failed_checks)
    ]
    curate = tuple(v for v in variants if curated_status.get(v) in redo and any(w[1] == v for w in wanted))
    return Backlog(
        register=tuple(m for m in models if m not in registered),  # a model that cannot run here is no partition
        curate=curate,
        compute=tuple(w for w in wanted if w[1] in ready - blocked_variants),
        waiting=tuple(w for w in wanted if w[1] not in ready),
        blocked=tuple(w for w in wanted if w[1] in ready & blocked_variants),
        unavailable=unavailable,
    )
