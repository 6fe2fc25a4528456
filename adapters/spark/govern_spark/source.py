"""Tier 1: ``spark.read.format("govern")`` — Spark reading *through* the gateway.

::

    driver                                   gateway                          executors
    ──────                                   ───────                          ─────────
    schema():     GET  /v1/datasets/{name}   (API key)  the masked schema
    pushFilters(): keep filters on columns the plan leaves unmasked (exact in the gateway)
    partitions(): POST /v1/datasets/{name}/scan (API key) ─► fragments + one ticket each
                                                                     read(partition):
                                             GET /v1/fragments/{id} ◄── Bearer <ticket> only
                                             masked Arrow IPC ─────────► record batches

The gateway keeps storage credentials and masking keys; Spark receives masked Arrow. The API
key is read on the driver, from a file (``api_key_file``) or an environment variable
(``api_key_env``, default ``GOVERN_API_KEY``), each time it is needed, and is never kept in
any object Spark pickles, in an option, the query plan or the Spark conf: executors hold only
their fragment's ticket, which opens that fragment under that plan and data version until it
expires.

Options: ``dataset`` and ``purpose`` (required), ``url`` (default ``GOVERN_URL``, then
``http://127.0.0.1:8000``), ``columns`` (comma-separated: column pruning, pushed to the
gateway; Spark's Python Data Source API has no pruning callback), ``api_key_file`` /
``api_key_env``, ``timeout`` (seconds, default 60).

Executors need only pyarrow, pyspark and the standard library (``http.client`` fetches a
fragment; the driver's calls use httpx): this module imports nothing else of govern but the
Arrow → Spark type map.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import ssl
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import types as T
from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    EqualTo,
    Filter,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    InputPartition,
    IsNotNull,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Not,
    StringContains,
    StringEndsWith,
    StringStartsWith,
)

from govern_spark.types import arrow_type, spark_schema

__all__ = ["FragmentPartition", "GatewayError", "GovernDataSource", "GovernReader", "register", "to_sql"]

PUSHDOWN_CONF = "spark.sql.python.filterPushdown.enabled"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
PARQUET_FRAGMENT = "application/vnd.govern.parquet-fragment"  # a fragment as stored (stored_fragment)


class GatewayError(RuntimeError):
    """The gateway refused or failed: its status, problem type and detail (never a credential)."""


def register(spark: SparkSession) -> None:
    """Register ``format("govern")`` on ``spark`` and enable filter pushdown to Python data
    sources (``spark.sql.python.filterPushdown.enabled``; Spark refuses a source that pushes
    filters while it is off)."""
    spark.conf.set(PUSHDOWN_CONF, "true")
    spark.dataSource.register(GovernDataSource)


@dataclass(frozen=True)
class Options:
    """The options that travel with the source (pickled to Spark's workers): no secret."""

    url: str
    dataset: str
    purpose: str
    columns: tuple[str, ...] | None
    api_key_file: str | None
    api_key_env: str
    timeout: float

    @classmethod
    def parse(cls, options: Any) -> Options:
        def get(name: str) -> str | None:
            value = options.get(name)
            return str(value) if value not in (None, "") else None

        dataset, purpose = get("dataset"), get("purpose")
        if not dataset or not purpose:
            raise ValueError('format("govern") needs .option("dataset", ...) and .option("purpose", ...)')
        for secret in ("api_key", "token", "key"):
            if options.get(secret) is not None:
                raise ValueError(f"option {secret!r} would put the API key in the query plan and the Spark UI: "
                                 "use api_key_file or api_key_env")
        cols = get("columns")
        return cls(url=(get("url") or os.environ.get("GOVERN_URL") or "http://127.0.0.1:8000").rstrip("/"),
                   dataset=dataset, purpose=purpose,
                   columns=tuple(c.strip() for c in cols.split(",") if c.strip()) if cols else None,
                   api_key_file=get("api_key_file"), api_key_env=get("api_key_env") or "GOVERN_API_KEY",
                   timeout=float(get("timeout") or 60))

    def api_key(self) -> str:
        """The caller's API key, read now (on the driver), never stored."""
        if self.api_key_file:
            with open(self.api_key_file, encoding="utf-8") as fh:
                key = fh.read().strip()
        else:
            key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            where = self.api_key_file or f"the environment variable {self.api_key_env}"
            raise GatewayError(f"no API key in {where}")
        return key

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key()}", "X-Purpose": self.purpose}
        response = httpx.request(method, self.url + path, headers=headers, timeout=self.timeout, **kwargs)
        check(response)
        return response


def check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise GatewayError(f"gateway answered {response.status_code} ({_problem(response.content)})")


# -- filters --------------------------------------------------------------------------------------

