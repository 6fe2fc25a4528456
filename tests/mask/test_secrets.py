"""Key material never shows: not in any mask's output, SQL text, parameters' names, repr or
error message. Only the bound parameters carry (derived) key material, by design."""

from __future__ import annotations

import base64

import pyarrow as pa
import pytest

from govern.errors import MaskError
from govern.mask import registry
from govern.mask.function import MaskContext, SqlContext
from govern.mask.keys import KeyRing
from tests.mask.engines import connect, run_arrow, run_sql
from tests.mask.samples import PARAMS, SAMPLES

MASTER = b"M" * 16 + bytes(range(200, 216))
KEYS = KeyRing({"k1": MASTER}, "k1")
PURPOSES = ["hash", "noise", "date_shift", "rr", "tokenize-mac/t.x", "tokenize-enc"]


def forbidden() -> list[str]:
    secrets = [MASTER] + [KEYS.subkey(p) for p in PURPOSES]
    padded = [bytes(b ^ c for b in s.ljust(64, b"\0")) for s in secrets[1:] for c in (0x36, 0x5C)]
    out: list[str] = []
    for s in secrets + padded:
        out += [s.hex(), s.hex()[:16], base64.b64encode(s).decode()[:16], repr(s)[2:20]]
    return out


def assert_clean(text: str) -> None:
    for needle in forbidden():
        assert needle not in text


@pytest.mark.parametrize("mask", sorted(PARAMS))
def test_outputs_sql_and_reprs_carry_no_key(mask: str) -> None:
    con = connect(KEYS)
    for type_name, column in SAMPLES.items():
        fn = registry.get(mask)
        try:
            fn.check_type(column.type, PARAMS[mask])
        except MaskError as exc:
            assert_clean(str(exc))
            continue
        table = pa.table({"x": column, "u": pa.array(["p"] * len(column))})
        arrow = run_arrow(mask, PARAMS[mask], table, KEYS)
        assert_clean(str(arrow.array.to_pylist()) + str(arrow.error))
        ctx = SqlContext(keys=KEYS, privacy_unit="u")
        sql = fn.sql('"x"', PARAMS[mask], ctx)
        assert_clean(sql + repr(ctx) + repr(MaskContext(keys=KEYS)) + " ".join(ctx.parameters))
        if type_name != "float16":
            result = run_sql(con, mask, PARAMS[mask], table, KEYS)
            assert_clean(str(result.array.to_pylist() if result.array is not None else "") + str(result.error))


def test_keyring_text_forms() -> None:
    for text in (repr(KEYS), str(KEYS), f"{KEYS!r}"):
        assert_clean(text)
    with pytest.raises(TypeError):
        __import__("pickle").dumps(KEYS)
