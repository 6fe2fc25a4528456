"""``hash`` (rank 2): a keyed pseudonym ``"{key_id}:" + 32 hex chars of HMAC-SHA-256``.

Stable for one key (joins and group-bys keep working), unlinkable across keys, and the key id
says which key made it, so rotation never silently mixes pseudonyms. 128 bits are kept: enough
to make collisions negligible, short enough to read. The HMAC key is ``subkey("hash")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from govern.mask import function
from govern.mask.function import MaskContext, MaskFunction, SqlContext
from govern.mask.functions._common import (
    canonical_text,
    check_keys,
    hex_sql,
    hmac_hex,
    str_lit,
    threads,
)


def _arrow(values: pa.Array, params: Mapping[str, Any], ctx: MaskContext) -> pa.Array:
    keys = ctx.keys
    return hmac_hex(canonical_text(values), keys.subkey("hash"), f"{keys.active}:", threads(ctx))


def _sql(expr: str, params: Mapping[str, Any], ctx: SqlContext) -> str:
    digest = hex_sql(f"CAST({expr} AS VARCHAR)", "hash", ctx)
    return f"({str_lit(ctx.keys.active + ':')} || substr({digest}, 1, 32))"


def _validate(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    check_keys(params, set(), problems)
    return problems


HASH = MaskFunction(
    name="hash", rank=2, accepts=frozenset({function.STRING, function.INTEGER, function.DATE}),
    arrow=_arrow, sql=_sql, validate=_validate,
    result_type=lambda t, params: pa.string(),
    doc="Keyed pseudonym: key id + first 32 hex chars of HMAC-SHA-256 of the value's text.",
)
