"""One audit record and the hash that chains it to the one before.

A record is plain data. Its ``hash`` is ``sha256(prev_hash || canonical)`` where ``canonical`` is
the JSON of every other field (sorted keys, no whitespace, UTF-8 kept as is). Because
``prev_hash`` is itself one of the hashed fields, editing, removing or reordering any record
breaks every link after it, which :mod:`govern.audit.verify` detects.

Fields added after the first release (``policy_version``) are left out of ``canonical`` while
they are None, so records written before they existed keep their hashes; once set they are
hashed like every other field (None and a value never hash alike, so neither can be swapped
for the other unseen).

Records are normalised before sealing (JSON round trip of ``columns`` and ``extra``, obvious
credentials redacted) so that what is hashed is exactly what the store gives back later.
"""

from __future__ import annotations

import hashlib
import json
import re
from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record of every chain."""

OUTCOMES = frozenset({"ok", "denied", "error", "aborted"})

LATER_FIELDS: tuple[str, ...] = ("policy_version",)
"""Fields added after records were first written: hashed only when not None."""

# Defence in depth for invariant 6: API keys (gk_<id>_<secret>) and bearer tokens must never
# reach the audit trail, even if a caller puts a raw header or error text into ``detail``.
_SECRET_PATTERNS = (
    re.compile(r"\bgk_[0-9A-Za-z]{8}_[0-9A-Za-z_\-]+"),
    re.compile(r"(?i)\b(bearer\s+)[0-9A-Za-z._~+/=\-]{16,}"),
)


@dataclass(frozen=True)
class AuditRecord:
    """What happened to one request: who, why, which data, which plan, how much, and how it ended.

    ``seq``, ``time``, ``prev_hash`` and ``hash`` are assigned by :meth:`AuditLog.append`; pass
    ``seq=None, time="", prev_hash="", hash=""`` when building a record to append.
    """

    seq: int | None
    time: str
    request_id: str
    principal: str | None
    purpose: str | None
    dataset: str | None
    action: str
    outcome: str
    status: int
    plan_hash: str | None
    columns: dict[str, str] = field(default_factory=dict)
    rows: int | None = None
    bytes: int | None = None
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""
    policy_version: str | None = None  # the policy set in force (its version id), if one was


    def to_dict(self) -> dict[str, Any]:
        """Every field, nested values copied: what :func:`dataclasses.asdict` gives, built
        directly (a record is hashed and stored field by field on every request, and asdict's
        generic walk cost more than the hash itself)."""
        out = {name: getattr(self, name) for name in _NAMES}
        out["columns"] = _copied(self.columns)
        out["extra"] = _copied(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def canonical(self) -> str:
        """The hashed text: every field except ``hash`` (and the later fields while None), as
        canonical JSON."""
        body = self.to_dict()
        body.pop("hash")
        for name in LATER_FIELDS:
            if body[name] is None:
                body.pop(name)
        return canonical_json(body)

    def compute_hash(self) -> str:
        return hashlib.sha256((self.prev_hash + self.canonical()).encode("utf-8")).hexdigest()

    def sealed(self, *, seq: int, time: str, prev_hash: str) -> AuditRecord:
        """This record placed at ``seq`` after a record whose hash is ``prev_hash``."""
        placed = replace(self, seq=seq, time=time, prev_hash=prev_hash, hash="")
        return replace(placed, hash=placed.compute_hash())


_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AuditRecord))
_PLAIN = (str, int, float, bool, type(None))


def _copied(value: Any) -> Any:
    """A copy of ``value`` as :func:`dataclasses.asdict` makes one (containers rebuilt, JSON
    scalars shared, anything else deep-copied)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return type(value)((_copied(k), _copied(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_copied(v) for v in value)
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else deepcopy(value)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, non-ASCII kept, NaN refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def now_iso() -> str:
    """UTC ISO-8601 with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalized(record: AuditRecord) -> AuditRecord:
    """The record as the store will return it, or ``ValueError`` if it cannot be stored.

    JSON fields go through a round trip (tuples become lists, unknown objects their ``str``) so
    the hash computed now equals the hash recomputed from stored text later.
    """
    if not record.request_id or not isinstance(record.request_id, str):
        raise ValueError("request_id is required")
    if not record.action or not isinstance(record.action, str):
        raise ValueError("action is required")
    if record.outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {record.outcome!r}")
    if isinstance(record.status, bool) or not isinstance(record.status, int):
        raise ValueError("status must be an integer")
    for name in ("rows", "bytes"):
        value = getattr(record, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer or None")
    for name in ("principal", "purpose", "dataset", "plan_hash", "detail", "policy_version"):
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string or None")
    columns = _json_round_trip(record.columns)
    extra = _json_round_trip(record.extra)
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise ValueError("columns must map column names to action strings")
    if not isinstance(extra, dict):
        raise ValueError("extra must be a mapping")
    detail = redact(record.detail) if record.detail is not None else None
    return replace(record, columns=columns, extra=_redact_tree(extra), detail=detail)


def redact(text: str) -> str:
    """Replace anything shaped like an API key or bearer token with a marker."""
    text = _SECRET_PATTERNS[0].sub("gk_[redacted]", text)
    return _SECRET_PATTERNS[1].sub(r"\1[redacted]", text)


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_tree(v) for k, v in value.items()}
    return value


def _json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, allow_nan=False, ensure_ascii=False))
