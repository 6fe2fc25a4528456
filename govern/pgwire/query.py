"""Running one statement for a wire connection: route it, audit it, and encode its rows.

Every statement is one of four kinds (:func:`classify`):

- ``empty``: only whitespace and comments → EmptyQueryResponse;
- ``local``: a session statement (``SET``, ``SHOW``, ``BEGIN``…) answered by
  :mod:`govern.pgwire.session`; never reaches the engine, not audited (no data);
- ``catalog``: a question about ``pg_catalog``/``information_schema``, answered by the
  connection's schema-only :class:`~govern.pgwire.catalog.Catalog`; audited;
- ``query``: everything else goes to :class:`~govern.sql.SqlEngine` over masked views, with the
  same limits and the same audit record as ``POST /v1/sql``.

A started statement is a :class:`Cursor`: its rows are fetched in pieces (so a portal can be
suspended), and it writes **exactly one** audit record — ``ok`` when its last row was encoded,
``aborted`` if it is closed before that, ``denied``/``error`` if it never started.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from govern.deliver.gateway import Gateway, RequestContext
from govern.errors import GovernError, SqlError
from govern.identity.principal import Principal
from govern.pgwire.catalog import Catalog, CatalogContext, is_catalog_query, output_names
from govern.pgwire.protocol import data_rows, row_description
from govern.pgwire.session import LocalResult, Session, is_local, run_local
from govern.pgwire.types import TEXT, PgType, column_encoder, pg_type_of
from govern.pgwire import dp as pgwire_dp
from govern.sql.engine import SqlEngine, SqlResult

__all__ = ["Cursor", "Runner", "classify"]

log = logging.getLogger("govern.pgwire")

CHUNK_ROWS = 2048  # rows encoded per step of a stream


def classify(text: str, datasets: set[str]) -> str:
    from govern.pgwire.protocol import strip_comments

    body = strip_comments(text).strip().rstrip(";").strip()
    if not body:
        return "empty"
    if is_local(body):
        return "local"
    if is_catalog_query(body, datasets):
        return "catalog"
    return "query"


@dataclass
class Cursor:
    """The rows of one started statement, encoded for the wire a piece at a time."""

    columns: list[tuple[str, pa.DataType | None]] | None  # None: the statement returns no rows
    batches: Iterator[pa.RecordBatch] = field(default_factory=lambda: iter(()))
    tag: str = "SELECT"  # CommandComplete tag (SELECT n for row sets)
    on_done: Callable[[int, int], None] | None = None  # audit ok (rows, bytes)
    on_abort: Callable[[int, int, str], None] | None = None  # audit aborted
    release: Callable[[], None] | None = None
    local: LocalResult | None = None
    rows: int = 0
    nbytes: int = 0
    finished: bool = False
    closed: bool = False
    _encoders: list[Callable[[pa.Array], list[bytes | None]]] | None = None
    _pending: list[bytes] = field(default_factory=list)
    _exhausted: bool = False

    def types(self) -> list[tuple[str, PgType]]:
        assert self.columns is not None
        return [(name, pg_type_of(t) if t is not None else TEXT) for name, t in self.columns]

    def row_description(self, formats: list[int]) -> bytes:
        types = self.types()
        return row_description([(n, pg, _format(formats, i)) for i, (n, pg) in enumerate(types)])

    def prepare(self, formats: list[int], session: Session) -> None:
        """Choose text/binary encoders for the result columns (raises for unsupported binary)."""
        if self.columns is not None and self._encoders is None:
            self._encoders = [column_encoder(t if t is not None else pa.string(), _format(formats, i) == 1,
                                             session.tz) for i, (_n, t) in enumerate(self.columns)]

    def fetch(self, max_rows: int) -> tuple[bytes, bool]:
        """Up to ``max_rows`` (0: a chunk) DataRows; ``True`` once the last row is out. Blocking."""
        assert self._encoders is not None
        want = max_rows or CHUNK_ROWS
        while len(self._pending) < want and not self._exhausted:
            try:
                batch = next(self.batches)
            except StopIteration:
                self._exhausted = True
                break
            if batch.num_rows:
                encoded = [enc(col) for enc, col in zip(self._encoders, batch.columns, strict=True)]
                self._pending.extend(_split_rows(encoded, batch.num_rows))
        out, self._pending = self._pending[:want], self._pending[want:]
        data = b"".join(out)
        self.rows += len(out)
        self.nbytes += len(data)
        done = self._exhausted and not self._pending
        if done and not self.finished:
            self.finished = True
            try:
                if self.on_done is not None:
                    self.on_done(self.rows, self.nbytes)
            finally:
                self.close(None)
        return data, done

    def command_tag(self) -> str:
        return f"SELECT {self.rows}" if self.tag == "SELECT" else self.tag

    def close(self, reason: str | None = "closed before its last row was sent") -> None:
        """Release the query; if rows remained, audit the statement as aborted (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            if reason is not None and not self.finished and self.on_abort is not None:
                self.on_abort(self.rows, self.nbytes, reason)
        finally:
            if self.release is not None:
                self.release()


def _format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0


def _split_rows(encoded: list[list[bytes | None]], n: int) -> list[bytes]:
    data = data_rows(encoded, n)
    # DataRow messages are self-delimiting: cut the joined bytes back into one piece per row.
    out, pos = [], 0
    for _ in range(n):
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        out.append(data[pos:pos + 1 + length])
        pos += 1 + length
    return out


class Runner:
    """Starts statements for one connection: principal, purpose, session and catalog."""

    def __init__(self, gateway: Gateway, principal: Principal, session: Session, pid: int) -> None:
        self.gw = gateway
        self.principal = principal
        self.session = session
        self.pid = pid
        self.engine = SqlEngine(gateway.governor, gateway.settings, getattr(gateway, "sandboxes", None),
                                getattr(gateway, "view_cache", None))
        self._catalog: Catalog | None = None
        self._catalog_version: str | None = None

    @property
    def purpose(self) -> str:
        return self.session.database

    def datasets(self) -> set[str]:
        return {name.lower() for name in self.gw.governor.state.policy.datasets}

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    # -- audit -----------------------------------------------------------------------------------
    def context(self, text: str, **extra: Any) -> RequestContext:
        limit = self.gw.settings.sql_max_length
        return RequestContext(request_id=uuid.uuid4().hex, route="pgwire", principal=self.principal,
                              purpose=self.purpose, action="sql",
                              extra={"sql": text if len(text) <= limit else text[:limit] + "…",
                                     "protocol": "pgwire", "connection": self.pid, **extra})

    def refuse(self, ctx: RequestContext, exc: GovernError) -> None:
        self.gw.record_denial(ctx, exc)

    # -- starting statements (blocking; the connection runs these in a thread) -------------------
    def local(self, text: str) -> Cursor:
        result = run_local(text, self.session)
        if result.columns is None:
            return Cursor(None, tag=result.tag, local=result)
        names = [n for n, _t in result.columns]
        table = pa.table({f"c{i}": pa.array([r[i] for r in result.rows], pa.string())
                          for i in range(len(names))})
        return Cursor([(n, pa.string()) for n in names], iter(table.to_batches()), tag=result.tag, local=result)

    def catalog(self, text: str, params: list[Any]) -> Cursor:
        ctx = self.context(text, catalog=True)
        try:
            if params:
                ctx.extra["params"] = len(params)
            table = self._catalog_db().run(text, params)
        except GovernError as exc:
            self.refuse(ctx, exc)
            raise

        def done(rows: int, nbytes: int) -> None:
            self.gw.record(ctx, outcome="ok", status=200, rows=rows, nbytes=nbytes)

        return Cursor([(f.name, f.type) for f in table.schema], iter(table.to_batches()), on_done=done,
                      on_abort=lambda rows, nbytes, why: self._aborted(ctx, rows, nbytes, why))

    def describe_catalog(self, text: str, nparams: int) -> list[tuple[str, pa.DataType | None]]:
        table = self._catalog_db().run(text, [None] * nparams)
        return [(f.name, f.type) for f in table.schema]

    def query(self, text: str, params: list[Any]) -> Cursor:
        if pgwire_dp.is_dp(self, text):  # differentially private SQL (govern.pgwire.dp)
            return pgwire_dp.dp_cursor(self, text, params)
        ctx = self.context(text)
        if params:
            ctx.extra["params"] = len(params)  # how many, not the values
        slot = False
        try:
            self.gw.acquire_read_slot()
            slot = True
            self.gw.audit.reserve(ctx.request_id)  # the audit store is writable before any data
            result = self.engine.run(self.principal, self.purpose, text, params)
        except GovernError as exc:
            if slot:
                self.gw.release_read_slot()
            self.refuse(ctx, exc)
            raise
        _describe_result(ctx, result)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.gw.release_read_slot()
                result.close()

        def done(rows: int, nbytes: int) -> None:
            self.gw.record(ctx, outcome="ok", status=200, rows=rows, nbytes=nbytes)
            for name in result.datasets:
                self.gw.metrics.rows.labels(dataset=name).inc(rows)
                self.gw.metrics.bytes.labels(dataset=name).inc(nbytes)

        return Cursor(_named(text, result.schema), _guarded(result.reader),
                      on_done=done, on_abort=lambda rows, nbytes, why: self._aborted(ctx, rows, nbytes, why),
                      release=release)

    def describe_query(self, text: str, params: list[Any] | None) -> list[tuple[str, pa.DataType | None]]:
        if pgwire_dp.is_dp(self, text):
            return pgwire_dp.dp_describe(self, text)
        return _named(text, self.engine.describe(self.principal, self.purpose, text, params or None))

    def _aborted(self, ctx: RequestContext, rows: int, nbytes: int, why: str) -> None:
        try:
            self.gw.record(ctx, outcome="aborted", status=499, rows=rows, nbytes=nbytes, detail=why[:500])
        except GovernError:
            pass

    def _catalog_db(self) -> Catalog:
        state = self.gw.governor.state
        if self._catalog is None or self._catalog_version != state.policy.version:
            tables = self.engine.tables(self.principal, self.purpose)
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
                user=self.principal.name, database=self.purpose,
                databases=tuple(sorted(state.decider.purposes(self.principal))), tables=tables,
                settings=dict(self.session.values), pid=self.pid, descriptions=descriptions)
            if self._catalog is not None:
                self._catalog.close()
            settings = self.gw.settings
            self._catalog = Catalog(context, timeout=settings.sql_timeout, memory_limit=settings.sql_memory_limit)
            self._catalog_version = state.policy.version
        return self._catalog


def _named(text: str, schema: pa.Schema) -> list[tuple[str, pa.DataType | None]]:
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


def _describe_result(ctx: RequestContext, result: SqlResult) -> None:
    """What the audit record says about the data: datasets, plan hashes, masked columns read
    (the same fields as ``POST /v1/sql``)."""
    ctx.extra["datasets"] = list(result.datasets)
    if result.cached:
        ctx.extra["cached"] = list(result.cached)  # views served from the view cache
    ctx.extra["plans"] = dict(result.plans)
    read: dict[str, dict[str, str]] = {}
    for name, cols in result.columns.items():
        plan = result.access_plans.get(name)
        actions = {c.name: (f"mask:{c.mask.function}" if c.mask else c.action) for c in plan.columns} if plan else {}
        read[name] = {c: actions.get(c, "keep") for c in cols}
    ctx.extra["read"] = read
    if len(result.datasets) == 1:
        ctx.dataset = result.datasets[0]
        ctx.plan = result.access_plans.get(ctx.dataset)
