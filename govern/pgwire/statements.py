"""Starting statements for one wire session, each through the request lifecycle.

Every statement is one of four kinds (:func:`classify`):

- ``empty``: only whitespace and comments → EmptyQueryResponse;
- ``local``: a session statement (``SET``, ``SHOW``, ``BEGIN``…) answered by
  :mod:`govern.pgwire.session`; it touches no data and makes no decision, so only its refusals
  are audited;
- ``catalog``: a question about ``pg_catalog``/``information_schema``, answered by the
  session's schema-only :class:`~govern.pgwire.catalog.Catalog`;
- ``query``: everything else goes to the analyst SQL engine over masked views.

Catalog queries, queries, ``Parse`` (validation) and ``Describe`` (a result shape, computed
over empty views: nothing is executed) each open an :class:`~govern.deliver.lifecycle.Exchange`:
the session's credentials are resolved again (a removed API key or changed attributes reach an
open session at its next statement), the purpose (the database name) is checked again, a read
slot and the query's deadline are taken, and exactly one audit record is written.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Call, Exchange, Password
from govern.deliver.queries import describe_query, note_text, run_query
from govern.errors import AuthenticationFailed, GovernError, PurposeNotEntitled, SqlError
from govern.identity.principal import Principal
from govern.pgwire import dp as wire_dp
from govern.pgwire.catalog import Catalog, CatalogContext, is_catalog_query, output_names
from govern.pgwire.copy import is_copy
from govern.pgwire.cursor import Columns, Cursor
from govern.pgwire.params import infer_parameter_types
from govern.pgwire.protocol import strip_comments
from govern.pgwire.session import Session, is_local, run_local
from govern.pgwire.sqlcursors import sql_kind
from govern.sql.validate import validate

__all__ = ["SessionEnded", "Statements", "classify"]

log = logging.getLogger("govern.pgwire")


class SessionEnded(Exception):
    """The session's credentials or purpose no longer hold: end the connection (FATAL)."""

    def __init__(self, error: GovernError) -> None:
        super().__init__(error.detail)
        self.error = error


def classify(text: str, datasets: set[str]) -> str:
    body = strip_comments(text).strip().rstrip(";").strip()
    if not body:
        return "empty"
    if is_copy(body):
        return "copy"
    sql_statement = sql_kind(body)
    if sql_statement is not None:
        return sql_statement
    if is_local(body):
        return "local"
    if is_catalog_query(body, datasets):
        return "catalog"
    return "query"


