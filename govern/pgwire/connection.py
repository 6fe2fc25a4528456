"""One wire connection: the startup exchange, then the simple and extended query protocols.

See :mod:`govern.pgwire.server` for what the server does; this module is the per-client state
machine: prepared statements and portals by name, the transaction status, skipping to ``Sync``
after an error, and streaming a :class:`~govern.pgwire.cursor.Cursor` with back-pressure.
Every statement that reaches data or the catalog goes through the request lifecycle
(:mod:`govern.pgwire.statements`).

Blocking work runs on the host's thread pools, never on the event loop: logins on their own
small pool, so that slow statements of other sessions can never delay a login; statements on
the work pool. A session ends after ``pg_idle_timeout`` seconds without a message and after
``pg_session_lifetime`` seconds in all (``FATAL 57P05`` / ``57P01``), and as soon as a
statement finds that its credentials or purpose no longer hold (``FATAL 28P01`` / ``3D000``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlglot
from sqlglot import exp

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Call, Password
from govern.errors import (
    AuthenticationFailed,
    GovernError,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PurposeNotEntitled,
    SqlError,
    Unsupported,
)
from govern.pgwire import protocol as wire
from govern.pgwire.catalog import catalog_parameter_types
from govern.pgwire.copy import copy_chunks, copy_out_response, parse_copy
from govern.pgwire.cursor import CHUNK_ROWS, Columns, Cursor, describe_rows
from govern.pgwire.protocol import Fields, ProtocolViolation, error_response, sqlstate
from govern.pgwire.session import REPORTED, Session
from govern.pgwire.sqlcursors import parse_declare, parse_execute, parse_fetch, parse_prepare
from govern.pgwire.statements import SessionEnded, Statements, classify
from govern.pgwire.types import decode_param

__all__ = ["Connection", "Host", "tls_context"]

log = logging.getLogger("govern.pgwire")

T = TypeVar("T")

STARTUP_TIMEOUT = 30.0  # seconds a client has to finish the startup and password exchange
MAX_STATEMENTS = 1_000  # named prepared statements (and portals) one connection may hold
_TXN_END = ("ROLLBACK", "ABORT", "COMMIT", "END")


@dataclass
class Host:
    """What a connection needs from its server: the gateway, two thread pools, and the way to
    reach another connection for a CancelRequest."""

    gateway: Gateway
    logins: Executor
    work: Executor
    cancel: Callable[[int, int], Awaitable[None]]
    tls: ssl.SSLContext | None = None  # with pg_tls_cert/pg_tls_key: SSLRequest is answered 'S'


@dataclass
class Statement:
    name: str
    text: str
    kind: str  # empty | local | catalog | query
    param_oids: list[int]
    nparams: int = 0


@dataclass
class Portal:
    name: str
    statement: Statement
    params: list[Any]
    formats: list[int]
    cursor: Cursor | None = None
    done: bool = False


class Connection:
    """One client: the startup exchange, then messages until Terminate, disconnect or a limit."""

    def __init__(self, host: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int) -> None:
        self.host = host
        self.gw = host.gateway
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.secret = secrets.randbits(32)
        self.out: list[bytes] = []
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.skip = False  # an extended-protocol error: ignore messages until Sync
        self.session: Session | None = None
        self.runner: Statements | None = None
        self.active: Cursor | None = None
        self.limit = max(self.gw.settings.sql_max_request_bytes, 65_536)
        self.started = time.monotonic()

    # -- plumbing --------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)

    async def flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.writer.write(data)
            self.out.clear()
            self.gw.metrics.pg_bytes.labels(direction="out").inc(len(data))
        await self.writer.drain()

    async def work(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking statement work on the host's work pool."""
        return await asyncio.get_running_loop().run_in_executor(self.host.work, lambda: fn(*args))

    async def serve(self) -> None:
        try:
            if await asyncio.wait_for(self.startup(), STARTUP_TIMEOUT):
                await self.loop()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except TimeoutError:
            await self._fatal("57P05", "terminating connection: the startup took too long")
        except SessionEnded as exc:
            await self._fatal(sqlstate(exc.error), f"terminating connection: {exc.error.detail}")
        except ProtocolViolation as exc:
            await self._fatal("08P01", str(exc))
        except LimitExceeded as exc:
            await self._fatal("54000", exc.detail)
        except asyncio.CancelledError:
            await self._fatal("57P01", "terminating connection: the server is shutting down")
            raise
        except Exception:
            log.exception("wire connection failed", extra={"connection": self.pid})
            await self._fatal("XX000", "internal error; it has been logged")
        finally:
            await self._cleanup()

    async def _fatal(self, code: str, text: str, **fields: Any) -> None:
        self.send(error_response(code, text, severity="FATAL", **fields))
        with contextlib.suppress(Exception):
            await self.flush()

    async def _cleanup(self) -> None:
        for portal in list(self.portals.values()):
            await self._close_portal(portal)
        self.portals.clear()
        if self.runner is not None:
            self.runner.close()
        with contextlib.suppress(Exception):
            self.writer.close()
            await self.writer.wait_closed()

    async def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancelled.set()  # a query still running in its worker stops (57014)
        cursor = self.active
        if cursor is not None:
            await self.work(cursor.close)

    # -- startup ---------------------------------------------------------------------------------
    async def startup(self) -> bool:
        tls = False
        while True:
            code, payload = await wire.read_startup(self.reader, 10_000)
            if code == wire.SSL_REQUEST and self.host.tls is not None and not tls:
                self.writer.write(b"S")  # standard negotiation: 'S', then the TLS handshake
                await self.writer.drain()
                await self.writer.start_tls(self.host.tls)
                tls = True
                continue
            if code in (wire.SSL_REQUEST, wire.GSSENC_REQUEST):
                self.writer.write(wire.SSL_REFUSED)
                await self.writer.drain()
                continue
            break
        if code != wire.CANCEL_REQUEST:
            self.gw.metrics.pg_connections.labels(transport="tls" if tls else "plain").inc()
        if not tls and self.host.tls is not None and self.gw.settings.pg_tls_required \
                and not _loopback(self.writer):
            await self._fatal("28000", "this server requires TLS for clients not on this machine",
                              hint="connect with sslmode=require")
            return False
        while True:
            if code == wire.CANCEL_REQUEST:
                if len(payload) >= 8:
                    pid, secret = struct.unpack("!iI", payload[:8])
                    await self.host.cancel(pid, secret)
                return False
            break
        if code >> 16 != 3:
            await self._fatal("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
                                       "govern speaks protocol 3.0")
            return False
        params = wire.startup_parameters(payload)
        unknown = sorted(k for k in params if k.startswith("_pq_."))
        if code & 0xFFFF or unknown:  # ask for 3.0, without protocol extensions
            body = struct.pack("!ii", 0, len(unknown)) + b"".join(k.encode() + b"\x00" for k in unknown)
            self.send(wire.message(b"v", body))
        user = params.get("user", "")
        database = params.get("database") or user
        if not user:
            await self._fatal("28000", "no user name given: the user is the principal")
            return False
        if params.get("replication") not in (None, "false", "0", "off", "no"):
            await self._fatal("0A000", "replication connections are not supported")
            return False
        self.send(wire.authentication(3))  # AuthenticationCleartextPassword
        await self.flush()
        kind, body = await wire.read_message(self.reader, 10_000)
        if kind != b"p":
            raise ProtocolViolation("expected a password message")
        credentials = Password(user, Fields(body).cstring())
        loop = asyncio.get_running_loop()
        refusal = await loop.run_in_executor(self.host.logins, self._login, credentials, database)
        if isinstance(refusal, AuthenticationFailed):
            await self._fatal("28P01", f'password authentication failed for user "{user}"',
                              hint="the password is one of the principal's API keys")
            return False
        if isinstance(refusal, PurposeNotEntitled):
            purposes = refusal.extra.get("purposes") or []
            await self._fatal("3D000", f'database "{database}" is not a purpose {user} may use',
                              detail="the database name is the purpose of the session",
                              hint="connect to one of: " + (", ".join(purposes) or "(none)"))
            return False
        if refusal is not None:
            await self._fatal(sqlstate(refusal), refusal.detail)
            return False
        session = Session(user=user, database=database)
        try:
            for key, value in _startup_settings(params).items():
                session.set(key, value)
        except GovernError as exc:
            await self._fatal(sqlstate(exc), exc.detail)
            return False
        self.session = session
        self.runner = Statements(self.gw, credentials, session, self.pid)
        self.send(wire.authentication(0))
        for name in REPORTED:
            self.send(wire.parameter_status(name, session.values[name]))
        self.send(wire.backend_key_data(self.pid, self.secret))
        self.send(wire.ready_for_query(session.status))
        await self.flush()
        log.info("wire session", extra={"connection": self.pid, "principal": user, "purpose": database})
        return True

    def _login(self, credentials: Password, database: str) -> GovernError | None:
        """The session's first exchange: credentials and purpose; audited as ``connect``."""
        call = Call("pgwire", "connect", "connect",
                    extra={"connection": self.pid, "user": credentials.user[:200], "database": database[:200]})
        try:
            with self.gw.exchange(call) as ex:
                ex.authenticate(credentials)
                ex.declare(database)
                ex.finish()
        except GovernError as exc:
            return exc
        return None

    # -- the message loop ------------------------------------------------------------------------
    def _timeout(self) -> float:
        settings = self.gw.settings
        left = settings.pg_session_lifetime - (time.monotonic() - self.started)
        return max(0.0, min(settings.pg_idle_timeout, left))

    async def _next_message(self) -> tuple[bytes, bytes]:
        try:
            kind, payload = await asyncio.wait_for(wire.read_message(self.reader, self.limit), self._timeout())
            self.gw.metrics.pg_bytes.labels(direction="in").inc(len(payload) + 5)
            return kind, payload
        except TimeoutError:
            settings = self.gw.settings
            if time.monotonic() - self.started >= settings.pg_session_lifetime:
                raise _Limit("57P01", f"terminating connection: sessions last at most "
                                      f"{settings.pg_session_lifetime:g} s (pg_session_lifetime)") from None
            raise _Limit("57P05", f"terminating connection due to idle-session timeout "
                                  f"({settings.pg_idle_timeout:g} s, pg_idle_timeout)") from None

    async def loop(self) -> None:
        handlers = {b"P": self.parse, b"B": self.bind, b"D": self.describe, b"E": self.execute,
                    b"C": self.close}
        names = {b"P": "parse", b"B": "bind", b"D": "describe", b"E": "execute", b"C": "close"}
        while True:
            try:
                kind, payload = await self._next_message()
            except _Limit as limit:
                await self._fatal(limit.code, limit.text)
                return
            if kind == b"X":
                return
            if kind == b"S":
                await self.sync()
                continue
            if kind == b"H":
                await self.flush()
                continue
            if self.skip or kind in (b"d", b"c", b"f"):  # skipping, or stray COPY data
                continue
            if kind == b"Q":
                await self.simple(Fields(payload).cstring())
                continue
            handler = handlers.get(kind)
            try:
                if handler is None:
                    raise Unsupported(f"protocol message {kind.decode('latin-1')!r} is not supported",
                                      sqlstate="08P01")
                await handler(Fields(payload))
            except GovernError as exc:
                await self._audit_refusal(names.get(kind, "message"), exc)
                self.error(exc)
                self.skip = True
            except (ProtocolViolation, SessionEnded):
                raise
            except Exception:
                log.exception("wire message failed", extra={"connection": self.pid})
                self.error(SqlError("internal error; it has been logged", sqlstate="XX000"))
                self.skip = True

    def error(self, exc: GovernError, offset: int = 0) -> None:
        assert self.session is not None
        position = exc.extra.get("position")
        purposes = exc.extra.get("purposes")
        hint = ("purposes available: " + (", ".join(purposes) or "none")) if isinstance(purposes, list) else None
        self.send(error_response(sqlstate(exc), exc.detail, hint=hint,
                                 position=offset + position + 1 if isinstance(position, int) else None))
        if self.session.in_transaction:
            self.session.failed = True

    # -- simple query ----------------------------------------------------------------------------
    async def simple(self, text: str) -> None:
        assert self.session is not None
        self.statements.pop("", None)
        await self._close_portal(self.portals.pop("", None))
        parts = wire.split_statements(text)
        if not parts:
            self.send(wire.EMPTY_QUERY)
        for offset, part in parts:
            try:
                await self._run_simple(part)
            except GovernError as exc:
                await self._audit_refusal("query", exc, part)
                self.error(exc, offset)
                break
            except SessionEnded:
                raise
            except Exception:
                log.exception("wire query failed", extra={"connection": self.pid})
                self.error(SqlError("internal error; it has been logged", sqlstate="XX000"))
                break
        self.send(wire.ready_for_query(self.session.status))
        await self.flush()

    def _count(self, kind: str, exc: BaseException | None) -> None:
        """``govern_pgwire_queries_total{kind, outcome}`` (both from fixed sets)."""
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, GovernError) and sqlstate(exc) == "57014":
            outcome = "cancelled"
        else:
            outcome = "error"
        self.gw.metrics.pg_queries.labels(kind=kind if kind in _KINDS else "other", outcome=outcome).inc()

    async def _run_simple(self, text: str) -> None:
        assert self.runner is not None
        kind = "other"
        try:
            kind = classify(text, self.runner.datasets())
            await self._run_kind(kind, text)
        except BaseException as exc:
            self._count(kind, exc)
            raise
        self._count(kind, None)

    async def _run_kind(self, kind: str, text: str) -> None:
        assert self.runner is not None and self.session is not None
        await self._check_transaction(kind, text)
        if kind == "empty":
            self.send(wire.EMPTY_QUERY)
            return
        if kind == "copy":
            await self._copy(text)
            return
        if kind in _SQL_STATEMENTS:
            await self._sql_statement(kind, text, [], [], describe=True)
            return
        cursor = await self._start(kind, text, [])
        if cursor.columns is not None:
            cursor.prepare([], self.session)
            self.send(cursor.row_description([]))
            await self._stream(cursor, 0)
        await self._complete(cursor)

    # -- extended query --------------------------------------------------------------------------
    async def parse(self, f: Fields) -> None:
        assert self.runner is not None
        name, text = f.cstring(), f.cstring()
        oids = [f.uint32() for _ in range(f.int16())]
        if name and name in self.statements:
            raise SqlError(f'prepared statement "{name}" already exists', sqlstate="42P05")
        if len(self.statements) >= MAX_STATEMENTS:
            raise LimitExceeded(f"a connection may hold at most {MAX_STATEMENTS} prepared statements",
                                sqlstate="54000")
        kind = classify(text, self.runner.datasets())
        try:
            await self._parse(name, text, oids, kind)
        except BaseException as exc:  # a statement refused at Parse is a statement that failed
            self._count(kind, exc)
            raise

    async def _parse(self, name: str, text: str, oids: list[int], kind: str) -> None:
        assert self.runner is not None
        if len(wire.split_statements(text)) > 1:
            raise SqlError("cannot insert multiple commands into a prepared statement", sqlstate="42601",
                           text=text)
        inferred: list[int] = []
        if kind == "query":  # validated now (audited, under a read slot), as PostgreSQL parses at Parse
            inferred = await self.work(self.runner.parse, text)
        elif kind == "catalog":
            inferred = catalog_parameter_types(text, _catalog_parameters(text))
        elif kind == "declare":  # the cursor's query is validated now, its parameters typed
            query = parse_declare(text).query
            if classify(query, self.runner.datasets()) == "query":
                inferred = await self.work(self.runner.parse, query)
            else:
                inferred = catalog_parameter_types(query, _catalog_parameters(query))
        # a type the client names wins; the others are inferred (govern.pgwire.params)
        types = [oids[i] if i < len(oids) and oids[i] else inferred[i] if i < len(inferred) else 25
                 for i in range(max(len(oids), len(inferred)))]
        self.statements[name] = Statement(name, text, kind, types, len(inferred))
        self.send(wire.PARSE_COMPLETE)

    async def bind(self, f: Fields) -> None:
        assert self.runner is not None
        portal_name, name = f.cstring(), f.cstring()
        param_formats = [f.int16() for _ in range(f.int16())]
        values = [f.value() for _ in range(f.int16())]
        result_formats = [f.int16() for _ in range(f.int16())]
        statement = self._statement(name)
        if portal_name and portal_name in self.portals:
            raise SqlError(f'cursor "{portal_name}" already exists', sqlstate="42P03")
        if len(self.portals) >= MAX_STATEMENTS:
            raise LimitExceeded(f"a connection may hold at most {MAX_STATEMENTS} portals", sqlstate="54000")
        if any(fmt not in (0, 1) for fmt in param_formats + result_formats):
            raise ProtocolViolation("invalid format code")
        await self._close_portal(self.portals.pop(portal_name, None))
        try:
            params = [decode_param(statement.param_oids[i] if i < len(statement.param_oids) else 0,
                                   _format(param_formats, i) == 1, value, i + 1) for i, value in enumerate(values)]
        except GovernError as exc:
            exc.extra.setdefault("text", statement.text)
            raise
        self.portals[portal_name] = Portal(portal_name, statement, params, result_formats)
        self.send(wire.BIND_COMPLETE)

    async def describe(self, f: Fields) -> None:
        what, name = f.byte(), f.cstring()
        try:
            await self._describe_message(what, name)
        except GovernError as exc:  # a statement refused at Describe (an unknown column…) failed
            target = self.statements.get(name) if what == b"S" else self.portals.get(name)
            kind = target.kind if isinstance(target, Statement) else target.statement.kind if target else "other"
            self._count(kind, exc)
            raise

    async def _describe_message(self, what: bytes, name: str) -> None:
        assert self.runner is not None and self.session is not None
        if what == b"S":
            statement = self._statement(name)
            columns = await self._describe(statement, None)
            self.send(wire.parameter_description(statement.param_oids))
            self.send(wire.NO_DATA if columns is None else describe_rows(columns, []))
            return
        if what != b"P":
            raise ProtocolViolation("Describe needs 'S' or 'P'")
        portal = self._portal(name)
        if portal.cursor is not None:  # already running (a suspended portal): its own columns
            columns = portal.cursor.columns
        else:  # the shape over empty views, with the bound values: nothing is executed
            columns = await self._describe(portal.statement, portal.params)
        self.send(wire.NO_DATA if columns is None else describe_rows(columns, portal.formats))

    async def execute(self, f: Fields) -> None:
        portal = self._portal(f.cstring())
        max_rows = f.int32()
        try:
            await self._execute(portal, max_rows)
        except BaseException as exc:
            self._count(portal.statement.kind, exc)
            raise
        self._count(portal.statement.kind, None)

    async def _execute(self, portal: Portal, max_rows: int) -> None:
        assert self.session is not None
        statement = portal.statement
        if statement.kind == "empty":
            self.send(wire.EMPTY_QUERY)
            return
        if portal.done:
            self.send(wire.command_complete("SELECT 0" if statement.kind in ("query", "catalog") else "SET"))
            return
        await self._check_transaction(statement.kind, statement.text)
        if statement.kind == "copy":
            portal.done = True
            await self._copy(statement.text)
            return
        if statement.kind in _SQL_STATEMENTS:
            portal.done = True
            await self._sql_statement(statement.kind, statement.text, portal.params, portal.formats,
                                      describe=False)
            return
        cursor = await self._portal_cursor(portal)
        if cursor.columns is not None:
            if not await self._stream(cursor, max(0, max_rows)):
                self.send(wire.PORTAL_SUSPENDED)
                return
        portal.done = True
        await self._complete(cursor)

    async def close(self, f: Fields) -> None:
        what, name = f.byte(), f.cstring()
        if what == b"S":
            statement = self.statements.pop(name, None)
            for portal in [p for p in self.portals.values() if p.statement is statement and statement]:
                await self._close_portal(self.portals.pop(portal.name))
        elif what == b"P":
            await self._close_portal(self.portals.pop(name, None))
        else:
            raise ProtocolViolation("Close needs 'S' or 'P'")
        self.send(wire.CLOSE_COMPLETE)

    async def sync(self) -> None:
        assert self.session is not None
        self.skip = False
        if not self.session.in_transaction:
            await self._close_portals()
        self.send(wire.ready_for_query(self.session.status))
        await self.flush()

    # -- running ---------------------------------------------------------------------------------
    def _statement(self, name: str) -> Statement:
        statement = self.statements.get(name)
        if statement is None:
            raise NotFound(f'prepared statement "{name}" does not exist', sqlstate="26000")
        return statement

    def _portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise NotFound(f'portal "{name}" does not exist', sqlstate="34000")
        return portal

    async def _audit_refusal(self, route: str, exc: GovernError, text: str | None = None) -> None:
        """Give a refusal that no statement's exchange recorded (a protocol error, an unknown
        portal, a bad parameter, a session statement refused) its one audit record."""
        if exc.recorded or self.runner is None:
            return
        text = text if text is not None else exc.extra.get("text")
        try:
            await self.work(self.runner.refuse, route, route, text if isinstance(text, str) else None, exc)
        except GovernError:
            pass

    async def _check_transaction(self, kind: str, text: str) -> None:
        assert self.session is not None
        if self.session.failed:
            first = wire.strip_comments(text).split(None, 1)
            if not first or first[0].upper().rstrip(";") not in _TXN_END:
                raise SqlError("current transaction is aborted, commands ignored until end of transaction block",
                               sqlstate="25P02", text=text)

    async def _start(self, kind: str, text: str, params: list[Any]) -> Cursor:
        assert self.runner is not None
        if kind == "local":
            return self.runner.local(text)
        if kind == "catalog":
            return await self.work(self.runner.catalog, text, params)
        return await self.work(self.runner.query, text, params)

    async def _sql_statement(self, kind: str, text: str, params: list[Any], formats: list[int], *,
                             describe: bool) -> None:
        """DECLARE / FETCH / MOVE / PREPARE / EXECUTE (:mod:`govern.pgwire.sqlcursors`);
        ``describe``: send the RowDescription first (the simple query protocol)."""
        assert self.runner is not None and self.session is not None
        if kind == "declare":
            declare = parse_declare(text)
            if not self.session.in_transaction:
                raise SqlError("DECLARE CURSOR can only be used in transaction blocks", sqlstate="25P01")
            if declare.name in self.portals:
                raise SqlError(f'cursor "{declare.name}" already exists', sqlstate="42P03")
            inner = classify(declare.query, self.runner.datasets())
            if inner not in ("query", "catalog"):
                raise SqlError("DECLARE needs a query: DECLARE name CURSOR FOR SELECT …", sqlstate="42601")
            statement = Statement(declare.name, declare.query, inner, [])
            self.portals[declare.name] = Portal(declare.name, statement, params, [1] if declare.binary else [])
            self.send(wire.command_complete("DECLARE CURSOR"))
            return
        if kind == "fetch":
            fetch = parse_fetch(text)
            portal = self._portal(fetch.name)
            cursor = await self._portal_cursor(portal)
            if describe and not fetch.move:
                self.send(cursor.row_description(portal.formats))
            before = cursor.sent
            if fetch.count >= 0 and not cursor.finished:
                if fetch.move:
                    while not cursor.finished and (fetch.count == 0 or cursor.sent - before < fetch.count):
                        want = CHUNK_ROWS if fetch.count == 0 else min(CHUNK_ROWS, fetch.count - (cursor.sent - before))
                        await self.work(cursor.fetch, want)
                else:
                    await self._stream(cursor, fetch.count)
            self.send(wire.command_complete(f"{'MOVE' if fetch.move else 'FETCH'} {cursor.sent - before}"))
            return
        if kind == "prepare":
            prepare = parse_prepare(text)
            if prepare.name in self.statements:
                raise SqlError(f'prepared statement "{prepare.name}" already exists', sqlstate="42P05")
            inner = classify(prepare.query, self.runner.datasets())
            if inner not in ("query", "catalog"):
                raise SqlError("PREPARE needs a query: PREPARE name AS SELECT …", sqlstate="0A000")
            types = await self.work(self.runner.parse, prepare.query) if inner == "query" else []
            self.statements[prepare.name] = Statement(prepare.name, prepare.query, inner, types, len(types))
            self.send(wire.command_complete("PREPARE"))
            return
        # EXECUTE name (arguments)
        execute = parse_execute(text)
        prepared = self._statement(execute.name)
        values = sql_arguments(execute.arguments)
        values = [decode_param(prepared.param_oids[i] if i < len(prepared.param_oids) else 25, False,
                               None if v is None else v.encode("utf-8"), i + 1) for i, v in enumerate(values)]
        cursor = await self._start(prepared.kind, prepared.text, values)
        assert cursor.columns is not None
        cursor.prepare(formats, self.session)
        if describe:
            self.send(cursor.row_description(formats))
        await self._stream(cursor, 0)
        self.send(wire.command_complete(cursor.command_tag()))

    async def _copy(self, text: str) -> None:
        """``COPY (query) TO STDOUT``: the query through its usual audited path, its rows as
        CopyData (:mod:`govern.pgwire.copy`)."""
        assert self.runner is not None and self.session is not None
        spec = parse_copy(text)
        kind = classify(spec.query, self.runner.datasets())
        if kind not in ("query", "catalog"):
            raise Unsupported("COPY needs a query: COPY (SELECT …) TO STDOUT", sqlstate="0A000")
        cursor = await self._start(kind, spec.query, [])
        if cursor.columns is None:
            raise Unsupported("COPY needs a query that returns rows", sqlstate="0A000")
        self.active = cursor
        try:
            chunks = copy_chunks(cursor, spec, self.session.tz)
            self.send(copy_out_response(spec, len(cursor.columns)))
            while True:
                chunk = await self.work(next, chunks, None)
                if chunk is None:
                    break
                self.send(chunk)
                await self.flush()
        except BaseException:
            await self._abandon(cursor)
            raise
        finally:
            self.active = None
        self.send(wire.message(b"c"))
        self.send(wire.command_complete(f"COPY {cursor.sent}"))

    async def _portal_cursor(self, portal: Portal) -> Cursor:
        assert self.session is not None
        if portal.cursor is None:
            cursor = await self._start(portal.statement.kind, portal.statement.text, portal.params)
            portal.cursor = cursor
            try:
                cursor.prepare(portal.formats, self.session)
            except GovernError:
                await self.work(cursor.close)
                raise
        return portal.cursor

    async def _describe(self, statement: Statement, params: list[Any] | None) -> Columns | None:
        assert self.runner is not None
        runner, text = self.runner, statement.text
        if statement.kind in ("empty", "copy", "declare", "prepare"):
            return None
        if statement.kind == "fetch":
            target = self._portal(parse_fetch(text).name)
            if target.cursor is not None:
                return target.cursor.columns
            return await self._describe(target.statement, target.params)
        if statement.kind == "execute":
            prepared = self._statement(parse_execute(text).name)
            return await self._describe(prepared, None)
        if statement.kind == "local":
            if not _is_show(text):
                return None
            return [(name, None) for name, _type in runner.local(text).columns or []]
        if statement.kind == "catalog":
            return await self.work(runner.describe_catalog, text, statement.nparams)
        return await self.work(runner.describe_query, text, params)

    async def _stream(self, cursor: Cursor, max_rows: int) -> bool:
        """Send rows until the cursor ends (True) or ``max_rows`` were sent (False)."""
        sent = 0
        self.active = cursor
        try:
            while True:
                want = CHUNK_ROWS if max_rows == 0 else min(CHUNK_ROWS, max_rows - sent)
                data, count, done = await self.work(cursor.fetch, want)
                sent += count
                if data:
                    self.send(data)
                    await self.flush()
                if done:
                    return True
                if max_rows and sent >= max_rows:
                    return False
        except BaseException:  # a failed stream, a client gone, a server stopping: the stream records it
            await self._abandon(cursor)
            raise
        finally:
            self.active = None

    async def _abandon(self, cursor: Cursor) -> None:
        """Close a cursor whose stream failed (its audit record says so), in the work pool — or
        right here when this task itself is being cancelled."""
        try:
            await self.work(cursor.close)
        except asyncio.CancelledError:
            cursor.close()

    async def _complete(self, cursor: Cursor) -> None:
        assert self.session is not None
        result = cursor.local
        if result is not None:
            for name in result.reported:
                self.send(wire.parameter_status(name, self.session.values.get(name, "")))
            if result.deallocate == "ALL" or result.discard:
                self.statements.clear()
            elif result.deallocate:
                if self.statements.pop(result.deallocate, None) is None:
                    raise NotFound(f'prepared statement "{result.deallocate}" does not exist', sqlstate="26000")
            if result.discard or result.tag in ("COMMIT", "ROLLBACK") or result.close == "ALL":
                await self._close_portals(keep_unnamed=True)
            elif result.close:
                if result.close not in self.portals:
                    raise NotFound(f'cursor "{result.close}" does not exist', sqlstate="34000")
                await self._close_portal(self.portals.pop(result.close))
        for notice in cursor.notices:  # e.g. the groups a min_group result policy folded away
            self.send(wire.error_response("01000", notice, severity="NOTICE", notice=True))
        self.send(wire.command_complete(cursor.command_tag()))

    async def _close_portal(self, portal: Portal | None) -> None:
        if portal is not None and portal.cursor is not None and not portal.cursor.closed:
            await self.work(portal.cursor.close)

    async def _close_portals(self, keep_unnamed: bool = False) -> None:
        for name in list(self.portals):
            if keep_unnamed and name == "":
                continue
            await self._close_portal(self.portals.pop(name))


