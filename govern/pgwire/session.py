"""Session statements answered by the wire server itself, never sent to the SQL engine.

Drivers and tools send ``SET``/``RESET``/``SHOW``, transaction control (``BEGIN``, ``COMMIT``,
``ROLLBACK``, savepoints), ``DISCARD ALL`` and ``DEALLOCATE`` as part of their routine. govern is
read-only and has no transactions, so these are bookkeeping: settings are remembered per
connection (and shown back), transaction statements only move the transaction status that
``ReadyForQuery`` reports. Settings that change how values are written (``client_encoding``,
``DateStyle``, ``IntervalStyle``, ``standard_conforming_strings``) accept only what the server
speaks; ``TimeZone`` is honoured for ``timestamptz`` values.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from govern import __version__
from govern.errors import AccessDenied, InvalidRequest, NotFound
from govern.pgwire.protocol import strip_comments
from govern.pgwire.types import TEXT, PgType, time_zone

__all__ = ["SERVER_VERSION", "LocalResult", "Session", "is_local", "run_local"]

SERVER_VERSION = "16.0 (govern)"
SERVER_VERSION_NUM = "160000"

# Defaults, by display name. Those in REPORTED are sent as ParameterStatus at startup and when
# they change, as PostgreSQL does.
DEFAULTS: dict[str, str] = {
    "server_version": SERVER_VERSION,
    "server_version_num": SERVER_VERSION_NUM,
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "is_superuser": "off",
    "application_name": "",
    "search_path": '"$user", public',
    "extra_float_digits": "1",
    "default_transaction_read_only": "on",
    "transaction_read_only": "on",
    "transaction_isolation": "read committed",
    "default_transaction_isolation": "read committed",
    "max_identifier_length": "63",
    "lc_collate": "C",
    "lc_ctype": "C",
    "lc_messages": "C",
    "statement_timeout": "0",
    "in_hot_standby": "off",
    "govern_version": __version__,
}
REPORTED = ("server_version", "server_encoding", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone",
            "integer_datetimes", "standard_conforming_strings", "is_superuser", "application_name",
            "session_authorization", "default_transaction_read_only", "in_hot_standby")
READ_ONLY = frozenset({"server_version", "server_version_num", "server_encoding", "integer_datetimes",
                       "is_superuser", "max_identifier_length", "lc_collate", "lc_ctype", "in_hot_standby",
                       "session_authorization", "govern_version", "transaction_read_only",
                       "default_transaction_read_only"})

LOCAL_KEYWORDS = frozenset({"SET", "RESET", "SHOW", "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT",
                            "DISCARD", "DEALLOCATE", "SAVEPOINT", "RELEASE", "UNLISTEN", "CLOSE"})


@dataclass
class Session:
    """One connection's settings and transaction status."""

    user: str
    database: str
    values: dict[str, str] = field(default_factory=dict)
    in_transaction: bool = False
    failed: bool = False  # an error happened inside BEGIN … : only ROLLBACK/COMMIT until then

    def __post_init__(self) -> None:
        self.values = {**DEFAULTS, "session_authorization": self.user, **self.values}
        self._names = {k.lower(): k for k in self.values}
        self.tz: dt.tzinfo = time_zone(self.values["TimeZone"])

    @property
    def status(self) -> bytes:
        """The transaction status byte of ReadyForQuery."""
        return b"E" if self.failed else b"T" if self.in_transaction else b"I"

    def name(self, name: str) -> str:
        return self._names.get(name.lower(), name.lower())

    def show(self, name: str) -> str:
        key = self._names.get(name.lower())
        if key is None:
            raise NotFound(f'unrecognized configuration parameter "{name}"', sqlstate="42704")
        return self.values[key]

    def set(self, name: str, value: str) -> str | None:
        """Set ``name``; returns its display name if clients must be told (ParameterStatus)."""
        key = self.name(name)
        value = value.strip()
        if key in READ_ONLY:
            if value.lower() == self.values[key].lower():
                return None
            raise InvalidRequest(f'parameter "{key}" cannot be changed', sqlstate="55P02")
        if key == "client_encoding":
            # PostgreSQL ignores every non-alphanumeric character of an encoding name (asyncpg
            # sends 'utf-8' with the quotes)
            if re.sub(r"[^A-Za-z0-9]", "", value).upper() not in ("UTF8", "UNICODE"):
                raise InvalidRequest("govern speaks only UTF8 (client_encoding)", sqlstate="0A000")
            value = "UTF8"
        elif key == "DateStyle":
            if not value.upper().startswith("ISO") and value.upper() not in ("MDY", "YMD", "DMY"):
                raise InvalidRequest("govern writes dates only in ISO style (DateStyle)", sqlstate="0A000")
            value = "ISO, MDY"
        elif key == "IntervalStyle" and value.lower() != "postgres":
            raise InvalidRequest("govern writes intervals only in postgres style (IntervalStyle)",
                                 sqlstate="0A000")
        elif key == "standard_conforming_strings" and value.lower() not in ("on", "true", "1"):
            raise InvalidRequest("standard_conforming_strings must stay on", sqlstate="0A000")
        elif key == "TimeZone":
            self.tz = time_zone(value)
        self.values[key] = value
        self._names[key.lower()] = key
        return key if key in REPORTED else None

    def reset(self, name: str) -> str | None:
        key = self.name(name)
        if key in DEFAULTS and key not in READ_ONLY:
            return self.set(key, DEFAULTS[key])
        if key not in DEFAULTS and key != "session_authorization":
            self.values.pop(key, None)
            self._names.pop(key.lower(), None)
        return None


