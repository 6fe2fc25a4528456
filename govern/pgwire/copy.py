"""``COPY (query) TO STDOUT`` in text, csv and binary: how psql's ``\\copy (select …) to`` and
ADBC's PostgreSQL driver (``COPY (…) TO STDOUT (FORMAT binary)`` → Arrow) read results.

Only the query form is accepted, and only to the client (``STDOUT``): the query runs through
the same audited, masked path as any other statement (one audit record), and the rows are sent
as ``CopyData`` messages after a ``CopyOutResponse``. ``COPY table TO``, ``COPY … FROM`` and
server-side files are refused (govern is read-only and never touches the gateway's disk).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from govern.errors import InvalidRequest, Unsupported
from govern.pgwire.cursor import Cursor
from govern.pgwire.protocol import message, strip_comments
from govern.pgwire.types import column_encoder

__all__ = ["CopySpec", "copy_chunks", "copy_out_response", "is_copy", "parse_copy"]

BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
BINARY_TRAILER = struct.pack("!h", -1)


@dataclass(frozen=True)
class CopySpec:
    query: str
    format: str = "text"  # text | csv | binary
    header: bool = False
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'


def is_copy(text: str) -> bool:
    words = strip_comments(text).split(None, 1)
    return bool(words) and words[0].upper() == "COPY"


def _closing_paren(text: str, start: int) -> int:
    depth, i, quote = 0, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InvalidRequest("syntax error in COPY: unbalanced parentheses", sqlstate="42601")


_OPTION = re.compile(r"(?is)^\s*([a-z_]+)(?:\s+('(?:[^']|'')*'|[a-z_0-9]+))?\s*$")


def parse_copy(text: str) -> CopySpec:
    """The query and options of ``COPY (query) TO STDOUT [WITH] [(options) | CSV | BINARY …]``."""
    body = strip_comments(text).strip().rstrip(";").strip()
    rest = body[4:].lstrip()
    if not rest.startswith("("):
        raise Unsupported("only COPY (query) TO STDOUT is supported: govern is read-only and COPY table "
                          "would bypass nothing but is not implemented; write COPY (SELECT * FROM t) TO STDOUT",
                          sqlstate="0A000")
    end = _closing_paren(rest, 0)
    query, tail = rest[1:end].strip(), rest[end + 1:].strip()
    words = tail.split(None, 2)
    if len(words) < 2 or words[0].upper() != "TO" or words[1].upper() != "STDOUT":
        raise Unsupported("COPY can only write TO STDOUT (the client); files on the server are refused",
                          sqlstate="42501")
    options = words[2].strip() if len(words) > 2 else ""
    if options.upper().startswith("WITH"):
        options = options[4:].strip()
    spec: dict[str, object] = {}
    if options.startswith("("):
        inner = options[1:_closing_paren(options, 0)]
        for part in _split_options(inner):
            found = _OPTION.match(part)
            if found is None:
                raise InvalidRequest(f"syntax error in COPY option {part.strip()!r}", sqlstate="42601")
            name, value = found.group(1).lower(), (found.group(2) or "").strip("'").replace("''", "'")
            _option(spec, name, value)
    else:  # the old syntax: BINARY | CSV [HEADER] | DELIMITER 'x' | NULL 'x'
        tokens = re.findall(r"'(?:[^']|'')*'|\S+", options)
        i = 0
        while i < len(tokens):
            word = tokens[i].lower()
            if word in ("binary", "csv"):
                spec["format"] = word
            elif word == "header":
                spec["header"] = True
            elif word in ("delimiter", "null", "quote") and i + 1 < len(tokens):
                i += 1
                _option(spec, word, tokens[i].strip("'"))
            elif word != "as":
                raise InvalidRequest(f"unsupported COPY option {tokens[i]!r}", sqlstate="0A000")
            i += 1
    fmt = str(spec.get("format", "text"))
    defaults = {"delimiter": "," if fmt == "csv" else "\t", "null": "" if fmt == "csv" else "\\N"}
    return CopySpec(query=query, format=fmt, header=bool(spec.get("header", False)),
                    delimiter=str(spec.get("delimiter", defaults["delimiter"])),
                    null=str(spec.get("null", defaults["null"])), quote=str(spec.get("quote", '"')))


def _split_options(text: str) -> list[str]:
    return [p for p in re.findall(r"(?:'(?:[^']|'')*'|[^,])+", text) if p.strip()]


def _option(spec: dict[str, object], name: str, value: str) -> None:
    if name == "format":
        if value.lower() not in ("text", "csv", "binary"):
            raise InvalidRequest(f"COPY format {value!r} not recognized", sqlstate="22023")
        spec["format"] = value.lower()
    elif name == "header":
        spec["header"] = value.lower() in ("", "true", "on", "1")
    elif name in ("delimiter", "null", "quote"):
        spec[name] = value
    elif name == "encoding":
        if value.upper().replace("-", "") not in ("UTF8", "UNICODE"):
            raise InvalidRequest("COPY writes only UTF8", sqlstate="0A000")
    else:
        raise InvalidRequest(f"unsupported COPY option {name!r}", sqlstate="0A000")


def copy_out_response(spec: CopySpec, ncols: int) -> bytes:
    code = 1 if spec.format == "binary" else 0
    return message(b"H", struct.pack(f"!bh{ncols}h", code, ncols, *([code] * ncols)))


def _text_field(value: bytes) -> bytes:
    return (value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
            .replace(b"\r", b"\\r"))


def _csv_field(value: bytes, spec: CopySpec) -> bytes:
    quote = spec.quote.encode()
    if not value or any(c in value for c in (spec.delimiter.encode(), quote, b"\n", b"\r")) \
            or value == spec.null.encode():
        return quote + value.replace(quote, quote + quote) + quote
    return value


def copy_chunks(cursor: Cursor, spec: CopySpec, tz: object) -> Iterator[bytes]:
    """CopyData messages for every row of ``cursor`` (which counts rows and bytes for its audit
    record); the header and trailer included."""
    assert cursor.columns is not None
    binary = spec.format == "binary"
    encoders: list[Callable[[pa.Array], list[bytes | None]]] = [
        column_encoder(t if t is not None else pa.string(), binary, tz)  # type: ignore[arg-type]
        for _name, t in cursor.columns]
    # PostgreSQL sends the binary header in the first row's CopyData (ADBC reads them together)
    header = BINARY_HEADER if binary else b""
    if spec.header and not binary:
        names = [n.encode("utf-8") for n, _t in cursor.columns]
        fields = [_csv_field(n, spec) if spec.format == "csv" else _text_field(n) for n in names]
        yield message(b"d", spec.delimiter.encode().join(fields) + b"\n")
    null = spec.null.encode()
    delimiter = spec.delimiter.encode()
    for batch in cursor.batches:
        if not batch.num_rows:
            continue
        columns = [enc(col) for enc, col in zip(encoders, batch.columns, strict=True)]
        out = []
        for i in range(batch.num_rows):
            values = [col[i] for col in columns]
            if binary:
                row = header + struct.pack("!h", len(values)) + b"".join(
                    b"\xff\xff\xff\xff" if v is None else struct.pack("!i", len(v)) + v for v in values)
                header = b""
            elif spec.format == "csv":
                row = delimiter.join(null if v is None else _csv_field(v, spec) for v in values) + b"\n"
            else:
                row = delimiter.join(null if v is None else _text_field(v) for v in values) + b"\n"
            out.append(message(b"d", row))
        cursor.rows += batch.num_rows
        cursor.sent += batch.num_rows
        chunk = b"".join(out)
        cursor.nbytes += len(chunk)
        yield chunk
    if binary:
        yield message(b"d", header + BINARY_TRAILER)
    cursor.finished = cursor.closed = True
