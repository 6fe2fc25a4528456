"""Turn what DuckDB raises into a govern error that cannot echo data.

DuckDB messages are written for a database owner: they name internal views, suggest system
tables ("Did you mean pg_enum?"), list candidate columns, and runtime errors quote the value
that failed (``error(email)`` fails with the e-mail address as its whole message). Only the
masked views are in the sandbox, so no raw value could appear — but error text is not a
data channel, so:

- compile-time errors (parser, binder, catalog: no data has been read yet) keep their first
  line, without suggestions or candidate lists;
- conversion and range errors keep their first line with every quoted string and number
  replaced by ``…``;
- every other runtime error gets a fixed sentence naming only its kind;
- interrupts become :class:`~govern.errors.QueryTimeout` when the clock fired, memory
  exhaustion becomes :class:`~govern.errors.LimitExceeded`; a missing column is "does not
  exist (unknown, or withheld under purpose …)", whether it is withheld or was never there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import duckdb

from govern.errors import GovernError, LimitExceeded, QueryTimeout, SqlError

__all__ = ["Rescan", "diagnose", "word_position"]

_KIND = re.compile(r"^([A-Za-z ]+?) Error: ?(.*)$", re.S)
_VIEW = re.compile(r'"?__govern_[0-9a-f]+_(\d+)"?')
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_COLUMN = (re.compile(r'Referenced column "([^"]+)" (?:not found|was not found)'),
           re.compile(r'does not have a column named "([^"]+)"'),
           re.compile(r'Column "([^"]+)" does not exist'))
_TABLE = re.compile(r"Table with name (\S+) does not exist")
_FUNCTION = re.compile(r"(Scalar|Table|Aggregate|Pragma|Macro) Function with name (\S+) does not exist")
_SQLSTATE = {"parser": "42601", "binder": "42803", "catalog": "42P01", "conversion": "22P02",
             "out of range": "22003", "invalid input": "22023", "not implemented": "0A000",
             "constraint": "23000", "dependency": "2BP01", "permission": "42501"}
_COMPILE_KINDS = ("parser", "binder", "catalog", "not implemented")
_SCRUBBED_KINDS = ("conversion", "out of range")


class Rescan(Exception):
    """DuckDB scanned a stream twice: run again with every reference materialized."""


def diagnose(exc: BaseException, *, text: str, datasets: Mapping[int, str], purpose: str,
             timed_out: bool, timeout: float, memory_limit: str) -> GovernError | Rescan:
    """The error to raise for ``exc``, raised while running the query ``text``."""
    if isinstance(exc, GovernError):
        return exc
    message = str(exc)
    if isinstance(exc, duckdb.InterruptException) or "INTERRUPT Error" in message:
        if timed_out:
            return QueryTimeout(f"the query ran longer than {timeout:g} s and was stopped",
                                limit=timeout, sqlstate="57014")
        return SqlError("the query was cancelled", sqlstate="57014")
    if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory Error" in message:
        return LimitExceeded(f"the query needs more memory than its limit ({memory_limit})",
                             limit=memory_limit, sqlstate="53200")
    if "has already been consumed" in message:
        return Rescan()
    if "expression depth" in message:
        return SqlError("the query is nested too deeply", sqlstate="54001")
    if isinstance(exc, duckdb.PermissionException) or message.startswith("Permission Error"):
        return SqlError("the query tried to reach outside its masked views (files, extensions or "
                        "settings), which is not allowed", sqlstate="42501")
    match = _KIND.match(message.strip())
    if not isinstance(exc, duckdb.Error) or match is None:
        return SqlError("the query failed", sqlstate="XX000")
    kind, body = match.group(1).strip().lower(), match.group(2)
    first = _VIEW.sub(lambda m: datasets.get(int(m.group(1)), "?"), body.split("\n")[0]).strip()
    for pattern in _COLUMN:
        found = pattern.search(first)
        if found:
            name = found.group(1)
            return SqlError(f"column '{name}' does not exist (unknown, or withheld under purpose '{purpose}')",
                            position=word_position(text, name), sqlstate="42703", columns=[name])
    found = _TABLE.search(first)
    if found:
        name = found.group(1).strip('"')
        return SqlError(f"table '{name}' does not exist or is not readable under purpose '{purpose}'",
                        position=word_position(text, name), sqlstate="42P01")
    found = _FUNCTION.search(first)
    if found:
        name = found.group(2).strip('"')
        return SqlError(f"function '{name}' does not exist", position=word_position(text, name),
                        sqlstate="42883")
    sqlstate = _SQLSTATE.get(kind, "XX000")
    if kind in _COMPILE_KINDS:
        detail = _trim(first.split("Did you mean")[0].split("Candidate")[0])
    elif kind in _SCRUBBED_KINDS:
        detail = _trim(_NUMBER.sub("…", _QUOTED.sub("'…'", first)))
    else:
        detail = "the query failed on a value (details are not shown: they could quote data)"
    return SqlError(f"{kind} error: {detail}", sqlstate=sqlstate)


def word_position(text: str, word: str) -> int | None:
    """Offset of the first occurrence of identifier ``word`` in ``text`` (best effort)."""
    found = re.search(r"(?i)(?<![\w$])\"?" + re.escape(word) + r"\"?(?!\w)", text)
    return found.start() if found else None


def _trim(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
