"""PostgreSQL types for the wire server: Arrow → PG type, values → text/binary, parameters ← wire.

One table (:data:`PG_TYPES`) names every PostgreSQL type the server speaks. Result columns map
from Arrow (:func:`pg_type_of`) and are encoded a whole column at a time
(:func:`column_encoder`); parameter values arrive in text or binary format and are decoded by
their declared type OID (:func:`decode_param`). Anything without a mapping travels as ``text``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

from govern.errors import InvalidRequest

__all__ = [
    "PG_TYPES",
    "PgType",
    "column_encoder",
    "decode_param",
    "pg_type_of",
    "split_array_text",
]


@dataclass(frozen=True)
class PgType:
    oid: int
    name: str  # typname
    display: str  # what format_type() prints
    size: int  # typlen (-1: variable)
    category: str  # typcategory
    array: int = 0  # oid of the array type
    element: int = 0  # for array types: oid of the element type


_BASE = [
    PgType(16, "bool", "boolean", 1, "B", 1000),
    PgType(17, "bytea", "bytea", -1, "U", 1001),
    PgType(18, "char", '"char"', 1, "Z", 1002),
    PgType(19, "name", "name", 64, "S", 1003),
    PgType(20, "int8", "bigint", 8, "N", 1016),
    PgType(21, "int2", "smallint", 2, "N", 1005),
    PgType(23, "int4", "integer", 4, "N", 1007),
    PgType(25, "text", "text", -1, "S", 1009),
    PgType(26, "oid", "oid", 4, "N", 1028),
    PgType(114, "json", "json", -1, "U", 199),
    PgType(700, "float4", "real", 4, "N", 1021),
    PgType(701, "float8", "double precision", 8, "N", 1022),
    PgType(705, "unknown", "unknown", -2, "X"),
    PgType(1042, "bpchar", "character", -1, "S", 1014),
    PgType(1043, "varchar", "character varying", -1, "S", 1015),
    PgType(1082, "date", "date", 4, "D", 1182),
    PgType(1083, "time", "time without time zone", 8, "D", 1183),
    PgType(1114, "timestamp", "timestamp without time zone", 8, "D", 1115),
    PgType(1184, "timestamptz", "timestamp with time zone", 8, "D", 1185),
    PgType(1186, "interval", "interval", 16, "T", 1187),
    PgType(1700, "numeric", "numeric", -1, "N", 1231),
    PgType(2950, "uuid", "uuid", 16, "U", 2951),
    PgType(3802, "jsonb", "jsonb", -1, "U", 3807),
]
_ARRAYS = [PgType(t.array, "_" + t.name, t.display + "[]", -1, "A", 0, t.oid) for t in _BASE if t.array]
PG_TYPES: dict[int, PgType] = {t.oid: t for t in (*_BASE, *_ARRAYS)}
TEXT = PG_TYPES[25]

_PG_EPOCH_DAYS = dt.date(2000, 1, 1).toordinal()
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_UTC = dt.UTC


# -- Arrow → PostgreSQL --------------------------------------------------------------------------

def pg_type_of(t: pa.DataType) -> PgType:
    """The PostgreSQL type a column of Arrow type ``t`` is sent as."""
    if pa.types.is_dictionary(t):
        return pg_type_of(t.value_type)
    if pa.types.is_boolean(t):
        return PG_TYPES[16]
    if pa.types.is_int8(t) or pa.types.is_uint8(t) or pa.types.is_int16(t):
        return PG_TYPES[21]
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return PG_TYPES[23]
    if pa.types.is_uint32(t):  # PostgreSQL's unsigned 32-bit type (the catalog's OIDs)
        return PG_TYPES[26]
    if pa.types.is_int64(t):
        return PG_TYPES[20]
    if pa.types.is_uint64(t) or pa.types.is_decimal(t):
        return PG_TYPES[1700]
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return PG_TYPES[700]
    if pa.types.is_float64(t):
        return PG_TYPES[701]
    if pa.types.is_date(t):
        return PG_TYPES[1082]
    if pa.types.is_time(t):
        return PG_TYPES[1083]
    if pa.types.is_timestamp(t):
        return PG_TYPES[1184 if t.tz else 1114]
    if pa.types.is_duration(t) or t == pa.month_day_nano_interval():
        return PG_TYPES[1186]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return PG_TYPES[17]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        element = pg_type_of(t.value_type)
        return PG_TYPES[element.array] if element.array and element.category != "A" else PG_TYPES[114]
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return PG_TYPES[114]
    return TEXT  # strings, nulls, and anything else: text


# -- values → text -------------------------------------------------------------------------------

def _float_text(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


def _float4_text(v: float) -> str:
    if not math.isfinite(v):
        return _float_text(v)
    single = struct.unpack("!f", struct.pack("!f", v))[0]
    for digits in range(6, 10):  # the shortest text that reads back as the same float4
        text = f"{single:.{digits}g}"
        if struct.unpack("!f", struct.pack("!f", float(text)))[0] == single:
            break
    return _float_text(float(text)) if "e" not in text else text


def _decimal_text(v: Decimal) -> str:
    return "NaN" if v.is_nan() else format(v, "f")


def _trim_fraction(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _time_text(v: dt.time) -> str:
    return _trim_fraction(v.replace(tzinfo=None).isoformat())


def _timestamp_text(v: dt.datetime) -> str:
    return f"{v.date().isoformat()} {_time_text(v.time())}"


def _offset_text(offset: dt.timedelta | None) -> str:
    seconds = int((offset or dt.timedelta()).total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}"
    if minutes or secs:
        text += f":{minutes:02d}"
    if secs:
        text += f":{secs:02d}"
    return text


def interval_parts(v: Any) -> tuple[int, int, int]:
    """(months, days, microseconds) of a ``timedelta`` or an Arrow ``MonthDayNano`` value."""
    if isinstance(v, dt.timedelta):
        return 0, 0, _micros(v)
    return int(v.months), int(v.days), int(v.nanoseconds) // 1000


def _interval_text(v: Any) -> str:
    """PostgreSQL's ``postgres`` IntervalStyle: ``1 year 2 mons 3 days 04:05:06.5``."""
    months, days, micros = interval_parts(v)
    if isinstance(v, dt.timedelta):  # a duration: whole days are shown as hours, as DuckDB does
        return _clock_text(micros)
    parts = []
    years, mons = divmod(abs(months), 12)
    sign = "-" if months < 0 else ""
    if years:
        parts.append(f"{sign}{years} year{'s' if years != 1 else ''}")
    if mons:
        parts.append(f"{sign}{mons} mon{'s' if mons != 1 else ''}")
    if days:
        parts.append(f"{days} day{'s' if abs(days) != 1 else ''}")
    if micros or not parts:
        parts.append(_clock_text(micros))
    return " ".join(parts)


