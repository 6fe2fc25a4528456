"""One wire connection: the startup exchange, then the simple and extended query protocols.

See :mod:`govern.pgwire.server` for what the server does; this module is the per-client state
machine: prepared statements and portals by name, the transaction status, skipping to ``Sync``
after an error, and streaming a :class:`~govern.pgwire.query.Cursor` with back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from govern.deliver.gateway import RequestContext
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
from govern.pgwire.protocol import Fields, ProtocolViolation, error_response, sqlstate
from govern.pgwire.query import CHUNK_ROWS, Cursor, Runner, classify
from govern.pgwire.session import REPORTED, Session
from govern.pgwire.types import decode_param
from govern.pgwire import protocol as wire
from govern.sql.validate import validate

if TYPE_CHECKING:
    from govern.pgwire.server import PgServer

__all__ = ["Connection"]

log = logging.getLogger("govern.pgwire")

STARTUP_TIMEOUT = 30.0  # seconds a client has to finish the startup and password exchange
MAX_STATEMENTS = 1_000  # named prepared statements (and portals) one connection may hold
_TXN_END = ("ROLLBACK", "ABORT", "COMMIT", "END")


@dataclass
class Statement:
    name: str
    text: str
    kind: str  # empty | local | catalog | query
    param_oids: list[int]


@dataclass
class Portal:
    name: str
    statement: Statement
    params: list[Any]
    formats: list[int]
    cursor: Cursor | None = None
    done: bool = False


class Connection:
    """One client: the startup exchange, then messages until Terminate or disconnect."""

    def __init__(self, server: PgServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 pid: int) -> None:
        self.server = server
        self.gw = server.gateway
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.secret = secrets.randbits(32)
        self.out: list[bytes] = []
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.skip = False  # an extended-protocol error: ignore messages until Sync
        self.session: Session | None = None
        self.runner: Runner | None = None
        self.active: Cursor | None = None
        self.limit = max(self.gw.settings.sql_max_request_bytes, 65_536)

    # -- plumbing --------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)

    async def flush(self) -> None:
        if self.out:
            self.writer.write(b"".join(self.out))
            self.out.clear()
        await self.writer.drain()

    async def serve(self) -> None:
        try:
            if await asyncio.wait_for(self.startup(), STARTUP_TIMEOUT):
                await self.loop()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
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
            await self._close_portal(portal, "the connection closed before its last row was sent")
        self.portals.clear()
        if self.runner is not None:
            self.runner.close()
        with contextlib.suppress(Exception):
            self.writer.close()
            await self.writer.wait_closed()

    async def cancel(self) -> None:
        cursor = self.active
        if cursor is not None and cursor.release is not None:
            await asyncio.to_thread(cursor.release)

    # -- startup ---------------------------------------------------------------------------------
    async def startup(self) -> bool:
        while True:
            code, payload = await wire.read_startup(self.reader, 10_000)
            if code in (wire.SSL_REQUEST, wire.GSSENC_REQUEST):
                self.writer.write(wire.SSL_REFUSED)
                await self.writer.drain()
                continue
            if code == wire.CANCEL_REQUEST:
                if len(payload) >= 8:
                    pid, secret = struct.unpack("!iI", payload[:8])
                    await self.server.cancel(pid, secret)
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
        password = Fields(body).cstring()
        ctx = RequestContext(request_id=uuid.uuid4().hex, route="pgwire", action="connect",
                             extra={"protocol": "pgwire", "user": user[:200], "database": database[:200]})
        try:
            principal = await asyncio.to_thread(self.gw.authenticator.authenticate_password, user, password)
        except AuthenticationFailed as exc:
            await asyncio.to_thread(self.gw.record_denial, ctx, exc)
            await self._fatal("28P01", f'password authentication failed for user "{user}"',
                              hint="the password is one of the principal's API keys")
            return False
        ctx.principal, ctx.purpose = principal, database
        purposes = sorted(self.gw.governor.state.decider.purposes(principal))
        if database not in purposes:
            exc2 = PurposeNotEntitled(f"principal '{principal.name}' may not act under purpose '{database}'",
                                      purposes=purposes)
            await asyncio.to_thread(self.gw.record_denial, ctx, exc2)
            await self._fatal("3D000", f'database "{database}" is not a purpose {principal.name} may use',
                              detail="the database name is the purpose of the session",
                              hint="connect to one of: " + (", ".join(purposes) or "(none)"))
            return False
        session = Session(user=principal.name, database=database)
        try:
            for key, value in _startup_settings(params).items():
                session.set(key, value)
        except GovernError as exc:
            await self._fatal(sqlstate(exc), exc.detail)
            return False
        self.session = session
        self.runner = Runner(self.gw, principal, session, self.pid)
        self.send(wire.authentication(0))
        for name in REPORTED:
            self.send(wire.parameter_status(name, session.values[name]))
        self.send(wire.backend_key_data(self.pid, self.secret))
        self.send(wire.ready_for_query(session.status))
        await self.flush()
        log.info("wire session", extra={"connection": self.pid, "principal": principal.name,
                                        "purpose": database})
        return True

    # -- the message loop ------------------------------------------------------------------------
    async def loop(self) -> None:
        handlers = {b"P": self.parse, b"B": self.bind, b"D": self.describe, b"E": self.execute,
                    b"C": self.close}
        while True:
            kind, payload = await wire.read_message(self.reader, self.limit)
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
                self.error(exc)
                self.skip = True
            except ProtocolViolation:
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
        assert self.session is not None and self.runner is not None
        self.statements.pop("", None)
        await self._close_portal(self.portals.pop("", None), "replaced by a new query")
        parts = wire.split_statements(text)
        if not parts:
            self.send(wire.EMPTY_QUERY)
        for offset, part in parts:
            try:
                await self._run_simple(part)
            except GovernError as exc:
                self.error(exc, offset)
                break
            except Exception:
                log.exception("wire query failed", extra={"connection": self.pid})
                self.error(SqlError("internal error; it has been logged", sqlstate="XX000"))
                break
        self.send(wire.ready_for_query(self.session.status))
        await self.flush()

    async def _run_simple(self, text: str) -> None:
        assert self.runner is not None and self.session is not None
        kind = classify(text, self.runner.datasets())
        self._check_transaction(text)
        if kind == "empty":
            self.send(wire.EMPTY_QUERY)
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
        if len(wire.split_statements(text)) > 1:
            raise SqlError("cannot insert multiple commands into a prepared statement", sqlstate="42601")
        self.statements[name] = Statement(name, text, classify(text, self.runner.datasets()), oids)
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
        await self._close_portal(self.portals.pop(portal_name, None), "replaced by a new portal")
        try:
            params = [decode_param(statement.param_oids[i] if i < len(statement.param_oids) else 0,
                                   _format(param_formats, i) == 1, value, i + 1) for i, value in enumerate(values)]
        except GovernError as exc:
            if statement.kind == "query":
                await asyncio.to_thread(self.runner.refuse, self.runner.context(statement.text), exc)
            raise
        self.portals[portal_name] = Portal(portal_name, statement, params, result_formats)
        self.send(wire.BIND_COMPLETE)

    async def describe(self, f: Fields) -> None:
        assert self.runner is not None and self.session is not None
        what, name = f.byte(), f.cstring()
        if what == b"S":
            statement = self._statement(name)
            columns, nparams = await self._describe_statement(statement)
            oids = [statement.param_oids[i] if i < len(statement.param_oids) and statement.param_oids[i] else 25
                    for i in range(max(nparams, len(statement.param_oids)))]
            self.send(wire.parameter_description(oids))
            if columns is None:
                self.send(wire.NO_DATA)
            else:
                self.send(Cursor(columns).row_description([]))
            return
        if what != b"P":
            raise ProtocolViolation("Describe needs 'S' or 'P'")
        portal = self._portal(name)
        kind, text = portal.statement.kind, portal.statement.text
        if kind == "empty" or (kind == "local" and not _is_show(text)):
            self.send(wire.NO_DATA)
            return
        cursor = await self._portal_cursor(portal)
        self.send(cursor.row_description(portal.formats) if cursor.columns is not None else wire.NO_DATA)

    async def execute(self, f: Fields) -> None:
        assert self.session is not None
        portal = self._portal(f.cstring())
        max_rows = f.int32()
        statement = portal.statement
        if statement.kind == "empty":
            self.send(wire.EMPTY_QUERY)
            return
        if portal.done:
            self.send(wire.command_complete("SELECT 0" if statement.kind in ("query", "catalog") else "SET"))
            return
        self._check_transaction(statement.text)
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
                await self._close_portal(self.portals.pop(portal.name), "its statement was closed")
        elif what == b"P":
            await self._close_portal(self.portals.pop(name, None), "closed before its last row was sent")
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

    def _check_transaction(self, text: str) -> None:
        assert self.session is not None
        if self.session.failed:
            first = wire.strip_comments(text).split(None, 1)
            if not first or first[0].upper().rstrip(";") not in _TXN_END:
                raise SqlError("current transaction is aborted, commands ignored until end of transaction block",
                               sqlstate="25P02")

    async def _start(self, kind: str, text: str, params: list[Any]) -> Cursor:
        assert self.runner is not None
        if kind == "local":
            return self.runner.local(text)
        if kind == "catalog":
            return await asyncio.to_thread(self.runner.catalog, text, params)
        return await asyncio.to_thread(self.runner.query, text, params)

    async def _portal_cursor(self, portal: Portal) -> Cursor:
        assert self.session is not None
        if portal.cursor is None:
            cursor = await self._start(portal.statement.kind, portal.statement.text, portal.params)
            portal.cursor = cursor
            try:
                cursor.prepare(portal.formats, self.session)
            except GovernError as exc:
                await asyncio.to_thread(cursor.close, f"refused: {exc.detail}")
                raise
        return portal.cursor

    async def _describe_statement(self, statement: Statement) -> tuple[list[Any] | None, int]:
        assert self.runner is not None
        runner, text = self.runner, statement.text
        if statement.kind == "empty":
            return None, 0
        if statement.kind == "local":
            if not _is_show(text):
                return None, 0
            return [(name, None) for name, _type in runner.local(text).columns or []], 0
        if statement.kind == "catalog":
            nparams = _catalog_parameters(text)
            return await asyncio.to_thread(runner.describe_catalog, text, nparams), nparams
        try:
            nparams = validate(text, max_length=self.gw.settings.sql_max_length).parameters
            return await asyncio.to_thread(runner.describe_query, text, None), nparams
        except GovernError as exc:
            await asyncio.to_thread(runner.refuse, runner.context(text), exc)
            raise

    async def _stream(self, cursor: Cursor, max_rows: int) -> bool:
        """Send rows until the cursor ends (True) or ``max_rows`` were sent (False)."""
        sent = 0
        self.active = cursor
        try:
            while True:
                want = CHUNK_ROWS if max_rows == 0 else min(CHUNK_ROWS, max_rows - sent)
                before = cursor.rows
                data, done = await asyncio.to_thread(cursor.fetch, want)
                sent += cursor.rows - before
                if data:
                    self.send(data)
                    await self.flush()
                if done:
                    return True
                if max_rows and sent >= max_rows:
                    return False
        except BaseException as exc:  # a failed stream, a client gone, a server stopping: audit, release
            reason = (f"stream aborted: {exc.slug}: {exc.detail}" if isinstance(exc, GovernError)
                      else "client disconnected" if isinstance(exc, ConnectionError)
                      else f"stream aborted: {type(exc).__name__}")
            try:
                await asyncio.to_thread(cursor.close, reason)
            except asyncio.CancelledError:
                cursor.close(reason)
            raise
        finally:
            self.active = None

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
            if result.discard or result.tag in ("COMMIT", "ROLLBACK"):
                await self._close_portals(keep_unnamed=True)
        self.send(wire.command_complete(cursor.command_tag()))

    async def _close_portal(self, portal: Portal | None, reason: str) -> None:
        if portal is not None and portal.cursor is not None and not portal.cursor.closed:
            await asyncio.to_thread(portal.cursor.close, reason)

    async def _close_portals(self, keep_unnamed: bool = False) -> None:
        for name in list(self.portals):
            if keep_unnamed and name == "":
                continue
            await self._close_portal(self.portals.pop(name), "closed at the end of its transaction")


def _format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    if len(formats) == 1:
        return formats[0]
    if i >= len(formats):
        raise InvalidRequest("fewer format codes than parameters", sqlstate="08P01")
    return formats[i]


def _is_show(text: str) -> bool:
    words = wire.strip_comments(text).split(None, 1)
    return bool(words) and words[0].upper() == "SHOW"


def _catalog_parameters(text: str) -> int:
    try:
        tree = sqlglot.parse_one(text, read="postgres")
    except Exception:  # the catalog reports the syntax error when it runs
        return 0
    numbers = [int(p.name) for p in tree.find_all(exp.Parameter) if p.name.isdigit()]
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

