"""Masks that keep part of a string: ``email_domain`` (8), ``show_first``/``show_last`` (9),
``regex_replace`` (10).

Lengths count Unicode code points in both engines (Arrow ``utf8_*`` kernels, DuckDB
``left``/``right``/``length``). Regular expressions are RE2 in both engines: Arrow's
``replace_substring_regex`` and DuckDB's ``regexp_replace(…, 'g')`` share syntax, ``\\1``
group references and global-replace semantics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from govern.mask import function
from govern.mask.function import MaskContext, MaskFunction, SqlContext
from govern.mask.functions._common import canonical_text, check_int, check_keys, str_lit

_TEXT = frozenset({function.STRING, function.INTEGER})


# -- show_first / show_last -------------------------------------------------------------------
def _show_params(params: Mapping[str, Any]) -> tuple[int, str]:
    return params.get("n", 4), params.get("mask_char", "*")


def _show_arrow(last: bool):  # type: ignore[no-untyped-def]
    def arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
        n, mask_char = _show_params(params)
        text = canonical_text(values).cast(pa.string())
        hidden = pc.max_element_wise(pc.subtract(pc.utf8_length(text), n), 0)
        pad = pc.binary_repeat(pa.scalar(mask_char), hidden)
        if n == 0:
            return pc.if_else(pc.is_valid(text), pad, pa.scalar(None, pa.string()))
        kept = pc.utf8_slice_codeunits(text, -n) if last else pc.utf8_slice_codeunits(text, 0, n)
        return pc.binary_join_element_wise(*((pad, kept) if last else (kept, pad)), "")

    return arrow


def _show_sql(last: bool):  # type: ignore[no-untyped-def]
    def sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
        n, mask_char = _show_params(params)
        text = f"CAST({expr} AS VARCHAR)"
        pad = f"repeat({str_lit(mask_char)}, greatest(length({text}) - {n}, 0))"
        return f"({pad} || right({text}, {n}))" if last else f"(left({text}, {n}) || {pad})"

    return sql


def _show_validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"n", "mask_char"}, problems)
    check_int(params, "n", problems, required=False)
    mc = params.get("mask_char", "*")
    if not isinstance(mc, str) or len(mc) != 1:
        problems.append("mask_char must be exactly one character")
    return problems


def _show(name: str, last: bool) -> MaskFunction:
    side = "last" if last else "first"
    return MaskFunction(
        name=name, rank=9, accepts=_TEXT,
        arrow=_show_arrow(last), sql=_show_sql(last), validate=_show_validate,
        result_type=lambda t, params: pa.string(),
        strictness=lambda params: (_show_params(params)[0],),
        doc=f"Keep the {side} n characters (default 4), replace the others with mask_char, "
            "preserving length. Integers are masked as their decimal text.",
    )


SHOW_FIRST = _show("show_first", last=False)
SHOW_LAST = _show("show_last", last=True)


# -- email_domain -------------------------------------------------------------------------------
def _email_arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    """One split at the last '@' instead of the SQL form's regex (about 5x faster, same bytes).

    ``split_pattern(reverse=True, max_splits=1)`` yields ``[local, domain]`` for a value with
    an '@' and ``[value]`` for one without, so the domain is each list's last element, read by
    offset (``list_element(…, 1)`` would raise on the one-element lists).
    """
    text = canonical_text(values).cast(pa.string())
    parts = pc.split_pattern(text, "@", max_splits=1, reverse=True)
    has_at = pc.equal(pc.list_value_length(parts), 2)  # null for a null value
    if len(parts.values) == 0:  # no value at all (every row null, or no rows)
        return pc.if_else(has_at, pa.scalar(None, pa.string()), pa.scalar("*"))
    last = pc.max_element_wise(pc.subtract(parts.offsets[1:], 1), 0)  # a null row's index is unused
    domain = pc.binary_join_element_wise("*@", parts.values.take(last), "")
    return pc.if_else(has_at, domain, pa.scalar("*"))


def _email_sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    return (f"(CASE WHEN {expr} IS NULL THEN NULL WHEN contains({expr}, '@') "
            f"THEN regexp_replace({expr}, '(?s)^.*@', '*@') ELSE '*' END)")


def _no_params(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, set(), problems)
    return problems


EMAIL_DOMAIN = MaskFunction(
    name="email_domain", rank=8, accepts=frozenset({function.STRING}),
    arrow=_email_arrow, sql=_email_sql, validate=_no_params,
    result_type=lambda t, params: pa.string(),
    doc="'*@' + the part after the last '@'; '*' when there is no '@'.",
)


# -- regex_replace ------------------------------------------------------------------------------
def _regex_arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    text = canonical_text(values).cast(pa.string())
    return pc.replace_substring_regex(text, params["pattern"], params.get("replacement", ""))


def _regex_sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    pattern, replacement = str_lit(params["pattern"]), str_lit(params.get("replacement", ""))
    return f"regexp_replace({expr}, {pattern}, {replacement}, 'g')"


def _regex_validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, {"pattern", "replacement"}, problems)
    pattern, replacement = params.get("pattern"), params.get("replacement", "")
    if not isinstance(pattern, str) or not pattern:
        problems.append("pattern must be a non-empty string")
    elif not isinstance(replacement, str):
        problems.append("replacement must be a string")
    else:
        try:  # compiles pattern and checks \N references in the replacement (RE2)
            pc.replace_substring_regex(pa.array([""]), pattern, replacement)
        except pa.ArrowInvalid as exc:
            problems.append(f"invalid regular expression: {exc}")
    return problems


REGEX_REPLACE = MaskFunction(
    name="regex_replace", rank=10, accepts=frozenset({function.STRING}),
    arrow=_regex_arrow, sql=_regex_sql, validate=_regex_validate,
    result_type=lambda t, params: pa.string(),
    doc="RE2 global replace of `pattern` by `replacement` (\\1 refers to a group).",
)
