"""Sensitive-data discovery: which columns hold what, and which tag and level they should get.

For each column of a sample (:mod:`govern.monitor.sample`), every detector
(:mod:`govern.monitor.detectors`) measures how many values have its shape — over the whole
sample, one vectorized Arrow regex — and how many of those pass its check — on at most
:data:`CHECKED` of them, which bounds the per-value Python work whatever the sample size. The
share of values that are valid is the value evidence. The column's name adds whole-token
evidence (:mod:`govern.monitor.names`): a hint makes a weak shape count (nine bare digits in a
column named ``ssn``), lifts a column whose values have the right shape but fail the check
(test numbers, the demo's ``555`` phone numbers) to a suggestion, and is overruled by values
that do not have the shape at all (``email_sent_at`` holding timestamps suggests nothing).

A suggestion names a type, the tag that masks it — the first of the type's preferred tags the
policy gives a mask (directly or through a ``g2`` parent tag), so accepting it never leaves a
column in the clear — a level when the type needs more than the dataset's, and a confidence.

Nothing here keeps, returns or logs a sampled value: a :class:`Classification` holds counts,
shares, names of checks and the catalog's own names only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from govern.monitor.detectors import Detector, detectors
from govern.monitor.names import Hint, hint_for
from govern.monitor.sample import sample_rows
from govern.plan.model import LEVELS
from govern.policy.decide import Decider
from govern.policy.model import DatasetEntry, PolicySet

__all__ = ["CHECKED", "NAME_ONLY", "TYPES", "Classification", "ColumnClassification", "Suggestion", "TypeInfo",
           "classify_dataset", "classify_table", "masked_tags"]

PROBE = 256  # values of the (random-order) sample a detector's shape is tried on first
CHECKED = 256  # values with a detector's shape that its check runs on, at most
ROUND = 32  # ... in rounds of this many, until the pass rate is settled:
SETTLED_HIGH, SETTLED_LOW = 0.9, 0.2  # at or above / at or below (a random lookalike passes ≤ 10 %)
NAME_ONLY = 0.6  # confidence of a name hint the values neither confirm nor contradict
NAME_AND_SHAPE = 0.8  # a hint whose values have the shape but fail a check without check digit
NAME_AND_SHAPE_CHECKED = 0.6  # ... fail a check digit (a column of test or invalid numbers)
MIN_SHAPE = 0.2  # a probe with fewer values of the shape skips the detector
HINT_SHAPE = 0.3  # a hinted column needs this share of values with the shape, else the hint is overruled


@dataclass(frozen=True)
class TypeInfo:
    label: str
    tags: tuple[str, ...]  # preferred tags, most specific first
    level: str | None  # the level the type needs (None: the dataset's)


TYPES: dict[str, TypeInfo] = {
    "payment_card": TypeInfo("payment card number", ("payment_card", "pci", "pii"), "restricted"),
    "iban": TypeInfo("IBAN", ("iban", "bank_account", "financial_account", "pii"), "restricted"),
    "ssn": TypeInfo("US social security number", ("ssn", "national_id", "pii"), "restricted"),
    "national_id": TypeInfo("national identification number", ("national_id", "pii"), "restricted"),
    "email": TypeInfo("email address", ("email", "contact", "pii"), "confidential"),
    "phone": TypeInfo("phone number", ("phone", "contact", "pii"), "confidential"),
    "person_name": TypeInfo("person's name", ("person_name", "direct_identifier", "pii"), "confidential"),
    "birth_date": TypeInfo("date of birth", ("birth_date", "quasi_identifier"), "confidential"),
    "postal_code": TypeInfo("postal code", ("postal_code", "quasi_identifier"), None),
    "address": TypeInfo("postal address", ("address", "direct_identifier", "pii"), "confidential"),
    "ip_address": TypeInfo("IP address", ("ip_address", "pii"), "confidential"),
    "health": TypeInfo("health information", ("phi",), "confidential"),
    "demographic": TypeInfo("demographic attribute", ("quasi_identifier",), None),
    "financial": TypeInfo("financial amount", ("financial",), None),
    "person_identifier": TypeInfo("identifier of a person", ("identifier",), None),
}


@dataclass(frozen=True)
class Suggestion:
    type: str  # a key of TYPES
    label: str
    tag: str  # the tag to add
    masked: bool  # the policy gives the tag a mask (False: add one before accepting)
    level: str | None  # the column level to set (None: inherit the dataset's)
    confidence: float
    evidence: tuple[str, ...]  # counts, shares and check names; never a value
    check_digit: bool = False
    variant: str | None = None  # e.g. "nl.bsn" for a national id

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "label": self.label, "tag": self.tag, "masked": self.masked,
                "level": self.level, "confidence": self.confidence, "evidence": list(self.evidence),
                "variant": self.variant}


@dataclass(frozen=True)
class ColumnClassification:
    column: str
    type: str  # Arrow type in storage
    sampled: int  # non-empty values looked at
    catalog_tags: tuple[str, ...] | None  # None: not in the catalog (withheld until classified)
    suggestions: tuple[Suggestion, ...] = ()  # best first
    status: str = "clear"  # unclassified | agrees | review | clear

    @property
    def best(self) -> Suggestion | None:
        return self.suggestions[0] if self.suggestions else None

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "type": self.type, "sampled": self.sampled,
                "catalog_tags": None if self.catalog_tags is None else list(self.catalog_tags),
                "status": self.status, "suggestions": [s.to_dict() for s in self.suggestions]}


@dataclass(frozen=True)
class Classification:
    dataset: str
    rows: int  # rows in the dataset
    sample_rows: int  # rows sampled
    seed: int
    columns: tuple[ColumnClassification, ...] = field(default_factory=tuple)

    def column(self, name: str) -> ColumnClassification:
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "rows": self.rows, "sample_rows": self.sample_rows, "seed": self.seed,
                "columns": [c.to_dict() for c in self.columns]}


def masked_tags(policy: PolicySet, decider: Decider) -> set[str]:
    """Tags the policy masks: those with a mask in masking.yaml or below such a tag (``g2``)."""
    found = set()
    for tag in policy.known_tags | set().union(*(t.tags for t in TYPES.values())):
        if any(a.startswith("tag:") and a[4:] in policy.tag_masks for a in decider.ancestors("g2", f"tag:{tag}")):
            found.add(tag)
    return found


def classify_dataset(dataset: ds.Dataset, name: str, policy: PolicySet, decider: Decider, *,
                     sample: int = 10_000, seed: int = 0, min_confidence: float = 0.5,
                     phone_regions: tuple[str, ...] = ("US",)) -> Classification:
    """Sample ``dataset`` (the catalog's ``name``, opened by the Governor) and classify it."""
    entry = policy.datasets.get(name)
    table, total = sample_rows(dataset, sample, seed, location=entry.location if entry else None)
    return classify_table(table, name, policy, decider, rows=total, seed=seed, min_confidence=min_confidence,
                          phone_regions=phone_regions)


def classify_table(table: pa.Table, name: str, policy: PolicySet, decider: Decider, *, rows: int | None = None,
                   seed: int = 0, min_confidence: float = 0.5,
                   phone_regions: tuple[str, ...] = ("US",)) -> Classification:
    """Classify every column of ``table`` (a sample of dataset ``name``, in random order)."""
    entry = policy.datasets.get(name)
    masked = masked_tags(policy, decider)
    found = detectors(tuple(phone_regions))
    columns = tuple(_column(table.schema.field(i), table.column(i), entry, policy, decider, masked, found,
                            min_confidence) for i in range(table.num_columns))
    return Classification(name, rows if rows is not None else table.num_rows, table.num_rows, seed, columns)


# -- one column ---------------------------------------------------------------------------------
@dataclass
class _Evidence:
    detector: Detector
    strong: int = 0  # values with the strong shape
    weak: int = 0  # values with only the weak shape (counted only with a hint)
    strong_valid: float = 0.0  # share of checked strong-shaped values that pass
    weak_valid: float = 0.0
    checked: int = 0


def _column(f: pa.Field, values: pa.ChunkedArray, entry: DatasetEntry | None, policy: PolicySet,
            decider: Decider, masked: set[str], found: tuple[Detector, ...],
            min_confidence: float) -> ColumnClassification:
    hint = hint_for(f.name)
    text = _text(values)
    n = len(text) if text is not None else 0
    scored: dict[str, tuple[float, _Evidence | None]] = {}
    if text is not None:
        for det in found:
            ev = _measure(det, text, hinted=hint is not None and hint.type == det.type)
            if ev is None:
                continue
            share = _share(ev, n, hinted=False)
            if det.type not in scored or share > scored[det.type][0]:
                scored[det.type] = (share, ev)
    suggestions: list[tuple[float, int, Suggestion]] = []
    for order, (type_, (share, ev)) in enumerate(scored.items()):
        if ev is None:
            continue
        hinted = hint is not None and hint.type == type_
        conf = _hinted_confidence(ev, n) if hinted else share
        if conf is not None and conf >= min_confidence:
            suggestions.append((-conf, order, _suggest(type_, conf, ev, n, hint if hinted else None, entry, policy,
                                                      decider, masked)))
    hinted_types = {s.type for _, _, s in suggestions}
    if hint is not None and hint.type not in hinted_types:
        conf = _name_only(hint, f, text, n, found)
        if conf is not None and conf >= min_confidence:
            suggestions.append((-conf, len(scored), _suggest(hint.type, conf, None, n, hint, entry, policy, decider,
                                                            masked)))
    ordered = tuple(s for _, _, s in sorted(suggestions, key=lambda t: (t[0], t[1])))
    tags = entry.columns[f.name].tags if entry is not None and f.name in entry.columns else None
    return ColumnClassification(f.name, str(f.type), n, tags, ordered, _status(tags, ordered, decider))


def _text(values: pa.ChunkedArray) -> pa.Array | None:
    """The column's non-empty values as trimmed strings, or None if it is not text-like
    (floats, dates, times, booleans hold none of the detected types)."""
    t = values.type
    if pa.types.is_dictionary(t):
        values, t = values.cast(t.value_type), t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or (
            pa.types.is_decimal(t) and t.scale == 0):
        arr = pc.utf8_trim_whitespace(values.cast(pa.string())).combine_chunks() if len(values) else pa.array(
            [], pa.string())
        return arr.filter(pc.greater(pc.utf8_length(arr), 0)) if len(arr) else arr
    return None


def _measure(det: Detector, text: pa.Array, *, hinted: bool) -> _Evidence | None:
    """Shape counts over all values, check pass rates over at most CHECKED of them; None when
    a probe of the first PROBE values shows the shape is too rare to matter."""
    weak = det.weak if hinted else None
    probe = text.slice(0, PROBE)
    if len(probe) == 0:
        return None
    needed = MIN_SHAPE * len(probe)
    strong_probe = pc.sum(pc.match_substring_regex(probe, det.strong, ignore_case=det.ignore_case)).as_py() or 0
    weak_probe = pc.sum(pc.match_substring_regex(probe, weak)).as_py() or 0 if weak else 0
    if strong_probe < needed and weak_probe < needed and not (hinted and strong_probe + weak_probe >= needed):
        return None
    ev = _Evidence(det)
    strong_mask = pc.match_substring_regex(text, det.strong, ignore_case=det.ignore_case)
    ev.strong = pc.sum(strong_mask).as_py() or 0
    ev.strong_valid, checked = _pass_rate(det, text.filter(strong_mask))
    ev.checked = checked
    if weak:
        weak_mask = pc.and_(pc.match_substring_regex(text, weak), pc.invert(strong_mask))
        ev.weak = pc.sum(weak_mask).as_py() or 0
        ev.weak_valid, checked = _pass_rate(det, text.filter(weak_mask))
        ev.checked += checked
    return ev


def _pass_rate(det: Detector, shaped: pa.Array) -> tuple[float, int]:
    """(share of checked values that pass, how many were checked). Values are checked in
    rounds of ROUND (the sample is in random order, so each round is a uniform draw) until the
    share is clearly high or clearly low, at most CHECKED in all: a column of valid numbers or
    of lookalikes is settled after one round, a mixed one gets the full count."""
    values = shaped.slice(0, CHECKED).to_pylist()
    passed = checked = 0
    for start in range(0, len(values), ROUND):
        chunk = values[start:start + ROUND]
        passed += sum(1 for v in chunk if det.validate(v))
        checked += len(chunk)
        rate = passed / checked
        if rate >= SETTLED_HIGH or rate <= SETTLED_LOW:
            break
    return (passed / checked, checked) if checked else (0.0, 0)


def _share(ev: _Evidence, n: int, *, hinted: bool) -> float:
    """Share of the column's values that are valid instances of the detector's type."""
    if n == 0:
        return 0.0
    valid = ev.strong * ev.strong_valid + (ev.weak * ev.weak_valid if hinted else 0.0)
    return valid / n


def _hinted_confidence(ev: _Evidence, n: int) -> float | None:
    shaped = (ev.strong + ev.weak) / n if n else 0.0
    if shaped < HINT_SHAPE:
        return None  # the values overrule the name
    valid = _share(ev, n, hinted=True)
    floor = NAME_AND_SHAPE_CHECKED if ev.detector.check_digit else NAME_AND_SHAPE
    return round(min(0.99, max(floor, valid + 0.1)), 2) if valid >= 0.5 else floor


def _name_only(hint: Hint, f: pa.Field, text: pa.Array | None, n: int, found: tuple[Detector, ...]) -> float | None:
    """Confidence of a hint whose type no detector measured on these values."""
    detected = {d.type for d in found}
    if hint.type in detected:  # a value type: the values had no room to confirm it
        if text is None or n > 0:
            return None  # not text, or text without the shape: overruled
        return NAME_ONLY  # no values to look at
    return NAME_ONLY


def _suggest(type_: str, conf: float, ev: _Evidence | None, n: int, hint: Hint | None, entry: DatasetEntry | None,
             policy: PolicySet, decider: Decider, masked: set[str]) -> Suggestion:
    info = TYPES[type_]
    tag = next((t for t in info.tags if t in masked), info.tags[0])
    level = info.level
    if level is not None and entry is not None and LEVELS.index(level) <= LEVELS.index(entry.level):
        level = None
    evidence: list[str] = []
    if ev is not None and n:
        det = ev.detector
        shaped = ev.strong + ev.weak
        evidence.append(f"{shaped / n:.0%} of {n:,} sampled values have the shape of {_article(det.label)}"
                        + (f"; {_pct(ev)} of {ev.checked:,} checked pass {det.check}" if ev.checked else ""))
    if hint is not None:
        evidence.append(f"the column name has the word(s) '{' '.join(hint.phrase)}'")
    return Suggestion(type_, info.label, tag, tag in masked, level, round(conf, 2), tuple(evidence),
                      ev.detector.check_digit if ev else False, ev.detector.variant if ev else None)


def _article(label: str) -> str:
    return f"an {label}" if label[:1].lower() in "aeio" else f"a {label}"


def _pct(ev: _Evidence) -> str:
    total = ev.strong + ev.weak
    rate = (ev.strong * ev.strong_valid + ev.weak * ev.weak_valid) / total if total else 0.0
    return f"{rate:.0%}"


def _status(tags: tuple[str, ...] | None, suggestions: tuple[Suggestion, ...], decider: Decider) -> str:
    if tags is None:
        return "unclassified"
    if not suggestions:
        return "clear"
    best = suggestions[0].tag
    related = any(f"tag:{best}" in decider.ancestors("g2", f"tag:{t}") or f"tag:{t}" in decider.ancestors(
        "g2", f"tag:{best}") for t in tags)
    return "agrees" if related else "review"
