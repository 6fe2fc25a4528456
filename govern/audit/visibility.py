"""Which audit records a steward may read, and what of them (``GET /v1/audit``).

A record touches the datasets named by its ``dataset`` field and, for analyst SQL over several
datasets (where ``dataset`` is null), by ``extra["datasets"]``, the keys of ``extra["plans"]``
and ``extra["read"]``, and ``extra["cached"]``. Then:

- a record that touches datasets is shown, unchanged, only if the steward administers **every**
  one of them (its SQL text may quote values of any of them); a malformed list counts as an
  unknown dataset, so such a record is hidden;
- a record that touches no dataset (refused before the dataset was resolved, failed logins,
  coalesced refusals) is shown with every field that can carry text from the request replaced
  by ``"[redacted]"``: ``purpose``, ``detail`` (its leading problem slug, e.g.
  ``unauthenticated:``, is kept), and every ``extra`` entry except the few the gateway itself
  fills with numbers or fixed words (:data:`KEPT_EXTRA`, :data:`KEPT_WORDS`). Who (the
  authenticated ``principal``), when, the request id, action, outcome, status, plan hash,
  policy version, rows and bytes stay.

A redacted record keeps its stored ``hash``: it is a view for reading, and verifying the chain
is ``govern audit verify``'s job, on the store itself.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import replace
from typing import Any

from govern.audit.record import AuditRecord

__all__ = ["KEPT_EXTRA", "KEPT_WORDS", "REDACTED", "touched", "visible"]

REDACTED = "[redacted]"

KEPT_EXTRA = frozenset({
    "after", "coalesced", "delta_spent", "epsilon", "epsilon_spent", "limit", "params",
    "returned", "rows", "seed", "weights",
})
"""``extra`` keys kept when their value is a number, a boolean or null (counts and amounts the
gateway computes, never request text)."""

KEPT_WORDS: dict[str, frozenset[str]] = {
    "protocol": frozenset({"http", "pgwire", "flight", "delta-sharing"}),
    "format": frozenset({"arrow", "parquet", "csv", "jsonl", "json"}),
}
"""``extra`` keys kept when their value is one of these fixed words."""

_SERVER_MADE = frozenset({"first_request_id", "last_request_id", "first_time", "last_time",
                          "statuses"})  # a coalesced record's summary, written by the log itself
_SLUG = re.compile(r"^([a-z][a-z0-9-]{0,63}): ")


class _Unknown(Exception):
    """A dataset list that is not a list of names: treat as touching an unknown dataset."""


def touched(record: AuditRecord) -> frozenset[str] | None:
    """The datasets ``record`` touches; None if a list of them is malformed."""
    names: set[str] = set()
    try:
        if record.dataset is not None:
            names.add(_name(record.dataset))
        extra = record.extra if isinstance(record.extra, dict) else {}
        for key in ("datasets", "cached"):
            if key in extra:
                names.update(_names(extra[key], list))
        for key in ("plans", "read"):
            if key in extra:
                names.update(_names(extra[key], dict))
    except _Unknown:
        return None
    return frozenset(names)


def visible(record: AuditRecord, administered: Set[str]) -> AuditRecord | None:
    """The record as a steward administering ``administered`` may see it, or None."""
    names = touched(record)
    if names is None:
        return None
    if names:
        return record if names <= administered else None
    return _redacted(record)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Unknown
    return value


def _names(value: Any, kind: type[list[Any]] | type[dict[Any, Any]]) -> list[str]:
    if not isinstance(value, kind):
        raise _Unknown
    return [_name(v) for v in value]


def _redacted(record: AuditRecord) -> AuditRecord:
    detail = record.detail
    if detail is not None:
        slug = _SLUG.match(detail)
        detail = f"{slug.group(1)}: {REDACTED}" if slug else REDACTED
    extra = record.extra if isinstance(record.extra, dict) else {}
    return replace(record, purpose=None if record.purpose is None else REDACTED, detail=detail,
                   extra={k: _kept(k, v, extra) for k, v in extra.items()})


def _kept(key: str, value: Any, extra: dict[str, Any]) -> Any:
    if key in KEPT_EXTRA and (value is None or isinstance(value, int | float | bool)):
        return value
    if key in KEPT_WORDS and isinstance(value, str) and value in KEPT_WORDS[key]:
        return value
    if key in _SERVER_MADE and isinstance(extra.get("coalesced"), int):
        return value
    return REDACTED