def _clock_text(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"
    return text + (f".{fraction:06d}".rstrip("0") if fraction else "")


def _array_text(values: list[Any], element: Callable[[Any], str]) -> str:
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
            continue
        text = element(v)
        if text == "" or any(ch in text for ch in '{},"\\ ') or text.upper() == "NULL":
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(text)
    return "{" + ",".join(parts) + "}"


def _json_text(v: Any) -> str:
    def plain(x: Any) -> Any:
        if isinstance(x, bytes):
            return "\\x" + x.hex()
        if isinstance(x, (dt.date, dt.time, dt.datetime, Decimal, dt.timedelta)):
            return str(x)
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, list) and x and isinstance(x[0], tuple):  # an Arrow map: key/value pairs
            return {str(k): plain(val) for k, val in x}
        if isinstance(x, dict):
            return {str(k): plain(val) for k, val in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(i) for i in x]
        return x

    return json.dumps(plain(v), ensure_ascii=False, separators=(",", ":"))


def _text_formatter(t: pa.DataType, pg: PgType, tz: dt.tzinfo) -> Callable[[Any], str]:
    if pa.types.is_dictionary(t):
        return _text_formatter(t.value_type, pg, tz)
    oid = pg.oid
    if oid == 16:
        return lambda v: "t" if v else "f"
    if oid in (20, 21, 23, 26):
        return str
    if oid == 700:
        return _float4_text
    if oid == 701:
        return _float_text
    if oid == 1700:
        return lambda v: _decimal_text(v) if isinstance(v, Decimal) else str(v)
    if oid == 1082:
        return lambda v: v.isoformat()
    if oid == 1083:
        return _time_text
    if oid == 1114:
        return _timestamp_text
    if oid == 1184:
        return lambda v: _timestamp_text(v.astimezone(tz)) + _offset_text(v.astimezone(tz).utcoffset())
    if oid == 1186:
        return _interval_text
    if oid == 17:
        return lambda v: "\\x" + bytes(v).hex()
    if pg.category == "A":
        element = _text_formatter(t.value_type, PG_TYPES[pg.element], tz)
        return lambda v: _array_text(v, element)
    if oid == 114:
        return _json_text
    return lambda v: v if isinstance(v, str) else str(v)


