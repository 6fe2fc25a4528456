"""The access plan: the frozen, typed IR every engine consumes.

A plan says, for one (principal, purpose, dataset, schema as found in storage), exactly what
leaves the gateway: each column is kept, masked (function + parameters) or withheld, each with
the reason that decided it; rows are filtered; some cells are masked where a predicate holds.

The plan is plain data: ``to_dict()`` is JSON-serializable and ``hash`` is a stable SHA-256 of
its canonical JSON. Predicates are stored as canonical DuckDB SQL text in which subject
attributes have already been bound as typed literals, so a plan can be read by a person, logged
in an audit record, and executed by any engine without consulting policy files again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from govern.errors import PlanError
from govern.plan.predicates import referenced_columns

Action = Literal["keep", "mask", "withhold"]

LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")


def level_rank(level: str) -> int:
    """Rank of a *column's* level; an unknown level ranks above every declared one, so no
    clearance reaches it (fail closed: the column is withheld from everyone)."""
    try:
        return LEVELS.index(level)
    except ValueError:
        return len(LEVELS)


def clearance_rank(clearance: object) -> int:
    """Rank of a *principal's* clearance; anything that is not exactly a declared level (``""``,
    ``"Restricted"``, ``"restricted\u200b"``, a list, a number) ranks below ``public``, so it reads
    nothing (fail closed: no read up from a claim the steward did not foresee)."""
    if isinstance(clearance, str) and clearance in LEVELS:
        return LEVELS.index(clearance)
    return -1


@dataclass(frozen=True)
class Reason:
    """Why something was decided: a stable code, a sentence, and where the rule lives."""

    code: str
    detail: str
    source: str | None = None  # "policy.csv:12", "catalog.yaml:30", ...

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "source": self.source}

    def __str__(self) -> str:
        return f"{self.detail} ({self.source})" if self.source else self.detail


@dataclass(frozen=True)
class MaskSpec:
    """A mask function by name with its (validated) parameters."""

    function: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, function: str, params: dict[str, Any] | None = None) -> MaskSpec:
        items = ((k, _freeze(v)) for k, v in (params or {}).items())
        return cls(function, tuple(sorted(items, key=lambda kv: kv[0])))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "params": _plain(dict(self.params))}

    def __str__(self) -> str:
        if not self.params:
            return self.function
        args = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"{self.function}({args})"


@dataclass(frozen=True)
class ColumnPlan:
    name: str
    action: Action
    reason: Reason
    type: str  # Arrow type as found in storage, e.g. "string", "date32[day]"
    mask: MaskSpec | None = None
    level: str | None = None
    tags: tuple[str, ...] = ()
    result_type: str | None = None  # Arrow type the principal receives (None if withheld)

    @property
    def visible(self) -> bool:
        return self.action != "withhold"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "mask": self.mask.to_dict() if self.mask else None,
            "reason": self.reason.to_dict(),
            "type": self.type,
            "result_type": self.result_type,
            "level": self.level,
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class CellRule:
    """Where ``when`` holds (or is unknown), ``column`` gets ``mask`` instead of its own mask."""

    column: str
    when: str  # canonical DuckDB SQL over raw columns, literals bound
    mask: MaskSpec
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "when": self.when,
            "mask": self.mask.to_dict(),
            "reason": self.reason.to_dict(),
        }


@dataclass(frozen=True)
class RowFilter:
    """Rows pass only where ``predicate`` is true (NULL drops the row)."""

    predicate: str  # canonical DuckDB SQL over raw columns, literals bound
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        return {"predicate": self.predicate, "reason": self.reason.to_dict()}


@dataclass(frozen=True)
class MinGroup:
    """Every group of an aggregate result holds at least ``k`` rows (``count: rows``) or ``k``
    distinct privacy units (``count: units``); smaller groups are folded into one remainder row
    (``semantics: remainder``, Snowflake) or refuse the query (``semantics: error``, BigQuery)."""

    k: int
    count: str = "rows"  # rows | units
    semantics: str = "remainder"  # remainder | error

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "count": self.count, "semantics": self.semantics}


@dataclass(frozen=True)
class KAnonymity:
    """Row-level results are k-anonymous over ``quasi_identifiers``: each column generalizes
    step by step through its levels (``month``, ``year``, ``bucket:N``, ``prefix:N``, ``*``)
    until at most ``max_suppression`` of the rows sit in classes smaller than ``k``; those
    rows are dropped. Computed at query time, nothing stored."""

    k: int
    quasi_identifiers: tuple[tuple[str, tuple[str, ...]], ...]
    max_suppression: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "quasi_identifiers": {c: list(levels) for c, levels in self.quasi_identifiers},
                "max_suppression": self.max_suppression}


@dataclass(frozen=True)
class ResultPolicy:
    """What a result built from this dataset may look like (a ``result:`` block of catalog.yaml
    for the request's purpose): minimum group size, columns usable but never output
    (``projection``), k-anonymity of row-level outputs."""

    reason: Reason
    min_group: MinGroup | None = None
    projection: tuple[str, ...] = ()
    k_anonymity: KAnonymity | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"min_group": self.min_group.to_dict() if self.min_group else None,
                "projection": list(self.projection),
                "k_anonymity": self.k_anonymity.to_dict() if self.k_anonymity else None,
                "reason": self.reason.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultPolicy:
        mg, ka = data.get("min_group"), data.get("k_anonymity")
        return cls(
            reason=_reason(data["reason"]),
            min_group=MinGroup(int(mg["k"]), mg["count"], mg["semantics"]) if mg else None,
            projection=tuple(data.get("projection") or ()),
            k_anonymity=KAnonymity(int(ka["k"]), tuple((c, tuple(levels)) for c, levels in
                                                       ka["quasi_identifiers"].items()),
                                   float(ka["max_suppression"])) if ka else None)


@dataclass(frozen=True)
class AccessPlan:
    dataset: str
    principal: str
    purpose: str
    action: str
    columns: tuple[ColumnPlan, ...]
    row_filters: tuple[RowFilter, ...] = ()
    cell_rules: tuple[CellRule, ...] = ()
    privacy_unit: str | None = None
    key_id: str | None = None
    policy_version: str | None = None
    decision: Reason | None = None  # why the dataset itself was allowed
    result: ResultPolicy | None = None  # result-level controls for this purpose (catalog.yaml)
    _hash: str = field(default="", compare=False, repr=False)

    # -- views -----------------------------------------------------------------------------
    def column(self, name: str) -> ColumnPlan:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def visible_columns(self) -> tuple[ColumnPlan, ...]:
        return tuple(c for c in self.columns if c.visible)

    @property
    def visible_names(self) -> list[str]:
        return [c.name for c in self.columns if c.visible]

    def raw_columns_needed(self, output: list[str] | None = None) -> list[str]:
        """Raw columns an engine must read to produce ``output`` (all visible if None).

        Includes columns referenced by row filters and cell rules, and mask inputs such as the
        privacy unit for ``date_shift``. Mask inputs are resolved by the engine via the mask
        registry; this covers predicates.
        """
        wanted = list(output if output is not None else self.visible_names)
        needed = dict.fromkeys(wanted)
        for rf in self.row_filters:
            needed.update(dict.fromkeys(referenced_columns(rf.predicate)))
        for cr in self.cell_rules:
            if cr.column in wanted:
                needed.update(dict.fromkeys(referenced_columns(cr.when)))
        return list(needed)

    def token_domains(self) -> dict[str, tuple[str, ...]]:
        """Token domain → the visible columns whose ``tokenize`` mask (or cell rule) makes tokens
        in it. ``reidentify`` on this dataset accepts tokens of these domains only."""
        found: dict[str, list[str]] = {}
        visible = set(self.visible_names)
        masks = [(c.name, c.mask) for c in self.visible_columns if c.mask is not None]
        masks += [(r.column, r.mask) for r in self.cell_rules if r.column in visible]
        for column, mask in masks:
            domain = mask.kwargs.get("domain") if mask.function == "tokenize" else None
            if isinstance(domain, str) and column not in found.setdefault(domain, []):
                found[domain].append(column)
        return {domain: tuple(columns) for domain, columns in found.items()}

    @property
    def row_filter_sql(self) -> str | None:
        if not self.row_filters:
            return None
        return " AND ".join(f"({rf.predicate})" for rf in self.row_filters)

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "principal": self.principal,
            "purpose": self.purpose,
            "action": self.action,
            "columns": [c.to_dict() for c in self.columns],
            "row_filters": [r.to_dict() for r in self.row_filters],
            "cell_rules": [c.to_dict() for c in self.cell_rules],
            "privacy_unit": self.privacy_unit,
            "key_id": self.key_id,
            "policy_version": self.policy_version,
            "decision": self.decision.to_dict() if self.decision else None,
            # only when set: plans without a result policy keep the hash they always had
            **({"result": self.result.to_dict()} if self.result is not None else {}),
        }

    @property
    def hash(self) -> str:
        """Stable SHA-256 of the canonical JSON form (sorted keys, no whitespace)."""
        if not self._hash:
            canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, "_hash", hashlib.sha256(canonical.encode()).hexdigest())
        return self._hash

    def to_json(self, indent: int | None = 2) -> str:
        body = self.to_dict()
        body["hash"] = self.hash
        return json.dumps(body, indent=indent, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccessPlan:
        """The plan ``to_dict()`` (or ``to_json()``) wrote, typed again: engines outside the
        gateway (Spark executors, pipeline steps) receive plans as JSON. A ``hash`` field, when
        present, must be the plan's own hash — a plan edited on the way is refused (PlanError)."""
        try:
            plan = cls(
                dataset=data["dataset"], principal=data["principal"], purpose=data["purpose"],
                action=data["action"],
                columns=tuple(ColumnPlan(
                    name=c["name"], action=c["action"], reason=_reason(c["reason"]), type=c["type"],
                    mask=_mask(c.get("mask")), level=c.get("level"), tags=tuple(c.get("tags") or ()),
                    result_type=c.get("result_type")) for c in data["columns"]),
                row_filters=tuple(RowFilter(r["predicate"], _reason(r["reason"])) for r in data.get("row_filters") or ()),
                cell_rules=tuple(CellRule(r["column"], r["when"], _mask(r["mask"]) or MaskSpec("null"),
                                          _reason(r["reason"])) for r in data.get("cell_rules") or ()),
                privacy_unit=data.get("privacy_unit"), key_id=data.get("key_id"),
                policy_version=data.get("policy_version"),
                decision=_reason(data["decision"]) if data.get("decision") else None,
                result=ResultPolicy.from_dict(data["result"]) if data.get("result") else None,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise PlanError(f"not an access plan: {type(exc).__name__} {exc}") from None
        if "hash" in data and data["hash"] != plan.hash:
            raise PlanError("the plan's hash does not match its content: it was changed after it was compiled")
        return plan

    @classmethod
    def from_json(cls, text: str) -> AccessPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"not an access plan: invalid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise PlanError("not an access plan: expected a JSON object")
        return cls.from_dict(data)


def _reason(data: dict[str, Any]) -> Reason:
    return Reason(data["code"], data["detail"], data.get("source"))


def _mask(data: dict[str, Any] | None) -> MaskSpec | None:
    return None if data is None else MaskSpec.of(data["function"], data.get("params") or {})


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
