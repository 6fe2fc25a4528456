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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from govern.errors import GovernError, MaskError

__all__ = ["SANDBOX_SETTINGS", "Sandbox"]

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

    def __init__(self, *, memory_limit: str, threads: int, timeout: float) -> None:
        self.timeout = timeout
        self.timed_out = False
        self.source_errors: list[BaseException] = []
        self._deadline = time.monotonic() + timeout
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
        self._timer = threading.Timer(max(0.0, timeout), self._expire)
        self._timer.daemon = True
        self._timer.start()

    # -- the clock -------------------------------------------------------------------------------
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


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