# -- values → binary -----------------------------------------------------------------------------

def numeric_binary(v: Decimal) -> bytes:
    """PostgreSQL's binary ``numeric``: base-10000 digits with a weight, sign and scale."""
    if v.is_nan():
        return struct.pack("!HhHH", 0, 0, 0xC000, 0)
    sign, digits, exponent = v.as_tuple()
    assert isinstance(exponent, int)
    dscale = max(0, -exponent)
    text = "".join(map(str, digits))
    if exponent < 0:
        text = text.zfill(-exponent)  # 0.0001: the fraction keeps its leading zeros
    integer = text[: len(text) + exponent] if exponent < 0 else text + "0" * exponent
    fraction = text[len(text) + exponent:] if exponent < 0 else ""
    integer = integer.lstrip("0")
    integer = "0" * (-len(integer) % 4) + integer
    fraction = fraction + "0" * (-len(fraction) % 4)
    groups = [int(integer[i:i + 4]) for i in range(0, len(integer), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i:i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:  # leading zero groups move the weight
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!HhHH{len(groups)}H", len(groups), weight, 0x4000 if sign else 0, dscale, *groups)


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _binary_formatter(pg: PgType) -> Callable[[Any], bytes] | None:
    oid = pg.oid
    simple: dict[int, Callable[[Any], bytes]] = {
        16: lambda v: b"\x01" if v else b"\x00",
        21: lambda v: struct.pack("!h", v),
        23: lambda v: struct.pack("!i", v),
        20: lambda v: struct.pack("!q", v),
        26: lambda v: struct.pack("!I", v),
        700: lambda v: struct.pack("!f", v),
        701: lambda v: struct.pack("!d", v),
        17: lambda v: bytes(v),
        1082: lambda v: struct.pack("!i", v.toordinal() - _PG_EPOCH_DAYS),
        1083: lambda v: struct.pack("!q", ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000
                                    + v.microsecond),
        1114: lambda v: struct.pack("!q", _micros(v.replace(tzinfo=None) - _PG_EPOCH)),
        1184: lambda v: struct.pack("!q", _micros(v - _PG_EPOCH_TZ)),
        1186: lambda v: struct.pack("!qii", interval_parts(v)[2], interval_parts(v)[1], interval_parts(v)[0]),
        1700: lambda v: numeric_binary(v if isinstance(v, Decimal) else Decimal(v)),
        2950: lambda v: uuid.UUID(str(v)).bytes,
    }
    if oid in simple:
        return simple[oid]
    if pg.category == "A" and pg.element in PG_TYPES:
        element_type = PG_TYPES[pg.element]
        element = _binary_formatter(element_type) or _text_bytes(element_type)
        return lambda v: array_binary(v, element_type.oid, element)
    if oid in (25, 1043, 19, 114, 705, 1042, 18):
        return _text_bytes(pg)  # text types: the binary form is the text form
    return None


def _text_bytes(pg: PgType) -> Callable[[Any], bytes]:
    text = _text_formatter(pa.string(), pg, _UTC) if pg.category != "A" else str
    return lambda v: text(v).encode("utf-8")


def array_binary(values: list[Any], element_oid: int, element: Callable[[Any], bytes]) -> bytes:
    """PostgreSQL's binary one-dimensional array (lower bound 1; an empty array has 0 dimensions)."""
    if not values:
        return struct.pack("!iiI", 0, 0, element_oid)
    has_null = any(v is None for v in values)
    out = [struct.pack("!iiIii", 1, 1 if has_null else 0, element_oid, len(values), 1)]
    for v in values:
        if v is None:
            out.append(b"\xff\xff\xff\xff")
        else:
            data = element(v)
            out.append(struct.pack("!i", len(data)) + data)
    return b"".join(out)


def column_encoder(t: pa.DataType, binary: bool, tz: dt.tzinfo = _UTC) -> Callable[[pa.Array], list[bytes | None]]:
    """A function turning one Arrow column into wire values (None for NULL)."""
    pg = pg_type_of(t)
    fmt: Callable[[Any], bytes]
    raw = _binary_formatter(pg) if binary else None
    if binary and raw is None:
        raise InvalidRequest(f"binary format is not supported for {pg.display}; ask for text")
    if raw is not None:
        fmt = raw
    else:
        text = _text_formatter(t, pg, tz)

        def fmt(v: Any) -> bytes:
            return text(v).encode("utf-8")

    def encode(column: pa.Array | pa.ChunkedArray) -> list[bytes | None]:
        return [None if v is None else fmt(v) for v in column.to_pylist()]

    return encode


# -- wire → parameter values ---------------------------------------------------------------------

def _parse_timestamp(text: str) -> dt.datetime:
    text = text.strip().replace("T", " ")
    if text.endswith(("+00", "-00")) or (len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit()):
        text += ":00"  # PostgreSQL writes offsets as +HH
    return dt.datetime.fromisoformat(text)


def _decode_numeric_binary(data: bytes) -> Decimal:
    ndigits, weight, sign, dscale = struct.unpack("!HhHH", data[:8])
    if sign == 0xC000:
        return Decimal("NaN")
    digits = struct.unpack(f"!{ndigits}H", data[8:8 + 2 * ndigits])
    value = Decimal(0)
    for i, d in enumerate(digits):
        value += Decimal(d) * (Decimal(10000) ** (weight - i))
    value = -value if sign == 0x4000 else value
    return value.quantize(Decimal(1).scaleb(-dscale)) if dscale else value.quantize(Decimal(1))


_TEXT_PARAMS: dict[int, Callable[[str], Any]] = {
    16: lambda s: s.strip().lower() in ("t", "true", "1", "yes", "on", "y"),
    20: int, 21: int, 23: int, 26: int,
    700: float, 701: float,
    1700: Decimal,
    1082: lambda s: dt.date.fromisoformat(s.strip().split()[0]),  # pgjdbc's setDate sends '2020-01-01 +00'
    1083: lambda s: dt.time.fromisoformat(s.strip()),
    1114: lambda s: _parse_timestamp(s).replace(tzinfo=None),
    1184: _parse_timestamp,
    17: lambda s: bytes.fromhex(s[2:]) if s.startswith("\\x") else s.encode("utf-8"),
}

_BINARY_PARAMS: dict[int, Callable[[bytes], Any]] = {
    16: lambda b: b != b"\x00",
    21: lambda b: struct.unpack("!h", b)[0],
    23: lambda b: struct.unpack("!i", b)[0],
    20: lambda b: struct.unpack("!q", b)[0],
    26: lambda b: struct.unpack("!I", b)[0],
    700: lambda b: struct.unpack("!f", b)[0],
    701: lambda b: struct.unpack("!d", b)[0],
    1700: _decode_numeric_binary,
    17: bytes,
    1082: lambda b: dt.date.fromordinal(struct.unpack("!i", b)[0] + _PG_EPOCH_DAYS),
    1083: lambda b: (dt.datetime.min + dt.timedelta(microseconds=struct.unpack("!q", b)[0])).time(),
    1114: lambda b: _PG_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0]),
    1184: lambda b: _PG_EPOCH_TZ + dt.timedelta(microseconds=struct.unpack("!q", b)[0]),
    2950: lambda b: str(uuid.UUID(bytes=b)),
}