@dataclass
class LocalResult:
    tag: str
    columns: list[tuple[str, PgType]] | None = None  # None: no result set
    rows: list[list[str | None]] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)  # parameters whose new value clients must see
    deallocate: str | None = None  # a prepared statement name, or "ALL"
    discard: bool = False
    close: str | None = None  # CLOSE name: an SQL cursor name, or "ALL"


def is_local(text: str) -> bool:
    words = strip_comments(text).split(None, 1)
    return bool(words) and words[0].upper().rstrip(";") in LOCAL_KEYWORDS


_SET = re.compile(r"(?is)^SET\s+(?:(SESSION|LOCAL)\s+)?(.*?)\s*;?\s*$")
_ASSIGN = re.compile(r"(?is)^([A-Za-z_][\w.$]*|\"[^\"]+\")\s*(?:=|\bTO\b)\s*(.*)$")
_TIME_ZONE = re.compile(r"(?is)^TIME\s+ZONE\s+(.*)$")


def _value(text: str) -> str:
    parts = [p.strip() for p in re.findall(r"'(?:[^']|'')*'|[^,]+", text) if p.strip() != ","]
    out = []
    for p in parts:
        p = p.strip().strip(",").strip()
        if p.startswith("'") and p.endswith("'"):
            p = p[1:-1].replace("''", "'")
        out.append(p)
    return ", ".join(out)


