"""Differentially private SQL over the PostgreSQL wire (see docs/privacy.md#over-the-postgresql-wire).

A statement runs as DP SQL when the session says so (``SET govern.privacy = dp``) or the
statement starts with a ``/*+ dp epsilon=… */`` hint. Epsilon, delta and contributions come
from the hint, else from ``SET govern.epsilon`` / ``govern.delta`` / ``govern.contributions``.
The result is an ordinary row set — group columns, then one noisy value per aggregate — and
the release is the same as over HTTP (:func:`govern.deliver.releases.release_dp`): audited
once (``query_dp``) and charged before its first row is sent. The 95% intervals, the mechanisms
and the budget left are in the audit record and, over HTTP, in the response; ``SELECT`` over
the wire carries values only.
"""

from __future__ import annotations

from typing import Any

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.deliver.releases import describe_sql, release_table, translate_sql
from govern.errors import InvalidRequest, SqlError
from govern.pgwire.cursor import Columns, Cursor
from govern.pgwire.session import Session
from govern.privacy.dp import sql as dp_sql

__all__ = ["dp_cursor", "dp_describe", "is_dp"]


def is_dp(session: Session, text: str) -> bool:
    value = session.values.get("govern.privacy", "")
    return value.strip().lower() == "dp" or dp_sql.has_hint(text)


def _number(session: Session, name: str, kind: type[float] | type[int]) -> Any:
    raw = session.values.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise InvalidRequest(f'invalid value for parameter "{name}": "{raw}"', sqlstate="22023") from None


def _translate(ex: Exchange, session: Session, text: str) -> dp_sql.DpSql:
    return translate_sql(ex, text, epsilon=_number(session, "govern.epsilon", float),
                         delta=_number(session, "govern.delta", float) or 0.0,
                         contributions=_number(session, "govern.contributions", int) or 1)


def dp_cursor(gw: Gateway, ex: Exchange, session: Session, text: str, params: list[Any]) -> Cursor:
    """Run DP SQL inside ``ex``: translate, release (audited and charged), hand back the rows."""
    if params:
        raise SqlError("differentially private SQL takes no parameters", sqlstate="0A000")
    ex.permitted("query_dp")
    translated = _translate(ex, session, text)
    table = release_table(ex, gw.dp, translated)
    return Cursor([(f.name, f.type) for f in table.schema], iter(table.to_batches()))


def dp_describe(gw: Gateway, ex: Exchange, session: Session, text: str) -> Columns:
    """Column names and types of a DP SQL statement, without running it (nothing is charged)."""
    ex.permitted("query_dp")
    translated = _translate(ex, session, text)
    return [(f.name, f.type) for f in describe_sql(ex, gw.governor, translated)]
