"""One small sample column per Arrow type, and one valid parameter set per mask."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa

SAMPLES: dict[str, pa.Array] = {
    "string": pa.array(["alice@example.com", "", None, "Zoë 😀", "a@b@c"]),
    "large_string": pa.array(["x@y.org", None, "ß"], pa.large_string()),
    "dictionary": pa.array(["EU", "US", None, "EU"]).dictionary_encode(),
    "int8": pa.array([1, -7, None, 100], pa.int8()),
    "int64": pa.array([123, -45, None, 0]),
    "uint32": pa.array([5, None, 4_000_000_000], pa.uint32()),
    "float32": pa.array([1.5, None, -2.25], pa.float32()),
    "float64": pa.array([1.5, None, -1e-7, 1e16]),
    "float16": pa.array([1.0, None], pa.float32()).cast(pa.float16()),
    "decimal": pa.array([decimal.Decimal("12.34"), None, decimal.Decimal("-0.50")], pa.decimal128(10, 2)),
    "decimal38": pa.array([decimal.Decimal("1.5"), None], pa.decimal128(38, 1)),
    "date32": pa.array([dt.date(2020, 5, 17), None, dt.date(1, 1, 1)]),
    "date64": pa.array([dt.date(2020, 5, 17), None]).cast(pa.date64()),
    "timestamp": pa.array([dt.datetime(2020, 5, 17, 13, 45), None]),
    "timestamp_tz": pa.array([dt.datetime(2020, 12, 31, 23, 30), None], pa.timestamp("us", "UTC")),
    "timestamp_ns": pa.array([10**18, None, -1], pa.timestamp("ns")),
    "boolean": pa.array([True, None, False]),
    "binary": pa.array([b"\x00\x01", None, b""]),
    "list": pa.array([[1, 2], None]),
    "struct": pa.array([{"a": 1}, None]),
}

PARAMS: dict[str, dict] = {
    "null": {},
    "redact": {"value": "[hidden]"},
    "hash": {},
    "tokenize": {"domain": "t.x"},
    "generalize": {"date": "year", "bucket": 10, "prefix": 2},
    "randomized_response": {"p": 0.5, "categories": ["A", "B"]},
    "noise": {"scale": 5},
    "date_shift": {"max_days": 30},
    "email_domain": {},
    "show_first": {"n": 2},
    "show_last": {"n": 2, "mask_char": "#"},
    "regex_replace": {"pattern": r"(\w)@", "replacement": r"\1 at "},
}
