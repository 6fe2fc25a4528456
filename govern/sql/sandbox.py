"""The DuckDB sandbox one query runs in: masked views, and nothing else it could reach.

Each query gets a fresh in-memory connection, configured in this order before anything is
registered, then locked:

1. ``enable_external_access=false`` — no files, URLs, ``COPY``, ``ATTACH`` of files, extensions;
2. ``autoinstall_known_extensions=false``, ``autoload_known_extensions=false``;
3. ``python_enable_replacements=false`` — otherwise DuckDB resolves an unknown table name to
   *any Python variable of that name in the caller's frames* (a raw table in a local variable
   would be one ``FROM raw`` away);
4. ``memory_limit``, ``threads``;
5. ``lock_configuration=true`` — no ``SET`` can undo the above.

The only relations in it are the masked views the engine registers. A timer interrupts the
query when ``sql_timeout`` passes; :meth:`Sandbox.close` interrupts and closes at any time.

Opening a DuckDB database costs 15–40 ms of CPU (it builds the catalog of every built-in
function), more than a small analytic query takes. :class:`SandboxPool` therefore opens and
locks the *next* sandboxes in the background, while no query waits. Each sandbox still serves
exactly one query and is closed after it: nothing — views, results, temporary objects,
memory — carries over from one query, principal or purpose to another.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from govern.errors import GovernError, MaskError

__all__ = ["SANDBOX_SETTINGS", "Sandbox", "SandboxPool"]

SANDBOX_SETTINGS: tuple[str, ...] = (
    "enable_external_access",
    "autoinstall_known_extensions",
    "autoload_known_extensions",
    "python_enable_replacements",
    "memory_limit",
    "threads",
    "lock_configuration",
)


class Sandbox:
    """One query's DuckDB connection, its clock, and what must be released with it."""

    def __init__(self, *, memory_limit: str, threads: int, timeout: float | None) -> None:
        """Open and lock the connection; the clock starts now, or at :meth:`arm` when
        ``timeout`` is None (a sandbox opened ahead of its query)."""
        self.timeout = 0.0
        self.timed_out = False
        self.source_errors: list[BaseException] = []
        self._deadline = float("inf")
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held while a thread runs or fetches from the connection
        self._closed = False
        self._readers: list[pa.RecordBatchReader] = []
        self.con = duckdb.connect(":memory:")
        try:
            values: dict[str, Any] = {
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "python_enable_replacements": False,
                "memory_limit": memory_limit,
                "threads": max(1, int(threads)),
                "lock_configuration": True,
            }
            for name in SANDBOX_SETTINGS:
                self.con.execute(f"SET {name} = {_literal(values[name])}")
        except BaseException:
            self.con.close()
            raise
        if timeout is not None:
            self.arm(timeout)

    # -- the clock -------------------------------------------------------------------------------
    def arm(self, timeout: float) -> Sandbox:
        """Start the query's clock: after ``timeout`` seconds the query is interrupted."""
        with self._lock:
            if self._timer is not None:
                raise RuntimeError("the sandbox's clock is already running")
            self.timeout = timeout
            self._deadline = time.monotonic() + timeout
            self._timer = threading.Timer(max(0.0, timeout), self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _expire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.timed_out = True
            self.con.interrupt()

    def expired(self) -> bool:
        if time.monotonic() >= self._deadline:
            self.timed_out = True
        return self.timed_out

    # -- views -----------------------------------------------------------------------------------
    def register_table(self, view: str, table: pa.Table) -> None:
        self.con.register(view, table)

    def register_stream(self, view: str, reader: pa.RecordBatchReader) -> None:
        """Register a governed stream; errors inside it are kept so the real cause is reported
        (DuckDB would otherwise wrap it in a message with a Python traceback)."""
        self._readers.append(reader)
        self.con.register(view, pa.RecordBatchReader.from_batches(reader.schema, self._guard(reader)))

    def _guard(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except GovernError as exc:
            self.source_errors.append(exc)
            raise
        except Exception as exc:
            self.source_errors.append(MaskError(f"reading a masked view failed ({type(exc).__name__})"))
            raise

    # -- running ---------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None) -> duckdb.DuckDBPyRelation:
        return self.con.sql(sql, params=list(params) if params else None)

    @property
    def busy(self) -> threading.Lock:
        """Hold while using the connection, so :meth:`close` from another thread (a cancel)
        interrupts the work and waits for it to stop instead of closing under it."""
        return self._busy

    def close(self) -> None:
        """Stop the clock, interrupt what runs, release the connection and the streams."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            try:
                self.con.interrupt()
            except duckdb.Error:
                pass
        with self._busy:
            try:
                self.con.close()
            except duckdb.Error:
                pass
        for reader in self._readers:
            try:
                reader.close()
            except Exception:  # already exhausted or failed: nothing more to release
                pass
        self._readers.clear()

    @property
    def closed(self) -> bool:
        return self._closed


class SandboxPool:
    """Sandboxes opened ahead of their queries, by one background thread.

    :meth:`take` hands out a fresh, locked sandbox whose clock starts then — a spare if one is
    ready, else one opened on the spot — and asks for a replacement. A sandbox is never handed
    out twice. At most ``spares`` idle sandboxes exist (each holds an empty DuckDB database
    and its threads, a few MB). :meth:`close` stops the builder and closes the spares.
    """

    def __init__(self, *, memory_limit: str, threads: int, spares: int = 1) -> None:
        self.memory_limit = memory_limit
        self.threads = threads
        self.spares = max(0, spares)
        self._ready: deque[Sandbox] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._filling = False  # the builder thread runs (set and cleared under self._cond)

    def take(self, timeout: float) -> Sandbox:
        """A fresh sandbox for one query, its clock started with ``timeout``."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the sandbox pool is closed")
            sandbox = self._ready.popleft() if self._ready else None
            self._wake()
        if sandbox is None:
            sandbox = self._open()
        return sandbox.arm(timeout)

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until the spares are open (benchmarks call this between samples, as a gateway
        has moments without queries); True when they are."""
        with self._cond:
            self._wake()
            self._cond.wait_for(lambda: self._closed or not self._filling or len(self._ready) >= self.spares,
                                timeout)
            return len(self._ready) >= self.spares

    def close(self) -> None:
        with self._cond:
            self._closed = True
            spares = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for sandbox in spares:
            sandbox.close()

    # -- the builder -------------------------------------------------------------------------------
    def _open(self) -> Sandbox:
        return Sandbox(memory_limit=self.memory_limit, threads=self.threads, timeout=None)

    def _wake(self) -> None:  # holding self._cond
        if self._closed or len(self._ready) >= self.spares:
            return
        if not self._filling:
            self._filling = True
            threading.Thread(target=self._fill, name="govern-sql-sandboxes", daemon=True).start()

    def _fill(self) -> None:
        while True:
            with self._cond:
                if self._closed or len(self._ready) >= self.spares:
                    self._filling = False
                    self._cond.notify_all()
                    return
            try:
                sandbox = self._open()
            except Exception:  # DuckDB could not open one now: queries open their own
                with self._cond:
                    self._filling = False
                    self._cond.notify_all()
                return
            with self._cond:
                if not self._closed:
                    self._ready.append(sandbox)
                    self._cond.notify_all()
                    continue
                self._filling = False
                self._cond.notify_all()
            sandbox.close()
            return


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
