"""Masks that need no key: ``null`` (rank 0) and ``redact`` (rank 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from govern.mask import function
from govern.mask.function import MaskContext, MaskFunction, SqlContext
from govern.mask.functions._common import check_keys, plain, str_lit


def _null_arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    return pa.nulls(len(values), values.type)


def _null_sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    return f"cast_to_type(NULL, {expr})"  # NULL of the column's own type


def _null_validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, set(), problems)
    return problems


def _redact_value(params: Mapping[str, Any]) -> str:
    return params.get("value", "REDACTED")


def _redact_arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    return pc.if_else(pc.is_valid(plain(values)), pa.scalar(_redact_value(params)), pa.scalar(None, pa.string()))


def _redact_sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    return f"(CASE WHEN {expr} IS NULL THEN NULL ELSE {str_lit(_redact_value(params))} END)"


def _redact_validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"value"}, problems)
    if not isinstance(params.get("value", ""), str):
        problems.append("value must be a string")
    return problems


NULL = MaskFunction(
    name="null", rank=0, accepts=frozenset({function.ANY}),
    arrow=_null_arrow, sql=_null_sql, validate=_null_validate,
    result_type=lambda t, params: t,
    doc="Every value becomes null; the column keeps its type.",
)

REDACT = MaskFunction(
    name="redact", rank=1, accepts=frozenset({function.ANY}),
    arrow=_redact_arrow, sql=_redact_sql, validate=_redact_validate,
    result_type=lambda t, params: pa.string(),
    doc="Every non-null value becomes the constant `value` (default 'REDACTED'); nulls stay null.",
)