class _Limit(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    if len(formats) == 1:
        return formats[0]
    if i >= len(formats):
        raise InvalidRequest("fewer format codes than parameters", sqlstate="08P01")
    return formats[i]


_SQL_STATEMENTS = ("declare", "fetch", "prepare", "execute")
_KINDS = frozenset({"empty", "local", "catalog", "query", "copy", *_SQL_STATEMENTS})


def sql_arguments(text: str) -> list[str | None]:
    """The values of ``EXECUTE name (1, 'a', NULL)`` as text (NULL: None), for decoding by the
    prepared statement's parameter types."""
    if not text.strip():
        return []
    try:
        tree = sqlglot.parse_one(f"SELECT {text}", read="postgres")
    except Exception:
        raise SqlError("syntax error in EXECUTE arguments", sqlstate="42601") from None
    out: list[str | None] = []
    for node in (tree.selects if isinstance(tree, exp.Select) else []):
        while isinstance(node, (exp.Cast, exp.Paren)):
            node = node.this
        if isinstance(node, exp.Null):
            out.append(None)
        elif isinstance(node, exp.Literal):
            out.append(node.this)
        elif isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
            out.append("-" + node.this.this)
        elif isinstance(node, exp.Boolean):
            out.append("true" if node.this else "false")
        else:
            raise SqlError("EXECUTE arguments must be constants", sqlstate="0A000")
    return out


def _loopback(writer: asyncio.StreamWriter) -> bool:
    peer = writer.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return not host  # a Unix socket
        

def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The wire server's TLS context (TLS 1.2 or later) for ``pg_tls_cert``/``pg_tls_key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def _is_show(text: str) -> bool:
    words = wire.strip_comments(text).split(None, 1)
    return bool(words) and words[0].upper() == "SHOW"


def _catalog_parameters(text: str) -> int:
    numbers = [int(n) for n in re.findall(r"\$(\d+)", wire.strip_comments(text))]
    return max(numbers, default=0)


def _startup_settings(params: dict[str, str]) -> dict[str, str]:
    """Settings a client sends in its startup packet, including ``options='-c name=value'``."""
    out = {k: v for k, v in params.items()
           if k not in ("user", "database", "options", "replication") and not k.startswith("_pq_.")}
    words = params.get("options", "").split()
    for i, word in enumerate(words):
        setting = None
        if word == "-c" and i + 1 < len(words):
            setting = words[i + 1]
        elif word.startswith("-c") and len(word) > 2:
            setting = word[2:]
        elif word.startswith("--"):
            setting = word[2:]
        if setting and "=" in setting:
            key, value = setting.split("=", 1)
            out[key.replace("-", "_")] = value
    return out