_COMPARE = {EqualTo: "=", GreaterThan: ">", GreaterThanOrEqual: ">=", LessThan: "<", LessThanOrEqual: "<="}
_LIKE = {StringStartsWith: "{}%", StringEndsWith: "%{}", StringContains: "%{}%"}


def _literal(value: Any) -> str | None:
    """A SQL literal whose comparison means in the gateway what it means in Spark, else None:
    booleans, integers, strings (both compare UTF-8 bytes) and dates. Floats (NaN orders
    differently), timestamps (session time zones) and decimals stay in Spark."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return f"DATE '{value.isoformat()}'"
    return None


def to_sql(f: Filter, allowed: set[str]) -> str | None:
    """``f`` as a post-policy predicate of the gateway, if it reads only ``allowed`` columns and
    the gateway computes it exactly as Spark would; else None (it stays in Spark)."""
    attr = getattr(f, "attribute", None)
    if isinstance(f, Not):
        inner = to_sql(f.child, allowed)
        return f"NOT ({inner})" if inner else None
    if attr is None or len(attr) != 1 or attr[0] not in allowed:
        return None
    column = '"' + attr[0].replace('"', '""') + '"'
    if isinstance(f, IsNull):
        return f"{column} IS NULL"
    if isinstance(f, IsNotNull):
        return f"{column} IS NOT NULL"
    if type(f) in _COMPARE:
        lit = _literal(f.value)  # type: ignore[attr-defined]
        return f"{column} {_COMPARE[type(f)]} {lit}" if lit else None
    if isinstance(f, In):
        lits = [_literal(v) for v in f.value]
        if not lits or any(lit is None for lit in lits) or any(v is None for v in f.value):
            return None
        return f"{column} IN ({', '.join(lits)})"  # type: ignore[arg-type]
    if type(f) in _LIKE:
        value = f.value  # type: ignore[attr-defined]
        if not isinstance(value, str) or any(ch in value for ch in "%_\\"):
            return None
        pattern = _LIKE[type(f)].format(value).replace("'", "''")
        return f"{column} LIKE '{pattern}'"
    return None


# -- the source -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Described:
    """What the driver learned from the gateway: the masked schema and which columns the plan
    leaves unmasked (kept, no cell rule)."""

    schema: pa.Schema
    unmasked: frozenset[str]


def describe(options: Options) -> Described:
    body = options.call("GET", f"/v1/datasets/{options.dataset}").json()
    by_name = {c["name"]: c for c in body["columns"]}
    names = list(options.columns) if options.columns else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise GatewayError(f"unknown or withheld column(s): {', '.join(unknown)}")
    ruled = {r["column"] for r in body.get("cell_rules", [])}
    schema = pa.schema([pa.field(n, arrow_type(by_name[n]["type"])) for n in names])
    unmasked = frozenset(n for n in names if by_name[n]["action"] == "keep" and n not in ruled)
    return Described(schema, unmasked)


class GovernDataSource(DataSource):
    """``spark.read.format("govern")``: a governed dataset, masked by the gateway."""

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.settings = Options.parse(options)
        self.described: Described | None = None

    @classmethod
    def name(cls) -> str:
        return "govern"

    def schema(self) -> T.StructType:
        self.described = describe(self.settings)
        return spark_schema(self.described.schema)

    def reader(self, schema: T.StructType) -> GovernReader:
        described = self.described or describe(self.settings)
        return GovernReader(self.settings, described, [f.name for f in schema.fields])


@dataclass(frozen=True)
class FragmentPartition(InputPartition):
    """One fragment: where to fetch it and the ticket that opens it (no API key)."""

    url: str
    ticket: str
    timeout: float

    def __repr__(self) -> str:  # Spark may print partitions: never the ticket
        return f"FragmentPartition({self.url})"


class GovernReader(DataSourceReader):
    def __init__(self, settings: Options, described: Described, names: list[str]) -> None:
        self.settings = settings
        self.described = described
        self.names = names
        self.pushed: list[str] = []

    def pushFilters(self, filters: list[Filter]) -> Iterator[Filter]:
        for f in filters:
            sql = to_sql(f, set(self.described.unmasked))
            if sql is None:
                yield f
            else:
                self.pushed.append(sql)

    def partitions(self) -> Sequence[InputPartition]:
        s = self.settings
        body = {"columns": self.names, "filters": self.pushed}
        manifest = s.call("POST", f"/v1/datasets/{s.dataset}/scan", json=body).json()
        return [FragmentPartition(s.url + f["url"], f["ticket"], s.timeout) for f in manifest["fragments"]]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, FragmentPartition)
        target = self.described.schema
        headers = {"Authorization": f"Bearer {partition.ticket}", "Accept": f"{PARQUET_FRAGMENT}, {ARROW_STREAM}"}
        with _fetch(partition.url, headers, partition.timeout) as response:
            if response.status >= 400:
                raise GatewayError(f"gateway answered {response.status} ({_problem(response.read())})")
            body = _Body(response)
            if (response.getheader("content-type") or "").split(";")[0].strip() == PARQUET_FRAGMENT:
                batches: Iterator[pa.RecordBatch] = stored_fragment(body.read(), response.headers)
            else:  # message by message: memory holds one batch
                batches = iter(pa.ipc.open_stream(body))
            for batch in batches:
                yield _for_spark(batch, target)


@contextmanager
def _fetch(url: str, headers: dict[str, str], timeout: float) -> Iterator[http.client.HTTPResponse]:
    """GET ``url`` with the standard library's client, which reads a body straight into the
    bytes it returns: a fragment is tens to hundreds of MB, and httpx hands a body over in
    64 KiB pieces (fetching 298 MB of Arrow over loopback, a scratch measurement: 0.52 s of
    client CPU against 0.20–0.24 s). No proxy: executors reach the gateway directly."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GatewayError(f"a fragment URL must be http(s)://host/...: {url!r}")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection = (
        http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context())
        if parts.scheme == "https" else http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout))
    try:
        connection.request("GET", target, headers=headers)
        yield connection.getresponse()
    finally:
        connection.close()


