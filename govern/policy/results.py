"""``result:`` blocks of catalog.yaml: what a *result* built from a dataset may look like.

A dataset may carry, per purpose, result-level controls (docs/policies.md, "Result policies")::

    result:
      analytics:                       # a purpose; it also covers its sub-purposes (g3)
        min_group: {k: 10, count: units, semantics: remainder}
        projection: [patient_id]       # joinable and groupable, never output nor compared
        k_anonymity:
          k: 5
          quasi_identifiers: {birth_date: [month, year, "*"], zip: ["prefix:3", "prefix:1", "*"]}
          max_suppression: 0.05
      "*": {min_group: 5}              # every other purpose

``min_group: 5`` is short for ``{k: 5}`` (rows, remainder). This module parses the block into
the plan's IR pieces (:class:`~govern.plan.model.MinGroup`, :class:`~govern.plan.model.KAnonymity`)
with file and line, and collects every problem; it never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from govern.plan.model import KAnonymity, MinGroup
from govern.policy.documents import LocatedDict

__all__ = ["ALL_PURPOSES", "ResultEntry", "parse_results", "valid_level"]

ALL_PURPOSES = "*"
COUNTS = ("rows", "units")
SEMANTICS = ("remainder", "error")
_FIELDS = {"min_group", "projection", "k_anonymity", "description"}
_LEVEL = re.compile(r"^(month|year|decade|\*|bucket:[1-9][0-9]*|prefix:[0-9]+)$")


@dataclass(frozen=True)
class ResultEntry:
    """One purpose's result policy on one dataset, as the steward wrote it (with its line)."""

    dataset: str
    purpose: str
    line: int
    min_group: MinGroup | None = None
    projection: tuple[str, ...] = ()
    k_anonymity: KAnonymity | None = None


def valid_level(level: object) -> bool:
    """A generalization level: ``month``, ``year``, ``decade`` (dates), ``bucket:N`` (numbers),
    ``prefix:N`` (strings) or ``*`` (the value is suppressed)."""
    return isinstance(level, str) and bool(_LEVEL.match(level))


def parse_results(node: Any, dataset: str, columns: set[str], privacy_unit: str | None,
                  line: int, report: Callable[[int, str], None]) -> dict[str, ResultEntry]:
    """Purpose → :class:`ResultEntry` from a dataset's ``result:`` value; problems go to
    ``report(line, message)``."""
    if not isinstance(node, LocatedDict):
        report(line, f"dataset '{dataset}': result must be a mapping of purpose → controls")
        return {}
    out: dict[str, ResultEntry] = {}
    for purpose, raw in node.items():
        pline = node.line_of(purpose)
        what = f"result of '{dataset}' for purpose '{purpose}'"
        if not isinstance(raw, LocatedDict):
            report(pline, f"{what} must be a mapping")
            continue
        for key in raw:
            if key not in _FIELDS:
                report(raw.line_of(key), f"unknown field '{key}' in {what} (allowed: {', '.join(sorted(_FIELDS))})")
        entry = ResultEntry(
            dataset=dataset, purpose=str(purpose), line=pline,
            min_group=_min_group(raw, what, privacy_unit, report) if "min_group" in raw else None,
            projection=_projection(raw, what, columns, report),
            k_anonymity=_k_anonymity(raw, what, columns, report) if "k_anonymity" in raw else None,
        )
        out[str(purpose)] = entry
    return out


def _k(value: Any, line: int, what: str, report: Callable[[int, str], None]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        report(line, f"{what}: k must be an integer ≥ 2")
        return None
    return value


def _min_group(raw: LocatedDict, what: str, privacy_unit: str | None,
               report: Callable[[int, str], None]) -> MinGroup | None:
    line = raw.line_of("min_group")
    value = raw["min_group"]
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"k": value}
    if not isinstance(value, dict):
        report(line, f"{what}: min_group must be k or a mapping {{k, count, semantics}}")
        return None
    unknown = set(value) - {"k", "count", "semantics"}
    if unknown:
        report(line, f"{what}: unknown field(s) in min_group: {', '.join(sorted(map(str, unknown)))}")
    k = _k(value.get("k"), line, f"{what}: min_group", report)
    count = value.get("count", "rows")
    semantics = value.get("semantics", "remainder")
    ok = k is not None
    if count not in COUNTS:
        report(line, f"{what}: min_group count must be one of {', '.join(COUNTS)}")
        ok = False
    elif count == "units" and privacy_unit is None:
        report(line, f"{what}: min_group counts privacy units, but the dataset declares no privacy_unit")
        ok = False
    if semantics not in SEMANTICS:
        report(line, f"{what}: min_group semantics must be one of {', '.join(SEMANTICS)}")
        ok = False
    return MinGroup(int(k or 0), str(count), str(semantics)) if ok else None


def _projection(raw: LocatedDict, what: str, columns: set[str], report: Callable[[int, str], None]) -> tuple[str, ...]:
    value = raw.get("projection")
    if value is None:
        return ()
    line = raw.line_of("projection")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        report(line, f"{what}: projection must be a list of column names")
        return ()
    unknown = [v for v in value if v not in columns]
    if unknown:
        report(line, f"{what}: projection names columns not in the catalog: {', '.join(unknown)}")
    return tuple(v for v in value if v in columns)


def _k_anonymity(raw: LocatedDict, what: str, columns: set[str],
                 report: Callable[[int, str], None]) -> KAnonymity | None:
    line = raw.line_of("k_anonymity")
    value = raw["k_anonymity"]
    if not isinstance(value, dict):
        report(line, f"{what}: k_anonymity must be a mapping {{k, quasi_identifiers, max_suppression}}")
        return None
    unknown = set(value) - {"k", "quasi_identifiers", "max_suppression"}
    if unknown:
        report(line, f"{what}: unknown field(s) in k_anonymity: {', '.join(sorted(map(str, unknown)))}")
    k = _k(value.get("k"), line, f"{what}: k_anonymity", report)
    qis = value.get("quasi_identifiers")
    if isinstance(qis, list):  # columns only: suppression without generalization
        qis = {q: [] for q in qis if isinstance(q, str)}
    if not isinstance(qis, dict) or not qis:
        report(line, f"{what}: k_anonymity needs quasi_identifiers (column → generalization levels)")
        return None
    pairs: list[tuple[str, tuple[str, ...]]] = []
    ok = k is not None
    for column, levels in qis.items():
        if column not in columns:
            report(line, f"{what}: quasi-identifier '{column}' is not a catalogued column")
            ok = False
            continue
        levels = levels or []
        if not isinstance(levels, list) or not all(valid_level(v) for v in levels):
            report(line, f"{what}: levels of '{column}' must be a list of month, year, decade, bucket:N, "
                         "prefix:N or *")
            ok = False
            continue
        pairs.append((str(column), tuple(levels)))
    suppression = value.get("max_suppression", 0.05)
    if isinstance(suppression, bool) or not isinstance(suppression, int | float) or not 0 <= suppression <= 1:
        report(line, f"{what}: max_suppression must be a fraction in [0, 1]")
        ok = False
    return KAnonymity(int(k or 0), tuple(pairs), float(suppression)) if ok else None
