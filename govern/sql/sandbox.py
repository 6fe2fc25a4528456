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
locks the *next* sandboxes in the background, while no query runs. Each sandbox still serves
exactly one query and is closed after it: nothing — views, results, temporary objects,
memory — carries over from one query, principal or purpose to another.
"""

from __future__ import annotations

import atexit
import heapq
import threading
import time
import weakref
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
    "enable_progress_bar",
    "enable_progress_bar_print",
    "memory_limit",
    "threads",
    "lock_configuration",
)


class Sandbox:
    """One query's DuckDB connection, its clock, and what must be released with it."""

    def __init__(self, *, memory_limit: str, threads: int, timeout: float | None,
                 pool: SandboxPool | None = None) -> None:
        """Open and lock the connection. The clock starts now, or at :meth:`arm` when
        ``timeout`` is None (a sandbox opened ahead of its query). With ``pool``, the pool's
        thread keeps the clock and does the releasing part of :meth:`close`."""
        self.timeout = 0.0
        self.timed_out = False
        self.source_errors: list[BaseException] = []
        self._deadline = float("inf")
        self._armed = False
        self._timer: threading.Timer | None = None
        self._pool = pool
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
                "enable_progress_bar": False,  # never print to the gateway's (or a worker's) stdout
                "enable_progress_bar_print": False,
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
            if self._armed:
                raise RuntimeError("the sandbox's clock is already running")
            self._armed = True
            self.timeout = timeout
            self._deadline = time.monotonic() + timeout
            if self._pool is None:
                self._timer = threading.Timer(max(0.0, timeout), self._expire)
                self._timer.daemon = True
                self._timer.start()
        if self._pool is not None:
            self._pool._watch(self)
        return self

    def _expire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.timed_out = True
            try:
                self.con.interrupt()
            except duckdb.Error:
                pass

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
        """Stop the clock and interrupt what runs — at once: no further batch is fetched — then
        release the connection and the streams (in the pool's thread, when there is a pool)."""
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
        if self._pool is None or not self._pool._retire(self):
            self._release()

    def _release(self) -> None:
        with self._busy:  # a fetch in another thread stops at the interrupt; wait for it
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
    """Sandboxes opened ahead of their queries, and closed after them, by one thread.

    :meth:`take` hands out a fresh, locked sandbox whose clock starts then: a spare if one is
    ready, else one opened on the spot. A sandbox is never handed out twice. Closing it stops
    its query at once; the pool's thread then releases the database, and opens replacements
    only while no query runs (opening one takes CPU a running query could use: under a
    continuous load, queries open their own). The same thread keeps the sandboxes' clocks. At
    most ``spares`` idle sandboxes exist (each an empty DuckDB database and its threads, a few
    MB). :meth:`close` releases everything.
    """

    def __init__(self, *, memory_limit: str, threads: int, spares: int = 1) -> None:
        self.memory_limit = memory_limit
        self.threads = threads
        self.spares = max(0, spares)
        self._ready: deque[Sandbox] = deque()
        self._retired: deque[Sandbox] = deque()
        self._releasing = 0  # retired sandboxes the thread is releasing right now
        self._in_use = 0  # sandboxes taken and not closed yet: spares are opened only at 0
        self._clocks: list[tuple[float, int, Sandbox]] = []  # heap of (deadline, tiebreak, sandbox)
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # At interpreter exit the thread must not be inside DuckDB (a daemon thread killed in
        # C++ code aborts the process): close the pool first if its owner did not.
        atexit.register(_close_at_exit, weakref.ref(self))

    def take(self, timeout: float) -> Sandbox:
        """A fresh sandbox for one query, its clock started with ``timeout``."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the sandbox pool is closed")
            self._start()
            sandbox = self._ready.popleft() if self._ready else None
            self._in_use += 1
        if sandbox is None:
            try:
                sandbox = self._open()
            except BaseException:
                with self._cond:
                    self._in_use -= 1
                    self._cond.notify_all()
                raise
        return sandbox.arm(timeout)

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until closed sandboxes are released and the spares are open — which needs
        every taken sandbox closed (benchmarks call this between samples, as a gateway has
        moments without queries)."""
        with self._cond:
            self._start()
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._closed or (len(self._ready) >= self.spares and not self._retired
                                                                and not self._releasing), timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for sandbox in list(self._ready):
            sandbox.close()
        self._ready.clear()
        while self._retired:
            self._retired.popleft()._release()

    # -- called by sandboxes -------------------------------------------------------------------------
    def _watch(self, sandbox: Sandbox) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._clocks, (sandbox._deadline, self._count, sandbox))
            self._start()
            self._cond.notify_all()

    def _retire(self, sandbox: Sandbox) -> bool:
        """Take over releasing ``sandbox``; False when the pool is closed (release it yourself)."""
        with self._cond:
            if self._closed:
                return False
            self._in_use -= 1
            self._retired.append(sandbox)
            self._start()
            self._cond.notify_all()
            return True

    # -- the pool's thread ---------------------------------------------------------------------------
    def _open(self) -> Sandbox:
        return Sandbox(memory_limit=self.memory_limit, threads=self.threads, timeout=None, pool=self)

    def _start(self) -> None:  # holding self._cond
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="govern-sql-sandboxes", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            due: list[Sandbox] = []
            retired: Sandbox | None = None
            build = False
            with self._cond:
                while not (due or retired or build):
                    if self._closed:
                        return
                    now = time.monotonic()
                    while self._clocks and (self._clocks[0][2].closed or self._clocks[0][0] <= now):
                        sandbox = heapq.heappop(self._clocks)[2]
                        if not sandbox.closed:
                            due.append(sandbox)
                    if self._retired:
                        retired = self._retired.popleft()
                        self._releasing += 1
                    elif len(self._ready) < self.spares and not self._in_use:
                        build = True  # only while no query runs: opening one takes CPU from it
                    elif not due:
                        self._cond.wait(self._clocks[0][0] - now if self._clocks else None)
            for sandbox in due:  # outside self._cond: a sandbox's lock is never taken under it
                sandbox._expire()
            if retired is not None:
                try:
                    retired._release()  # release before opening: memory goes before it comes
                finally:
                    with self._cond:
                        self._releasing -= 1
            elif build:
                self._build()
            with self._cond:
                self._cond.notify_all()

    def _build(self) -> None:
        try:
            sandbox = self._open()
        except Exception:  # DuckDB cannot open one now: queries open their own meanwhile
            with self._cond:
                self._cond.wait(1.0)
            return
        with self._cond:
            if not self._closed:
                self._ready.append(sandbox)
                return
        sandbox.con.close()


def _close_at_exit(ref: weakref.ref[SandboxPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.close()


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