class Statements:
    """One session's statements: its credentials, purpose, settings and catalog."""

    def __init__(self, gateway: Gateway, credentials: Password, session: Session, pid: int) -> None:
        self.gw = gateway
        self.credentials = credentials
        self.session = session
        self.pid = pid
        self.service = gateway.sql_service
        self._catalog: Catalog | None = None
        self.cancelled = threading.Event()  # a CancelRequest for the statement now running
        self._catalog_key: tuple[str, str, tuple[Any, ...]] | None = None

    @property
    def purpose(self) -> str:
        return self.session.database

    def datasets(self) -> set[str]:
        return {name.lower() for name in self.gw.governor.state.policy.datasets}

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    # -- the lifecycle of one statement ------------------------------------------------------------
    def exchange(self, route: str, action: str, text: str | None = None) -> Exchange:
        ex = self.gw.exchange(Call("pgwire", route, action, extra={"connection": self.pid}))
        if text is not None:
            note_text(ex, text)
        return ex

    def enter(self, ex: Exchange) -> Principal:
        """Authenticate the session's credentials and its purpose again, now, under the current
        policy. A credential or purpose that no longer holds ends the session."""
        try:
            principal = ex.authenticate(self.credentials)
            ex.declare(self.purpose)
        except (AuthenticationFailed, PurposeNotEntitled) as exc:
            ex.refuse(exc)
            raise SessionEnded(exc) from None
        return principal

    def refuse(self, route: str, action: str, text: str | None, exc: GovernError) -> None:
        """Audit a statement refused before it reached the lifecycle (a bad parameter, a protocol
        refusal of a query), under the session's identity."""
        with self.exchange(route, action, text) as ex:
            self.enter(ex)
            raise exc

    # -- starting statements (blocking; the connection runs these in its work pool) ----------------
    def local(self, text: str) -> Cursor:
        result = run_local(text, self.session)
        if result.columns is None:
            return Cursor(None, tag=result.tag, local=result)
        names = [n for n, _t in result.columns]
        table = pa.table({f"c{i}": pa.array([r[i] for r in result.rows], pa.string())
                          for i in range(len(names))})
        return Cursor([(n, pa.string()) for n in names], iter(table.to_batches()), tag=result.tag, local=result)

    def catalog(self, text: str, params: list[Any]) -> Cursor:
        with self.exchange("catalog", "catalog", text) as ex:
            principal = self.enter(ex)
            ex.extra["catalog"] = True
            if params:
                ex.extra["params"] = len(params)
            ex.admit(seconds=self.gw.settings.sql_timeout)
            table = self._answer(principal, ex, text, params)
            return self._cursor(ex, [(f.name, f.type) for f in table.schema], table.to_reader(), lambda: None)

    def describe_catalog(self, text: str, nparams: int) -> Columns:
        with self.exchange("describe", "describe", text) as ex:
            principal = self.enter(ex)
            ex.extra["catalog"] = True
            ex.admit(seconds=self.gw.settings.sql_timeout)
            table = self._answer(principal, ex, text, [None] * nparams)
            ex.finish()
        return [(f.name, f.type) for f in table.schema]

    def query(self, text: str, params: list[Any]) -> Cursor:
        if wire_dp.is_dp(self.session, text):  # differentially private SQL (govern.pgwire.dp)
            with self.exchange("query", "query_dp", text) as ex:
                self.enter(ex)
                return wire_dp.dp_cursor(self.gw, ex, self.session, text, params)
        with self.exchange("query", "sql", text) as ex:
            self.enter(ex)
            self.cancelled.clear()
            # the session's statement_timeout (SET statement_timeout = '2s') cancels like a
            # CancelRequest; sql_timeout bounds every query anyway
            seconds = statement_timeout(self.session.values.get("statement_timeout", "0"))
            timer = threading.Timer(seconds, self.cancelled.set) if seconds else None
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                result = run_query(ex, self.service, text, params, cancel=self.cancelled)
            finally:
                if timer is not None:
                    timer.cancel()
            try:
                cursor = self._cursor(ex, named(text, result.schema), _guarded(result.reader), result.close)
                if result.suppressed_groups is not None:  # a min_group result policy applied
                    cursor.notices.append(f"suppressed_groups={result.suppressed_groups}: groups below the minimum "
                                          "group size were folded into the remainder row (keys NULL)")
                return cursor
            except BaseException:
                result.close()
                raise

    def describe_query(self, text: str, params: list[Any] | None) -> Columns:
        """The result columns of a query, computed over empty views: nothing is executed."""
        dp = wire_dp.is_dp(self.session, text)
        with self.exchange("describe", "describe", text) as ex:
            self.enter(ex)
            if dp:
                columns = wire_dp.dp_describe(self.gw, ex, self.session, text)
            else:
                columns = named(text, describe_query(ex, self.service, text, params or None))
            ex.finish()
        return columns

    def parse(self, text: str) -> list[int]:
        """Validate a prepared query at Parse time; returns the inferred type OID of each of its
        parameters (:mod:`govern.pgwire.params`)."""
        with self.exchange("parse", "prepare", text) as ex:
            principal = self.enter(ex)
            ex.permitted("read")
            ex.admit(seconds=self.gw.settings.sql_timeout)
            oids: list[int] = []
            if not wire_dp.is_dp(self.session, text):
                statement = validate(text, max_length=self.gw.settings.sql_max_length)
                if statement.parameters:
                    schemas = self.service.tables(principal, self.purpose, ex.state.policy,
                                                  settings=self.gw.settings)
                    oids = infer_parameter_types(statement.tree, statement.parameters, schemas)
            ex.finish()
        return oids

    # -- internals -------------------------------------------------------------------------------------
    def _cursor(self, ex: Exchange, columns: Columns, reader: Iterator[pa.RecordBatch] | pa.RecordBatchReader,
                close: Callable[[], None]) -> Cursor:
        cursor = Cursor(columns)

        def source(finish: Callable[[int, int], None]) -> Iterator[pa.RecordBatch]:
            yield from reader
            finish(cursor.rows, cursor.nbytes)

        stream = ex.stream(source, close=close, progress=lambda: (cursor.sent, cursor.nbytes))
        cursor.batches = stream
        cursor.release = stream.close
        return cursor

    def _answer(self, principal: Principal, ex: Exchange, text: str, params: list[Any]) -> pa.Table:
        """The catalog's answer; a query it cannot answer is an error, logged and counted."""
        try:
            return self._catalog_db(principal, ex).run(text, params)
        except SqlError as exc:
            if exc.extra.get("catalog_unanswered"):
                log.warning("catalog query not answered", extra={
                    "connection": self.pid, "reason": exc.detail[:300], "sql": text[:500]})
                self.gw.metrics.catalog_unanswered.inc()
            raise

    def _catalog_db(self, principal: Principal, ex: Exchange) -> Catalog:
        state = ex.state
        key = (state.policy.version, principal.name, tuple(sorted(principal.attributes.items(), key=str)))
        if self._catalog is None or self._catalog_key != key:
            tables = self.service.tables(principal, self.purpose, state.policy, settings=self.gw.settings)
            descriptions: dict[tuple[str, str | None], str] = {}
            for name, schema in tables.items():  # descriptions of visible columns only
                entry = state.policy.datasets.get(name)
                if entry is None:
                    continue
                if entry.description:
                    descriptions[(name, None)] = entry.description
                for column in schema.names:
                    col = entry.columns.get(column)
                    if col is not None and col.description:
                        descriptions[(name, column)] = col.description
            context = CatalogContext(
                user=principal.name, database=self.purpose,
                databases=tuple(sorted(state.decider.purposes(principal))), tables=tables,
                settings=dict(self.session.values), pid=self.pid, descriptions=descriptions)
            if self._catalog is not None:
                self._catalog.close()
            settings = self.gw.settings
            self._catalog = Catalog(context, timeout=settings.sql_timeout, memory_limit=settings.sql_memory_limit,
                                    service=self.service)
            self._catalog_key = key
        return self._catalog


def statement_timeout(value: str) -> float:
    """Seconds of a PostgreSQL ``statement_timeout`` value (``'1500'`` ms, ``'2s'``, ``'1min'``;
    0: none)."""
    found = re.fullmatch(r"\s*'?\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*'?\s*", value or "0", re.I)
    if found is None:
        return 0.0
    scale = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}[(found.group(2) or "ms").lower()]
    return float(found.group(1)) * scale


def named(text: str, schema: pa.Schema) -> Columns:
    """Result columns named as PostgreSQL would name them (``count(*)`` → ``count``) when the
    query text tells; otherwise as the engine named them."""
    names = output_names(text)
    if names is None or len(names) != len(schema):
        names = schema.names
    return [(name, f.type) for name, f in zip(names, schema, strict=True)]


def _guarded(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The engine's batches; anything but a govern error becomes one (no internals leak)."""
    try:
        yield from reader
    except GovernError:
        raise
    except Exception as exc:
        log.warning("stream failed", extra={"error": type(exc).__name__})
        raise SqlError("the query failed while streaming", sqlstate="XX000") from None