def run_local(text: str, session: Session) -> LocalResult:
    """Answer one session statement (``is_local(text)`` must be true)."""
    body = strip_comments(text).strip().rstrip(";").strip()
    words = body.split()
    head = words[0].upper()
    second = words[1].upper() if len(words) > 1 else ""
    if head == "SET":
        return _set(body, session)
    if head == "RESET":
        if second == "ALL":
            reported = [r for k in list(session.values) if (r := session.reset(k))]
            return LocalResult("RESET", reported=reported)
        if second == "SESSION" and len(words) > 2 and words[2].upper() == "AUTHORIZATION":
            return LocalResult("RESET")
        one = session.reset(" ".join(words[1:]).strip('"'))
        return LocalResult("RESET", reported=[one] if one else [])
    if head == "SHOW":
        name = " ".join(words[1:]).strip('"')
        if name.upper() == "ALL":
            rows: list[list[str | None]] = [[k, v, ""] for k, v in sorted(session.values.items(),
                                                                         key=lambda kv: kv[0].lower())]
            return LocalResult("SHOW", [("name", TEXT), ("setting", TEXT), ("description", TEXT)], rows)
        if name.upper() in ("TIME ZONE", "TIMEZONE"):
            name = "TimeZone"
        if name.upper() == "TRANSACTION ISOLATION LEVEL":
            name = "transaction_isolation"
        return LocalResult("SHOW", [(name.lower(), TEXT)], [[session.show(name)]])
    if head in ("BEGIN", "START"):
        session.in_transaction = True
        return LocalResult("BEGIN" if head == "BEGIN" else "START TRANSACTION")
    if head in ("COMMIT", "END"):
        tag = "ROLLBACK" if session.failed else "COMMIT"
        session.in_transaction = session.failed = False
        return LocalResult(tag)
    if head in ("ROLLBACK", "ABORT"):
        if "TO" in (w.upper() for w in words[1:]):  # ROLLBACK TO SAVEPOINT x: the block goes on
            session.failed = False
            return LocalResult("ROLLBACK")
        session.in_transaction = session.failed = False
        return LocalResult("ROLLBACK")
    if head == "SAVEPOINT":
        return LocalResult("SAVEPOINT")
    if head == "RELEASE":
        return LocalResult("RELEASE")
    if head == "DISCARD":
        what = second or "ALL"
        return LocalResult(f"DISCARD {what}", discard=what == "ALL")
    if head == "DEALLOCATE":
        rest = [w for w in words[1:] if w.upper() != "PREPARE"]
        name = rest[0].strip('"') if rest else ""
        if name.upper() == "ALL":
            return LocalResult("DEALLOCATE ALL", deallocate="ALL")
        return LocalResult("DEALLOCATE", deallocate=name)
    if head == "UNLISTEN":
        return LocalResult("UNLISTEN")
    if head == "CLOSE":
        raw = " ".join(words[1:])
        name = raw[1:-1].replace('""', '"') if raw.startswith('"') and raw.endswith('"') else raw.lower()
        if not name:
            raise InvalidRequest("syntax error in CLOSE: write CLOSE name or CLOSE ALL", sqlstate="42601")
        return LocalResult("CLOSE CURSOR ALL" if name.upper() == "ALL" else "CLOSE CURSOR",
                           close="ALL" if name.upper() == "ALL" else name)
    raise InvalidRequest(f"unsupported statement {head}", sqlstate="0A000")


def _set(body: str, session: Session) -> LocalResult:
    found = _SET.match(body)
    rest = found.group(2) if found else ""
    upper = rest.upper()
    if upper.startswith(("TRANSACTION", "SESSION CHARACTERISTICS")) or upper.startswith("CHARACTERISTICS"):
        if "READ WRITE" in upper:
            raise InvalidRequest("govern is read-only: transactions cannot be READ WRITE", sqlstate="25006")
        return LocalResult("SET")
    if upper.startswith(("ROLE", "SESSION AUTHORIZATION", "AUTHORIZATION")):
        raise AccessDenied("the session's principal cannot be changed; reconnect as another user",
                           sqlstate="42501")
    tz = _TIME_ZONE.match(rest)
    if tz:
        value = _value(tz.group(1))
        name = "TimeZone"
        if value.upper() in ("LOCAL", "DEFAULT"):
            reported = session.reset(name)
            return LocalResult("SET", reported=[reported] if reported else [])
    else:
        assign = _ASSIGN.match(rest)
        if assign is None:
            raise InvalidRequest("syntax error in SET: write SET name = value", sqlstate="42601")
        name, value = assign.group(1).strip('"'), _value(assign.group(2))
        if value.upper() == "DEFAULT":
            reported = session.reset(name)
            return LocalResult("SET", reported=[reported] if reported else [])
    reported_name = session.set(name, value)
    return LocalResult("SET", reported=[reported_name] if reported_name else [])