class _Body:
    """A response body as a read-only file (pyarrow's stream reader reads message by message).
    A body that ends before its ``Content-Length`` or its last chunk raises: an Arrow stream
    cut between two messages would otherwise read as a shorter, valid one."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self._response = response
        self.closed = False

    def read(self, n: int | None = -1) -> bytes:
        want = None if n is None or n < 0 else n
        try:
            data = self._response.read(want)
        except (http.client.HTTPException, OSError) as exc:  # IncompleteRead, a reset connection
            raise GatewayError("the gateway's answer was cut short") from exc
        if self._response.length and (want is None or len(data) < want):
            raise GatewayError("the gateway's answer was cut short")  # fewer bytes than Content-Length
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def _problem(body: bytes) -> str:
    try:
        problem = json.loads(body)
        return f"{problem.get('type', '')}: {problem.get('detail', '')}"
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def stored_fragment(body: bytes, headers: Any) -> Iterator[pa.RecordBatch]:
    """A fragment sent as it is stored (``application/vnd.govern.parquet-fragment``): the bytes
    of its row groups, then the Parquet file's footer; the headers say where they lie in the file
    (``x-govern-file-size``, ``x-govern-byte-span``, ``x-govern-row-groups``). Decoded here, on
    the executor: the gateway decodes nothing and sends the compressed bytes (for the demo's
    data, a third of the Arrow form's: ``benchmarks/spark.py`` prints both).
    A body that does not match its layout (cut short, or a read outside it) raises."""
    try:
        size = int(headers["x-govern-file-size"])
        begin, end = (int(v) for v in headers["x-govern-byte-span"].split("-"))
        first, stop = (int(v) for v in headers["x-govern-row-groups"].split("-"))
    except (KeyError, ValueError):
        raise GatewayError("the gateway sent a stored fragment without its layout") from None
    footer = len(body) - (end - begin)  # the bytes after the row groups: the file's tail
    if begin < 4 or end < begin or footer < 8 or size - footer < end:
        raise GatewayError("the stored fragment does not match its layout (cut short?)")
    # the footer alone, as a file of its own (magic, metadata, length, magic): the metadata
    metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + body[end - begin:]))
    parquet = pq.ParquetFile(_SparseFile(body, size, begin, end), metadata=metadata)
    yield from parquet.iter_batches(batch_size=65_536, row_groups=list(range(first, stop)), use_threads=False)


class _SparseFile:
    """A read-only, seekable view of a Parquet file of which only two parts are present: bytes
    ``[begin, end)`` (the fragment's row groups) and the file's tail (its footer), back to back
    in ``body``. A read anywhere else raises: it would mean the layout is not what it claims."""

    def __init__(self, body: bytes, size: int, begin: int, end: int) -> None:
        self._body = memoryview(body)
        self._size, self._begin, self._end = size, begin, end
        self._tail = size - (len(body) - (end - begin))  # where the footer starts in the file
        self._pos = 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        start = self._pos
        stop = self._size if n is None or n < 0 else min(self._size, start + n)
        if self._begin <= start and stop <= self._end:
            part = self._body[start - self._begin:stop - self._begin]
        elif self._tail <= start and stop <= self._size:
            offset = (self._end - self._begin) + (start - self._tail)
            part = self._body[offset:offset + (stop - start)]
        else:
            raise OSError(f"stored fragment: bytes {start}-{stop} are not part of it")
        self._pos = stop
        return part.tobytes()

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 else self._size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _for_spark(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """The batch with Spark's view of each type (dictionaries decoded; values unchanged)."""
    arrays = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=target.names)