def _decode_interval_binary(data: bytes) -> Any:
    micros, days, months = struct.unpack("!qii", data)
    if months == 0:
        return dt.timedelta(days=days, microseconds=micros)
    return pa.scalar((months, days, micros * 1000), pa.month_day_nano_interval()).as_py()


def _decode_array_binary(data: bytes, index: int) -> list[Any]:
    ndim, _flags, element = struct.unpack("!iiI", data[:12])
    if ndim == 0:
        return []
    if ndim != 1:
        raise InvalidRequest(f"parameter ${index}: only one-dimensional arrays are supported")
    count, _lower = struct.unpack("!ii", data[12:20])
    pos, out = 20, list[Any]()
    for _ in range(count):
        (length,) = struct.unpack("!i", data[pos:pos + 4])
        pos += 4
        if length < 0:
            out.append(None)
            continue
        out.append(decode_param(element, True, data[pos:pos + length], index))
        pos += length
    return out


def split_array_text(text: str) -> list[str | None]:
    """The elements of a one-dimensional array literal ``{a,"b c",NULL}``."""
    body = text.strip()
    if body.startswith("[") and "=" in body:  # explicit bounds: [1:3]={…}
        body = body.split("=", 1)[1].strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("not an array")
    body = body[1:-1]
    out: list[str | None] = []
    if not body.strip():
        return out
    i, current, quoted, was_quoted = 0, list[str](), False, False
    while i < len(body):
        ch = body[i]
        if quoted:
            if ch == "\\" and i + 1 < len(body):
                i += 1
                current.append(body[i])
            elif ch == '"':
                quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            quoted = was_quoted = True
        elif ch == "{":
            raise ValueError("nested arrays")
        elif ch == ",":
            word = "".join(current).strip() if not was_quoted else "".join(current)
            out.append(None if not was_quoted and word.upper() == "NULL" else word)
            current, was_quoted = [], False
        else:
            current.append(ch)
        i += 1
    word = "".join(current).strip() if not was_quoted else "".join(current)
    out.append(None if not was_quoted and word.upper() == "NULL" else word)
    return out


