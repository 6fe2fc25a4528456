"""The PostgreSQL v3 wire protocol: framing, the messages the server sends, errors as SQLSTATEs.

Pure functions over bytes (no sockets, no gateway): reading a frame from an
:class:`asyncio.StreamReader`, decoding the fields of a client message (:class:`Fields`),
building backend messages, splitting a simple-query string into statements, and govern's
errors as SQLSTATE codes (:func:`sqlstate`; each error class knows its own, ``govern.errors``).
See https://www.postgresql.org/docs/current/protocol-message-formats.html.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Iterable, Sequence

from govern.errors import GovernError, LimitExceeded
from govern.pgwire.types import PgType

__all__ = [
    "CANCEL_REQUEST",
    "GSSENC_REQUEST",
    "PROTOCOL_3",
    "SSL_REQUEST",
    "Fields",
    "ProtocolViolation",
    "error_response",
    "split_statements",
    "sqlstate",
]

PROTOCOL_3 = 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

class ProtocolViolation(Exception):
    """The client broke the protocol: answer FATAL 08P01 and close the connection."""


def sqlstate(exc: GovernError) -> str:
    """The SQLSTATE a client sees for ``exc``."""
    return exc.code


# -- reading -------------------------------------------------------------------------------------

async def read_startup(reader: asyncio.StreamReader, limit: int) -> tuple[int, bytes]:
    """The first frame: ``(code, payload)``; code is a protocol version or a special request."""
    (length,) = struct.unpack("!i", await reader.readexactly(4))
    if length < 8 or length > limit:
        raise ProtocolViolation("invalid startup packet length")
    body = await reader.readexactly(length - 4)
    return struct.unpack("!i", body[:4])[0], body[4:]


async def read_message(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bytes]:
    """One regular frame: ``(type byte, payload)``."""
    head = await reader.readexactly(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    if length < 4:
        raise ProtocolViolation("invalid message length")
    if length - 4 > limit:
        raise LimitExceeded(f"a protocol message may be at most {limit} bytes", limit=limit)
    return kind, await reader.readexactly(length - 4)


class Fields:
    """Reads the fields of one client message in order."""

    def __init__(self, payload: bytes) -> None:
        self.data = payload
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolViolation("message shorter than its fields")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> bytes:
        return self._take(1)

    def int16(self) -> int:
        return int(struct.unpack("!h", self._take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack("!i", self._take(4))[0])

    def uint32(self) -> int:
        return int(struct.unpack("!I", self._take(4))[0])

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation("unterminated string in message")
        text = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in message") from None

    def value(self) -> bytes | None:
        n = self.int32()
        return None if n == -1 else self._take(n)


def startup_parameters(payload: bytes) -> dict[str, str]:
    fields = Fields(payload)
    out: dict[str, str] = {}
    while fields.pos < len(payload):
        key = fields.cstring()
        if not key:
            break
        out[key] = fields.cstring()
    return out


# -- writing -------------------------------------------------------------------------------------

def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.replace("\x00", "").encode("utf-8") + b"\x00"


def authentication(code: int) -> bytes:
    return message(b"R", struct.pack("!i", code))  # 0: ok, 3: cleartext password


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", _cstr(name) + _cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!iI", pid, secret))


def ready_for_query(status: bytes) -> bytes:
    return message(b"Z", status)


def row_description(columns: Sequence[tuple[str, PgType, int]]) -> bytes:
    """``columns``: (name, type, format code 0 text / 1 binary)."""
    parts = [struct.pack("!h", len(columns))]
    for name, pg, fmt in columns:
        parts.append(_cstr(name) + struct.pack("!ihihih", 0, 0, pg.oid, pg.size if pg.size > 0 else -1, -1, fmt))
    return message(b"T", b"".join(parts))


def data_rows(columns: Sequence[list[bytes | None]], nrows: int) -> bytes:
    """DataRow messages for ``nrows`` rows given column-wise encoded values."""
    count = struct.pack("!h", len(columns))
    out = []
    pack = struct.pack
    for i in range(nrows):
        cells = [count]
        for col in columns:
            v = col[i]
            cells.append(b"\xff\xff\xff\xff" if v is None else pack("!i", len(v)) + v)
        body = b"".join(cells)
        out.append(b"D" + pack("!i", len(body) + 4) + body)
    return b"".join(out)


def command_complete(tag: str) -> bytes:
    return message(b"C", _cstr(tag))


def parameter_description(oids: Iterable[int]) -> bytes:
    oids = list(oids)
    return message(b"t", struct.pack(f"!h{len(oids)}I", len(oids), *oids))


PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
EMPTY_QUERY = message(b"I")
PORTAL_SUSPENDED = message(b"s")
SSL_REFUSED = b"N"


def error_response(code: str, text: str, *, severity: str = "ERROR", position: int | None = None,
                   detail: str | None = None, hint: str | None = None, notice: bool = False) -> bytes:
    """An ErrorResponse (or NoticeResponse): S, V, C, M, and D, H, P when given."""
    fields = [b"S" + _cstr(severity), b"V" + _cstr(severity), b"C" + _cstr(code), b"M" + _cstr(text)]
    if detail:
        fields.append(b"D" + _cstr(detail))
    if hint:
        fields.append(b"H" + _cstr(hint))
    if position is not None:
        fields.append(b"P" + _cstr(str(position)))
    return message(b"N" if notice else b"E", b"".join(fields) + b"\x00")


# -- statements ----------------------------------------------------------------------------------

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(text: str) -> list[tuple[int, str]]:
    """The statements of a simple-query string as ``(offset, text)``; empty ones dropped.

    Semicolons inside quotes, identifiers, comments and dollar-quoted strings do not split.
    """
    out: list[tuple[int, str]] = []
    start = i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "'" or ch == '"':
            escape = ch == "'" and i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
            i += 1
            while i < n:
                if escape and text[i] == "\\":
                    i += 2
                    continue
                if text[i] == ch:
                    if i + 1 < n and text[i + 1] == ch:
                        i += 2
                        continue
                    break
                i += 1
        elif ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch == "/" and text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        elif ch == "$" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            found = _DOLLAR.match(text, i)
            if found:
                end = text.find(found.group(0), found.end())
                i = n if end < 0 else end + len(found.group(0))
                continue
        elif ch == ";":
            _keep(out, text, start, i)
            start = i + 1
        i += 1
    _keep(out, text, start, n)
    return out


def _keep(out: list[tuple[int, str]], text: str, start: int, end: int) -> None:
    part = text[start:end]
    if strip_comments(part).strip():
        out.append((start, part))


_LEADING = re.compile(r"\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/)?", re.S)


def strip_comments(text: str) -> str:
    """``text`` without its leading whitespace and comments (enough to read the first words)."""
    pos = 0
    while True:
        found = _LEADING.match(text, pos)
        if found is None or found.end() == pos:
            return text[pos:]
        pos = found.end()
