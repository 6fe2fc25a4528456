"""What a mask function is: its two forms, the types it accepts, and how restrictive it is.

Every mask function has two forms that must agree bit for bit:

* ``arrow(values, params, ctx) -> pa.Array`` — vectorized Arrow → Arrow (no per-row Python);
* ``sql(expr, params, ctx) -> str`` — a DuckDB SQL expression over the raw column expression.

Null in gives null out for every function except ``null`` (which always gives null). A mask
declares which Arrow types it accepts; ``check_type`` makes the (mask × type) matrix total:
any pair not implemented raises :class:`~govern.errors.MaskError` instead of passing silently.

Restrictiveness is a total order so that a column with several tags gets exactly one mask:
``strictness(params)`` returns a sortable key; smaller is more restrictive.

The functions themselves live in :mod:`govern.mask.functions`; :mod:`govern.mask.registry`
lists them once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from govern.errors import MaskError
from govern.mask.keys import KeyRing

# Families of Arrow types, used by masks to declare what they accept.
STRING = "string"
INTEGER = "integer"
FLOAT = "float"
DECIMAL = "decimal"
DATE = "date"
TIMESTAMP = "timestamp"
BOOLEAN = "boolean"
BINARY = "binary"
ANY = "any"

FAMILIES = (STRING, INTEGER, FLOAT, DECIMAL, DATE, TIMESTAMP, BOOLEAN, BINARY)


def type_family(t: pa.DataType) -> str | None:
    """The family of an Arrow type, or None for types no mask handles (lists, structs...)."""
    if pa.types.is_dictionary(t):
        return type_family(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return STRING
    if pa.types.is_integer(t):
        return INTEGER
    if pa.types.is_floating(t):
        return FLOAT
    if pa.types.is_decimal(t):
        return DECIMAL
    if pa.types.is_date(t):
        return DATE
    if pa.types.is_timestamp(t):
        return TIMESTAMP
    if pa.types.is_boolean(t):
        return BOOLEAN
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return BINARY
    return None


@dataclass
class MaskContext:
    """What a mask may need besides its column: keys and other raw columns of the batch.

    ``inputs`` maps raw column names (e.g. the privacy unit for ``date_shift``) to arrays of the
    same length as the masked column. ``keys`` derives per-purpose subkeys; it never exposes
    the master key.
    """

    keys: KeyRing
    inputs: Mapping[str, pa.Array] = field(default_factory=dict)
    privacy_unit: str | None = None
    threads: int = 1  # native kernels may split work across this many threads
    # Per-batch results several masks of one batch share (the privacy unit's canonical text);
    # the executor passes one dict per batch. Keyed by what was computed and from which column.
    cache: dict[Any, Any] = field(default_factory=dict)


@dataclass
class SqlContext:
    """Builds DuckDB SQL for masks. Secrets are never spliced into SQL text: ``bind`` returns
    a named parameter (``$gk_3``) and records its value for the engine to pass at execution.
    """

    keys: KeyRing
    privacy_unit: str | None = None
    quote: Callable[[str], str] = lambda name: '"' + name.replace('"', '""') + '"'
    parameters: dict[str, Any] = field(default_factory=dict, repr=False)  # key material

    def bind(self, value: Any) -> str:
        for name, existing in self.parameters.items():
            if type(existing) is type(value) and existing == value:
                return "$" + name
        name = f"gk_{len(self.parameters)}"
        self.parameters[name] = value
        return "$" + name

    def column(self, name: str) -> str:
        return self.quote(name)


@dataclass(frozen=True)
class MaskFunction:
    name: str
    rank: int  # 0 = most restrictive
    accepts: frozenset[str]
    arrow: Callable[[pa.Array, Mapping[str, Any], MaskContext], pa.Array]
    sql: Callable[[str, Mapping[str, Any], SqlContext], str]
    validate: Callable[[Mapping[str, Any]], list[str]]
    result_type: Callable[[pa.DataType, Mapping[str, Any]], pa.DataType]
    strictness: Callable[[Mapping[str, Any]], tuple[Any, ...]] = lambda params: ()
    inputs: Callable[[Mapping[str, Any], str | None], list[str]] = lambda params, unit: []
    # extra per-type applicability check beyond the family (e.g. generalize needs a param)
    applies: Callable[[pa.DataType, Mapping[str, Any]], str | None] = lambda t, params: None
    # parameters that default per column, given "DATASET.COLUMN" (tokenize's domain); the plan
    # compiler fills them in, so the plan says exactly what every engine computes
    column_defaults: Callable[[Mapping[str, Any], str], Mapping[str, Any]] = lambda params, column: params
    doc: str = ""

    def check_type(self, t: pa.DataType, params: Mapping[str, Any]) -> None:
        """Raise MaskError unless this mask is implemented for ``t`` with ``params``."""
        fam = type_family(t)
        if fam is None or (ANY not in self.accepts and fam not in self.accepts):
            raise MaskError(f"mask '{self.name}' does not apply to type {t}")
        problem = self.applies(t, params)
        if problem:
            raise MaskError(f"mask '{self.name}' does not apply to type {t}: {problem}")

    def order_key(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return (self.rank, *self.strictness(params))