def decode_param(oid: int, binary: bool, data: bytes | None, index: int) -> Any:
    """The Python value of parameter ``$index`` sent with type ``oid`` (0: unspecified)."""
    if data is None:
        return None
    pg = PG_TYPES.get(oid)
    try:
        if binary:
            if oid in _BINARY_PARAMS:
                return _BINARY_PARAMS[oid](data)
            if oid == 1186:
                return _decode_interval_binary(data)
            if pg is not None and pg.category == "A":
                return _decode_array_binary(data, index)
            if oid in (0, 18, 19, 25, 114, 705, 1042, 1043, 3802):
                return data.decode("utf-8").removeprefix("\x01" if oid == 3802 else "")
            raise InvalidRequest(f"parameter ${index}: binary values of type "
                                 f"{PG_TYPES[oid].display if oid in PG_TYPES else oid} are not supported")
        text = data.decode("utf-8")
        if pg is not None and pg.category == "A":
            element = pg.element
            return [None if e is None else decode_param(element, False, e.encode("utf-8"), index)
                    for e in split_array_text(text)]
        return _TEXT_PARAMS[oid](text) if oid in _TEXT_PARAMS else text
    except InvalidRequest:
        raise
    except (ValueError, ArithmeticError, struct.error, UnicodeDecodeError):
        raise InvalidRequest(f"parameter ${index}: invalid value for type "
                             f"{PG_TYPES[oid].display if oid in PG_TYPES else oid}") from None


def time_zone(name: str) -> dt.tzinfo:
    """The session ``TimeZone`` (``UTC``, an IANA name, or a fixed offset like ``+02``)."""
    text = name.strip().strip("'\"")
    if text.upper() in ("UTC", "GMT", "Z", "ZULU", "ETC/UTC"):
        return _UTC
    try:
        return ZoneInfo(text)
    except (ValueError, KeyError, OSError):
        pass
    try:
        hours = float(text)
    except ValueError:
        raise InvalidRequest(f'invalid value for parameter "TimeZone": "{text}"') from None
    return dt.timezone(dt.timedelta(hours=hours))
