"""SQL-level cursors and prepared statements: ``DECLARE/FETCH/MOVE/CLOSE`` and
``PREPARE/EXECUTE`` (psycopg's named cursors, psql scripts).

A declared cursor is a portal like those of the extended protocol (PostgreSQL treats them
the same: psycopg describes a named cursor with a protocol ``Describe`` of its name), so the
connection keeps both in one table; its query runs, audited once, at its first ``FETCH``.
This module only parses the statements; :mod:`govern.pgwire.connection` runs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from govern.errors import InvalidRequest
from govern.pgwire.protocol import strip_comments

__all__ = ["Declare", "Execute", "Fetch", "Prepare", "parse_declare", "parse_execute", "parse_fetch",
           "parse_prepare", "sql_kind"]

_NAME = r'("(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_DECLARE = re.compile(r"(?is)^DECLARE\s+" + _NAME + r"\s+((?:BINARY|INSENSITIVE|ASENSITIVE|NO\s+SCROLL|SCROLL|\s)*)"
                      r"CURSOR\s+(?:(?:WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.*)$")
_FETCH = re.compile(r"(?is)^(FETCH|MOVE)\s+(?:(NEXT|FORWARD\s+ALL|FORWARD\s+\d+|FORWARD|ALL|\d+)\s+)?"
                    r"(?:(?:FROM|IN)\s+)?" + _NAME + r"$")
_PREPARE = re.compile(r"(?is)^PREPARE\s+" + _NAME + r"(?:\s*\(([^)]*)\))?\s+AS\s+(.*)$")
_EXECUTE = re.compile(r"(?is)^EXECUTE\s+" + _NAME + r"(?:\s*\((.*)\))?$")


def _name(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


def _body(text: str) -> str:
    return strip_comments(text).strip().rstrip(";").strip()


def sql_kind(text: str) -> str | None:
    """``declare``, ``fetch``, ``prepare`` or ``execute`` for those statements, else None."""
    words = _body(text).split(None, 1)
    head = words[0].upper() if words else ""
    return {"DECLARE": "declare", "FETCH": "fetch", "MOVE": "fetch", "PREPARE": "prepare",
            "EXECUTE": "execute"}.get(head)


@dataclass(frozen=True)
class Declare:
    name: str
    query: str
    binary: bool


@dataclass(frozen=True)
class Fetch:
    name: str
    count: int  # 0: all
    move: bool  # MOVE: skip the rows


@dataclass(frozen=True)
class Prepare:
    name: str
    query: str
    types: list[str]


@dataclass(frozen=True)
class Execute:
    name: str
    arguments: str  # the SQL text of the arguments, without the parentheses


def parse_declare(text: str) -> Declare:
    found = _DECLARE.match(_body(text))
    if found is None:
        raise InvalidRequest("syntax error in DECLARE: write DECLARE name CURSOR FOR query", sqlstate="42601")
    options = found.group(2).upper()
    if re.search(r"(?<!NO )SCROLL", options):
        raise InvalidRequest("SCROLL cursors are not supported (govern streams rows once)", sqlstate="0A000")
    return Declare(_name(found.group(1)), found.group(3).strip(), "BINARY" in options)


def parse_fetch(text: str) -> Fetch:
    found = _FETCH.match(_body(text))
    if found is None:
        raise InvalidRequest("only FETCH [FORWARD] [n | ALL | NEXT] FROM name is supported (cursors move "
                             "forward only)", sqlstate="0A000")
    how = (found.group(2) or "NEXT").upper().split()
    if how[-1].isdigit() and len(how[-1]) > 18:  # as PostgreSQL: a count is a bigint (and int() of
        raise InvalidRequest("FETCH count is out of range", sqlstate="22003")  # 4,300+ digits raises)
    count = 1 if how == ["NEXT"] or how == ["FORWARD"] else 0 if how[-1] == "ALL" else int(how[-1])
    if how and how[-1].isdigit() and count == 0:
        count = -1  # FETCH 0: nothing
    return Fetch(_name(found.group(3)), count, found.group(1).upper() == "MOVE")


def parse_prepare(text: str) -> Prepare:
    found = _PREPARE.match(_body(text))
    if found is None:
        raise InvalidRequest("syntax error in PREPARE: write PREPARE name [(types)] AS query", sqlstate="42601")
    types = [t.strip() for t in (found.group(2) or "").split(",") if t.strip()]
    return Prepare(_name(found.group(1)), found.group(3).strip(), types)


def parse_execute(text: str) -> Execute:
    found = _EXECUTE.match(_body(text))
    if found is None:
        raise InvalidRequest("syntax error in EXECUTE: write EXECUTE name [(arguments)]", sqlstate="42601")
    return Execute(_name(found.group(1)), (found.group(2) or "").strip())
