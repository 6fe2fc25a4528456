"""What happens to each column of a dataset when it is synthesized: learned, generated, or left out.

Pure: catalog entry + physical schema + tag hierarchy → one :class:`ColumnRole` per column.

- **generate**: direct identifiers (a tag in :data:`DIRECT_IDENTIFIER_TAGS`, or a tag below one
  of them in the ``g2`` hierarchy) and the columns the steward lists under ``generate:``. Their
  real values never reach SDV: each value is drawn from a pool of fake values (Faker, the
  generator behind SDV's PII anonymization, secret seed) made without looking at the real values;
  integer identifiers from a secret random window (see ``identifiers``).
- **model**: every other catalogued column of a supported type, learned by the synthesizer.
  Dates and timestamps are learned as numbers (days / time units since the epoch): SDV's
  datetime path parses every value with pandas (about 0.3 ms per value) and collapses
  non-nanosecond ``datetime64`` columns to 1970.
- **exclude**: unclassified columns (the plan withholds them anyway) and types SDV cannot learn
  (binary, nested). They come out as nulls, so the output keeps the dataset's schema.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from govern.policy.model import PolicySet
from govern.privacy.synthetic.spec import SynthesizerSpec

__all__ = [
    "DIRECT_IDENTIFIER_TAGS",
    "FAKER_SDTYPES",
    "RECIPE",
    "ColumnRole",
    "column_roles",
    "config_hash",
    "tag_parents_of",
]

# Tags whose columns are direct identifiers: never learned, always generated.
DIRECT_IDENTIFIER_TAGS: frozenset[str] = frozenset({"identifier", "direct_identifier", "pii", "contact", "ssn"})

# Column names that name a Faker function; any other text identifier gets sdtype "id".
FAKER_SDTYPES: frozenset[str] = frozenset({
    "name", "first_name", "last_name", "email", "ssn", "phone_number", "address",
    "street_address", "city", "postcode", "zipcode", "country", "company", "iban",
    "credit_card_number", "ipv4", "ipv6", "user_name", "url", "license_plate", "job",
})

Role = Literal["model", "generate", "exclude"]


@dataclass(frozen=True)
class ColumnRole:
    name: str
    role: Role
    arrow_type: str
    kind: str | None = None  # model: numerical|integer|categorical|boolean|date|timestamp; generate: sdtype
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.name, "role": self.role, "type": self.arrow_type, "kind": self.kind,
                "reason": self.reason}


def column_roles(entry: Any, schema: pa.Schema, spec: SynthesizerSpec,
                 tag_parents: dict[str, set[str]]) -> tuple[ColumnRole, ...]:
    """One role per field of ``schema`` (in order). ``entry`` is the catalog's DatasetEntry;
    ``tag_parents`` maps a tag to its parent tags (``g2, tag:child, tag:parent``)."""
    generate = spec.generated
    out = []
    for f in schema:
        col = entry.columns.get(f.name)
        t = str(f.type)
        if col is None:
            out.append(ColumnRole(f.name, "exclude", t, None, "not in the catalog (unclassified)"))
            continue
        identifying = sorted(tag for tag in col.tags if _ancestors(tag, tag_parents) & DIRECT_IDENTIFIER_TAGS)
        if f.name in generate or identifying:
            # Integers are generated as integers whatever the sdtype says (Faker makes text).
            sdtype = "id" if pa.types.is_integer(f.type) else (generate.get(f.name) or _default_sdtype(f))
            why = (f"direct identifier (tag '{identifying[0]}')" if identifying
                   else "listed under synthesizer.generate")
            if _generated_kind(f.type) is None:
                out.append(ColumnRole(f.name, "exclude", t, None, f"{why}, of a type that cannot be generated"))
            else:
                out.append(ColumnRole(f.name, "generate", t, sdtype, why))
            continue
        kind = _model_kind(f.type)
        if kind is None:
            out.append(ColumnRole(f.name, "exclude", t, None, f"type {t} cannot be learned"))
        else:
            out.append(ColumnRole(f.name, "model", t, kind, "learned by the synthesizer"))
    return tuple(out)


def tag_parents_of(policy: PolicySet) -> dict[str, set[str]]:
    """Tag → parent tags from the policy's ``g2`` links (``g2, tag:ssn, tag:pii``)."""
    parents: dict[str, set[str]] = {}
    for rule in policy.grouping("g2"):
        child, parent = rule.fields[0], rule.fields[1]
        if child.startswith("tag:") and parent.startswith("tag:"):
            parents.setdefault(child[4:], set()).add(parent[4:])
    return parents


def config_hash(dataset: str, roles: tuple[ColumnRole, ...], spec: SynthesizerSpec) -> str:
    """What a model depends on besides the data: roles, synthesizer, govern's recipe version."""
    body = {"recipe": RECIPE, "dataset": dataset, "roles": [r.to_dict() for r in roles], "spec": spec.to_dict()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


RECIPE = "govern-synthetic/1"  # bump when fitting changes in a way that invalidates stored models


def _ancestors(tag: str, parents: dict[str, set[str]]) -> set[str]:
    seen = {tag}
    todo = [tag]
    while todo:
        for p in parents.get(todo.pop(), ()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def _default_sdtype(f: pa.Field) -> str:
    name = f.name.lower()
    return name if name in FAKER_SDTYPES else "id"


def _generated_kind(t: pa.DataType) -> str | None:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return "text"
    return None


def _model_kind(t: pa.DataType) -> str | None:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numerical"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "categorical"
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return "categorical"
    return None
