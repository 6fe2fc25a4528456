"""The Arrow Flight SQL server: ADBC, pyarrow.flight and other Flight SQL clients query masked
views over gRPC, with Arrow all the way.

``govern serve`` runs it next to the HTTP API (``flight_port``; 0 disables it) in a background
thread (:class:`FlightServerThread`). Every call is one exchange with the request lifecycle
(:mod:`govern.flight.calls`): authenticated again, its purpose checked, a read slot and a
deadline taken where it does work, exactly one audit record.

What each Flight RPC does:

``Handshake``
    Basic (user = principal, password = API key) or a bearer (API key, JWT) → a session token
    in the ``authorization`` response header (audited as ``connect``).
``GetFlightInfo`` / ``GetSchema``
    ``CommandStatementQuery`` and ``CommandPreparedStatementQuery``: the result schema, computed
    over empty views (audited as ``describe``), and a ticket that carries the statement;
    metadata commands (``CommandGetSqlInfo``, ``…Catalogs``, ``…DbSchemas``, ``…Tables``,
    ``…TableTypes``): their fixed schema (audited as ``catalog``).
``DoGet``
    Runs what the ticket says: a statement (``sql``, or ``query_dp`` for DP SQL) streamed from
    the SQL worker, or a metadata answer (``catalog``).
``DoPut``
    ``CommandPreparedStatementQuery``: binds one row of parameters and answers with the new
    (self-contained) handle (``bind``). Updates and ingestion are UNIMPLEMENTED: govern is
    read-only.
``DoAction``
    ``CreatePreparedStatement`` (``prepare``: validated and described),
    ``ClosePreparedStatement``, ``SetSessionOptions`` / ``GetSessionOptions`` (the ``catalog``
    option is the purpose), ``CloseSession``.

Anything else (transactions, Substrait, cancellation, ``ListFlights``, ``DoExchange``,
``GetXdbcTypeInfo``, keys) is answered UNIMPLEMENTED, which clients treat as "not supported".
"""

from __future__ import annotations

import logging
import threading
import types
from collections.abc import Callable, Iterator
from typing import TypeVar

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import Message

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.errors import InvalidRequest, Unsupported
from govern.flight import commands
from govern.flight.calls import MIDDLEWARE, AcceptHandshake, CallHeadersFactory, Calls
from govern.flight.handles import Statement, decode, encode
from govern.flight.messages import Messages, blob, pack, text, unpack
from govern.flight.sessions import TOKEN_PREFIX, Sessions

__all__ = ["FlightServerThread", "GovernFlightServer"]

log = logging.getLogger("govern.flight")
R = TypeVar("R")

ACTIONS = {
    "CreatePreparedStatement": "Validate and describe a query; the handle carries it (no server state).",
    "ClosePreparedStatement": "Forget a prepared statement (nothing is kept on the server).",
    "SetSessionOptions": "Set session options: 'catalog' is the purpose of later calls.",
    "GetSessionOptions": "The session's options.",
    "CloseSession": "End the session: its token stops working.",
}
_INVALID_NAME, _INVALID_VALUE = 1, 2  # SetSessionOptionsResult.ErrorValue
_CLOSED = 1  # CloseSessionResult.Status


def anonymous(function: Callable[..., R]) -> Callable[..., R]:
    """``function`` with its code's file name replaced by ``<govern.flight>``: a traceback
    through it shows neither a server path nor a source line."""
    code = function.__code__.replace(co_filename="<govern.flight>")
    clone = types.FunctionType(code, function.__globals__, function.__name__, function.__defaults__,
                               function.__closure__)
    clone.__doc__, clone.__qualname__ = function.__doc__, function.__qualname__
    return clone


