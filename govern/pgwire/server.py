"""The PostgreSQL wire server: psql, psycopg, DBeaver and BI tools query masked views.

``govern serve`` runs it next to the HTTP API (``pg_port``, default 6432), on its own asyncio
loop in a background thread (:class:`PgServerThread`). One :class:`Connection` per client:

startup
    ``SSLRequest`` is answered ``S`` and the connection upgraded to TLS when ``pg_tls_cert`` and
    ``pg_tls_key`` are set (with ``pg_tls_required``, the default, clients not on the loopback
    interface must use it), else declined (``N``); GSS encryption is declined; protocol 3.0; cleartext password
    authentication where the **user is the principal**, the **password one of its API keys**
    and the **database the purpose**. A bad key is ``FATAL 28P01``; a purpose the principal
    may not use is ``FATAL 3D000`` with the purposes it may use. Both are audited.
simple query
    One ``Query`` may hold several statements; they run in order until one fails.
extended query
    Parse/Bind/Describe/Execute/Close/Flush/Sync, named and unnamed statements and portals,
    parameters in text or binary format, results in text or binary format, ``Execute`` with
    a row limit (``PortalSuspended``). After an error, messages are skipped until ``Sync``.

Statements are routed and run by :class:`~govern.pgwire.statements.Statements`, each through
the request lifecycle (:mod:`govern.deliver.lifecycle`): session statements are answered
locally, catalog queries by a schema-only catalog, everything else by the SQL engine — with
the session's credentials and purpose checked again, one audit record per statement, the same
limits as ``POST /v1/sql``, and the audit store proven writable before any row is sent. Errors
are ``ErrorResponse`` messages with each error's SQLSTATE (:mod:`govern.errors`).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from govern.deliver.gateway import Gateway
from govern.pgwire.connection import Connection, Host, tls_context

__all__ = ["PgServer", "PgServerThread"]


class PgServer:
    """Accepts wire connections for one gateway, on the running asyncio loop."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._pids = itertools.count(1000)
        self._connections: dict[int, Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Logins never wait behind statements: their own small pool. Statements beyond the read
        # slots are refused by the lifecycle (Overloaded), so the work pool needs a few more.
        self._logins = ThreadPoolExecutor(max_workers=2, thread_name_prefix="govern-pg-login")
        self._work = ThreadPoolExecutor(max_workers=gateway.settings.max_concurrent_reads + 4,
                                        thread_name_prefix="govern-pg-work")
        settings = gateway.settings
        tls = None
        if settings.pg_tls_cert is not None and settings.pg_tls_key is not None:
            tls = tls_context(settings.pg_tls_cert, settings.pg_tls_key)
        self._host = Host(gateway, self._logins, self._work, self.cancel, tls)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._logins.shutdown(wait=False, cancel_futures=True)
        self._work.shutdown(wait=False, cancel_futures=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(self._host, reader, writer, next(self._pids))
        self._connections[conn.pid] = conn
        metrics = self.gateway.metrics
        metrics.pg_open.inc()
        try:
            await conn.serve()
        except asyncio.CancelledError:  # the server is closing: the connection was told (57P01)
            pass
        finally:
            metrics.pg_open.dec()
            self._connections.pop(conn.pid, None)
            self._tasks.discard(task)

    async def cancel(self, pid: int, secret: int) -> None:
        conn = self._connections.get(pid)
        if conn is not None and secrets.compare_digest(struct.pack("!I", conn.secret), struct.pack("!I", secret)):
            await conn.cancel()


class PgServerThread:
    """A :class:`PgServer` on its own event loop in a daemon thread (next to uvicorn)."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving; raises OSError if the port cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="govern-pgwire", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the PostgreSQL wire server did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        server = PgServer(self.gateway, self.host, self.port)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self.port = server.port
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.close())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