class GovernFlightServer(flight.FlightServerBase):
    """Flight SQL over one gateway. Bind with ``location`` (``grpc://host:port``; port 0 picks one)."""

    def __init__(self, gateway: Gateway, location: str, sessions: Sessions | None = None) -> None:
        self.gw = gateway
        self.sessions = sessions or Sessions()
        self.calls = Calls(gateway, self.sessions)
        self.messages = Messages.build()
        super().__init__(location, auth_handler=AcceptHandshake(),
                         middleware={MIDDLEWARE: CallHeadersFactory(self.calls)})

    # -- helpers ---------------------------------------------------------------------------------------
    @property
    def _limit(self) -> int:
        return self.gw.settings.sql_max_request_bytes

    def _command(self, ex: Exchange, data: bytes) -> tuple[str, Message]:
        """The Flight SQL command in ``data`` (after authentication), noted in the record."""
        name, command = unpack(self.messages, data)
        ex.extra["command"] = name
        if command is None:
            raise Unsupported(f"{name} is not supported by govern (a read-only SQL server over masked views)")
        return name, command

    def _statement(self, name: str, command: Message) -> Statement:
        if name == "CommandStatementQuery":
            if command.HasField("transaction_id"):
                raise Unsupported("govern has no transactions: send the query without a transaction id")
            return Statement(text(command, "query"))
        if name in ("CommandPreparedStatementQuery", "TicketStatementQuery"):
            field = "prepared_statement_handle" if name == "CommandPreparedStatementQuery" else "statement_handle"
            return decode(blob(command, field), self._limit)
        raise Unsupported(f"{name} is not supported by govern (a read-only SQL server over masked views)")

    def _scope(self, ex: Exchange, context: flight.ServerCallContext, command: Message) -> list[str]:
        """The catalogs (purposes) a metadata command asks about: the one it names; else the
        purpose the call declares (header, session); else every purpose the caller may use."""
        catalog = commands.catalog_filter(command)
        if catalog is not None:
            if not catalog:
                return []  # "an empty string retrieves those without a catalog": every table has one
            ex.declare(catalog)
            return [catalog]
        headers = self.calls.headers(context)
        credentials_session = self.calls.credentials(headers)[1]
        declared = [p for p in self.calls.purposes(headers, credentials_session) if p and p.strip()]
        if declared:
            ex.declare(*declared)
            assert ex.purpose is not None
            return [ex.purpose]
        assert ex.principal is not None
        purposes = ex.state.decider.purposes(ex.principal)
        ex.extra["catalogs"] = purposes
        return purposes

    def _describe(self, ex: Exchange, context: flight.ServerCallContext,
                  descriptor: flight.FlightDescriptor) -> tuple[pa.Schema, bytes]:
        """Schema and ticket of a descriptor, inside an authenticated exchange."""
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise InvalidRequest("govern answers Flight SQL commands only (a CMD descriptor)")
        name, command = self._command(ex, descriptor.command)
        if name in commands.METADATA:
            ex.action = "catalog"
            if name in ("CommandGetDbSchemas", "CommandGetTables"):
                self._scope(ex, context, command)  # purposes are checked now, not only at DoGet
            ex.admit(seconds=self.gw.settings.sql_timeout)
            schema = commands.metadata_schema(name, command)
            ex.finish()
            return schema, descriptor.command
        statement = self._statement(name, command)
        ex.declare(*self.calls.purposes(self.calls.headers(context), self.calls.credentials(
            self.calls.headers(context))[1], statement.purpose))
        schema = commands.describe(self.gw, ex, statement)
        ex.finish()
        ticket = self.messages.new("TicketStatementQuery", statement_handle=encode(
            Statement(statement.sql, ex.purpose, statement.params)))
        return schema, pack(ticket)

    # -- RPCs ---------------------------------------------------------------------------------------------
    def get_flight_info(self, context: flight.ServerCallContext,
                        descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        with self.calls.exchange(context, "GetFlightInfo", "describe") as ex:
            self.calls.enter(ex, context, purpose=False)
            schema, ticket = self._describe(ex, context, descriptor)
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def get_schema(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor) -> flight.SchemaResult:
        try:
            with self.calls.exchange(context, "GetSchema", "describe") as ex:
                self.calls.enter(ex, context, purpose=False)
                schema, _ticket = self._describe(ex, context, descriptor)
        except flight.FlightError as error:
            error.__traceback__ = None
            raise error from None
        return flight.SchemaResult(schema)

    # pyarrow (through 26) turns a FlightError raised by get_schema into a Python traceback in
    # the status, not into its Flight status (its other RPCs do): the refusal above is raised
    # with no frames of its own, and this method's frame names no file or source line.
    get_schema = anonymous(get_schema)  # type: ignore[assignment]

    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        with self.calls.exchange(context, "DoGet", "sql") as ex:
            _principal, session = self.calls.enter(ex, context, purpose=False)
            name, command = self._command(ex, ticket.ticket)
            if name in commands.METADATA:
                ex.action = "catalog"
                scope = self._scope(ex, context, command) if name in ("CommandGetDbSchemas", "CommandGetTables") \
                    else []
                ex.admit(seconds=self.gw.settings.sql_timeout)
                table = commands.metadata_table(self.gw, ex, name, command, scope)
                ex.finish(rows=table.num_rows, nbytes=table.nbytes)
                return flight.RecordBatchStream(table)
            statement = self._statement(name, command)
            ex.declare(*self.calls.purposes(self.calls.headers(context), session, statement.purpose))
            return commands.run(self.gw, ex, statement)

    def do_put(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
               reader: flight.MetadataRecordBatchReader, writer: flight.FlightMetadataWriter) -> None:
        with self.calls.exchange(context, "DoPut", "bind") as ex:
            _principal, session = self.calls.enter(ex, context, purpose=False)
            name, command = self._command(ex, descriptor.command)
            if name != "CommandPreparedStatementQuery":
                raise Unsupported(f"{name}: govern is read-only (no updates or ingestion)")
            statement = decode(blob(command, "prepared_statement_handle"), self._limit)
            ex.declare(*self.calls.purposes(self.calls.headers(context), session, statement.purpose))
            ex.admit(seconds=self.gw.settings.sql_timeout)
            params = self._parameters(reader)
            handle = encode(Statement(statement.sql, ex.purpose, params))
            result = self.messages.new("DoPutPreparedStatementResult", prepared_statement_handle=handle)
            ex.finish(rows=params.num_rows if params is not None else 0)
        writer.write(pa.py_buffer(result.SerializeToString()))

    def _parameters(self, reader: flight.MetadataRecordBatchReader) -> pa.RecordBatch | None:
        """One row of parameter values, read only up to ``sql_max_request_bytes``."""
        batches, size = [], 0
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is None:
                continue
            size += chunk.data.nbytes
            if size > self._limit:
                raise InvalidRequest(f"parameters may take at most {self._limit} bytes")
            batches.append(chunk.data)
        rows = sum(b.num_rows for b in batches)
        if rows == 0:
            return None
        if rows != 1:
            raise InvalidRequest(f"a query takes one set of parameter values, not {rows}")
        return next(b for b in batches if b.num_rows)

    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[flight.Result]:
        kind = action.type
        body = action.body.to_pybytes() if action.body is not None else b""
        route = kind if kind in ACTIONS else "unknown"
        act = {"CreatePreparedStatement": "prepare", "ClosePreparedStatement": "close"}.get(kind, "session")
        with self.calls.exchange(context, f"DoAction:{route}", act) as ex:
            ex.extra["action"] = kind[:100]
            _principal, session = self.calls.enter(ex, context, purpose=False)
            if kind == "CreatePreparedStatement":
                _name, request = self._typed(ex, body, "ActionCreatePreparedStatementRequest")
                if request.HasField("transaction_id"):
                    raise Unsupported("govern has no transactions: prepare without a transaction id")
                statement = Statement(text(request, "query"))
                ex.declare(*self.calls.purposes(self.calls.headers(context), session))
                schema = commands.describe(self.gw, ex, statement)
                ex.finish()
                result = self.messages.new("ActionCreatePreparedStatementResult",
                                           prepared_statement_handle=encode(Statement(statement.sql, ex.purpose)),
                                           dataset_schema=schema.serialize().to_pybytes())
                return iter([flight.Result(pack(result))])
            if kind == "ClosePreparedStatement":
                self._typed(ex, body, "ActionClosePreparedStatementRequest")
                ex.finish()
                return iter([])
            if kind == "SetSessionOptions":
                return iter([flight.Result(self._set_options(ex, context, body))])
            if kind == "GetSessionOptions":
                self.messages.parse("GetSessionOptionsRequest", body)
                out = self.messages.new("GetSessionOptionsResult")
                for key, value in (session.options if session else {}).items():
                    out.session_options[key].string_value = value
                ex.finish()
                return iter([flight.Result(out.SerializeToString())])
            if kind == "CloseSession":
                token = self._token(context)
                if token is not None:
                    self.sessions.close(token)
                ex.finish()
                return iter([flight.Result(self.messages.new("CloseSessionResult", status=_CLOSED).SerializeToString())])
            raise Unsupported(f"action '{kind[:100]}' is not supported by govern")

    def _typed(self, ex: Exchange, body: bytes, expected: str) -> tuple[str, Message]:
        name, message = self._command(ex, body)
        if name != expected:
            raise InvalidRequest(f"expected {expected}, got {name}")
        return name, message

    def _token(self, context: flight.ServerCallContext) -> str | None:
        auth = self.calls.headers(context).get("authorization") or ""
        scheme, _, value = auth.partition(" ")
        value = value.strip()
        return value if scheme.lower() == "bearer" and value.startswith(TOKEN_PREFIX) else None

    def _set_options(self, ex: Exchange, context: flight.ServerCallContext, body: bytes) -> bytes:
        """``catalog`` (a string) is the purpose of the session's later calls: checked now."""
        request = self.messages.parse("SetSessionOptionsRequest", body)
        token = self._token(context)
        session = self.sessions.get(token) if token else None
        if session is None:
            raise InvalidRequest("session options need a session: authenticate with a Handshake "
                                 "(user = principal, password = API key) first")
        result = self.messages.new("SetSessionOptionsResult")
        options = request.session_options  # type: ignore[attr-defined]
        for key in options:
            value = options[key]
            kind = value.WhichOneof("option_value")
            if key != "catalog":
                result.errors[key].value = _INVALID_NAME
            elif kind is None:
                session.options.pop("catalog", None)
            elif kind != "string_value":
                result.errors[key].value = _INVALID_VALUE
            else:
                ex.declare(value.string_value)
                assert ex.purpose is not None
                session.options["catalog"] = ex.purpose
        ex.finish()
        return bytes(result.SerializeToString())

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        with self.calls.exchange(context, "ListActions", "catalog") as ex:
            self.calls.enter(ex, context, purpose=False)
            ex.finish(rows=len(ACTIONS))
        return list(ACTIONS.items())

    def list_flights(self, context: flight.ServerCallContext, criteria: bytes) -> Iterator[flight.FlightInfo]:
        with self.calls.exchange(context, "ListFlights", "catalog") as ex:
            self.calls.enter(ex, context, purpose=False)
            raise Unsupported("ListFlights is not supported: ask GetTables (Flight SQL) for what you may read")

    def do_exchange(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
                    reader: flight.MetadataRecordBatchReader, writer: flight.MetadataRecordBatchWriter) -> None:
        with self.calls.exchange(context, "DoExchange", "sql") as ex:
            self.calls.enter(ex, context, purpose=False)
            raise Unsupported("DoExchange is not supported by govern")


class FlightServerThread:
    """A :class:`GovernFlightServer` serving in a daemon thread (next to uvicorn)."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self.server: GovernFlightServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start serving; raises OSError (or pyarrow's error) if the port cannot be bound."""
        self.server = GovernFlightServer(self.gateway, f"grpc+tcp://{self.host}:{self.port}")
        self.port = self.server.port
        self._thread = threading.Thread(target=self.server.serve, name="govern-flight", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            if self._thread is not None:
                self._thread.join(timeout)
