"""Analyst SQL in worker processes: one deadline and an OS memory bound for every query.

Why. DuckDB's ``memory_limit`` bounds its operators, not one value: ``replace(repeat('a',
100000), 'a', repeat('b', 100000))`` or ``list_transform(range(N), lambda i: repeat(…))``
builds gigabytes, and the PostgreSQL catalog path (``repeat('a', 1500000000)``) likewise.
Work stuck in Python (sqlglot parsing a hostile text) ignores DuckDB's interrupt. Chasing
functions one by one cannot close this; a process boundary does. :class:`SqlService` runs the
whole engine path — parse, validate, resolve, the governed masked reads, DuckDB — in a pool of
worker processes, one query at a time each:

- **memory**: each worker runs under ``RLIMIT_DATA`` = ``sql_worker_memory``. Past it an
  allocation fails: DuckDB answers "Out of Memory" and Python/Arrow raise ``MemoryError``
  (the worker survives), or the worker dies; either way the caller gets
  :class:`~govern.errors.LimitExceeded` (SQLSTATE 53200) and a dead worker is replaced.
  The gateway itself only ever holds one result batch of a query at a time (at most
  ``sql_batch_bytes``; bigger batches are split by the worker, one bigger row is refused).
- **one deadline**: the caller passes an absolute ``time.monotonic()`` deadline covering
  parse + validate + execute + streaming. The worker interrupts DuckDB at the deadline; if it
  has not answered ``KILL_GRACE`` seconds later (stuck in Python, or its consumer stopped
  reading), the parent kills it (SIGKILL) and the caller gets
  :class:`~govern.errors.QueryTimeout` (SQLSTATE 57014).
- **streaming**: results come back as Arrow IPC over a socket pair, batch by batch; the socket
  buffer is the back-pressure (a worker blocks while the gateway's client does not read). The
  :class:`~govern.sql.engine.SqlResult` metadata (datasets, plan hashes, access plans, columns
  read, cached) arrives before the first batch, so the gateway audits exactly what it audits
  for an in-process query. Closing a result before its end kills the worker's query (and the
  worker: it is replaced in the background); a result read to its end frees the worker.
- **policy**: a worker holds its own :class:`~govern.deliver.governor.Governor` for the
  policy version the gateway serves: the parent sends the validated ``PolicySet`` with a job
  whenever the worker's version differs. Workers never read policy files (the folder may hold
  a broken edit while the gateway serves the last known good version). Masking keys come from
  the same settings. Each worker has its own sandbox pool and its own view cache, of
  ``sql_cache_bytes / sql_workers`` bytes.

Workers are started with ``spawn`` (a fresh interpreter: never a fork of the multi-threaded
gateway), in the background by :meth:`SqlService.start` or on first use, and are stopped by
:meth:`SqlService.close`. A job is any picklable object with ``run(env: WorkerEnv)`` (the
PostgreSQL catalog's DuckDB queries run as one: :class:`govern.pgwire.catalog.CatalogJob`).
"""

from __future__ import annotations

import atexit
import hashlib
import heapq
import itertools
import logging
import multiprocessing
import pickle
import resource
import signal
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar

import pyarrow as pa

from govern import errors
from govern.config import Settings
from govern.deliver.governor import Governor
from govern.errors import GovernError, LimitExceeded, QueryTimeout, SqlError
from govern.identity.principal import Principal
from govern.logs import log_everything_as_json
from govern.policy.model import PolicySet
from govern.sql.engine import SqlEngine, SqlResult
from govern.sql.sandbox import SandboxPool
from govern.sql.view_cache import ViewCache

__all__ = ["Job", "SandboxesReady", "SqlService", "WorkerEnv", "parse_size"]

log = logging.getLogger("govern.sql")

KILL_GRACE = 0.25  # seconds after the deadline the parent waits for the worker's own timeout
CANCEL_WAIT = 5.0  # seconds a cancelled job may take to stop before its worker is killed (a loaded
#                    machine takes seconds to schedule the worker's cancel listener; a restart costs more)
_META, _BATCH, _END, _VALUE, _ERROR, _READY = b"M", b"B", b"E", b"V", b"X", b"R"
START_TIMEOUT = 60.0  # seconds a new worker may take to import and report ready
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}

T = TypeVar("T")


def parse_size(text: str | int) -> int:
    """Bytes in ``"3GB"``, ``"512MiB"``, ``"1.5 GB"`` or an integer (DuckDB's spelling)."""
    if isinstance(text, int):
        return text
    value = text.strip().upper().replace(" ", "")
    number = value.rstrip("KMGTIB")
    unit = value[len(number):]
    if unit not in _UNITS or not number:
        raise ValueError(f"not a size: {text!r} (e.g. '3GB', '512MiB')")
    return int(float(number) * _UNITS[unit])


# -- in the worker -----------------------------------------------------------------------------
class WorkerEnv:
    """What a job finds in its worker: settings, the engine for the policy the gateway serves,
    the job's deadline, and a small cache of objects a job may keep between jobs."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.deadline = float("inf")
        self._governor: Governor | None = None
        self._engine: SqlEngine | None = None
        self._sandboxes: SandboxPool | None = None
        self._cache = ViewCache(settings.sql_cache_bytes // max(1, workers))
        self._kept: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._job = 0  # the job running now
        self._cancelled = 0  # the last job the gateway cancelled
        self._result: SqlResult | None = None

    # -- cancelling (from the worker's listener thread) --------------------------------------------
    def begin(self, job: int) -> None:
        with self._lock:
            self._job, self._result = job, None

    def streaming(self, result: SqlResult) -> bool:
        """Note the job's result, so that a cancel stops it; False when already cancelled."""
        with self._lock:
            self._result = result
            return self._cancelled != self._job

    def cancel(self, job: int) -> None:
        """The gateway no longer wants job ``job``: stop its DuckDB query (the stream then ends
        with an error the gateway drains)."""
        with self._lock:
            self._cancelled = job
            result = self._result if job == self._job else None
        if result is not None:
            result.close()

    def install(self, settings: Settings | None, policy: PolicySet) -> None:
        """Serve ``policy`` (validated by the gateway) from now on — under ``settings`` when the
        gateway sends others than the worker's (another data root, another key file)."""
        if settings is not None:
            old, self.settings = self.settings, settings
            self._governor = None
            if self._sandboxes is not None and (old.sql_memory_limit, old.sql_threads) != (
                    settings.sql_memory_limit, settings.sql_threads):
                self._sandboxes.close()
                self._sandboxes = None
        if self._governor is None:
            self._governor = Governor(self.settings, policy=policy)
        else:
            self._governor.swap_policy(policy)
        self._cache.clear()  # entries are keyed by plan hash anyway; the old ones are dead weight

    @property
    def sandboxes(self) -> SandboxPool | None:
        return self._sandboxes

    @property
    def engine(self) -> SqlEngine:
        if self._governor is None:
            raise SqlError("the SQL worker has no policy", sqlstate="XX000")
        if self._engine is None or self._engine.governor is not self._governor:
            s = self.settings
            if self._sandboxes is None:
                self._sandboxes = SandboxPool(memory_limit=s.sql_memory_limit, threads=s.sql_threads)
            self._engine = SqlEngine(self._governor, s, self._sandboxes, self._cache)
        return self._engine

    def kept(self, key: Hashable, make: Callable[[], T], *, size: int = 8) -> T:
        """An object kept between jobs under ``key`` (least recently used beyond ``size``,
        closed with its ``close()`` when dropped): a connection's catalog database, say."""
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]  # type: ignore[no-any-return]
        value = make()
        self._kept[key] = value
        while len(self._kept) > size:
            _, old = self._kept.popitem(last=False)
            close = getattr(old, "close", None)
            if callable(close):
                close()
        return value


class Job(Protocol):
    """Work for a worker: picklable, run there with the worker's environment. It returns a
    :class:`SqlResult` (streamed back batch by batch) or a picklable value."""

    def run(self, env: WorkerEnv) -> object: ...


@dataclass(frozen=True)
class RunJob:
    principal: Principal
    purpose: str
    sql: str
    params: list[Any] | None

    def run(self, env: WorkerEnv) -> SqlResult:
        return env.engine.run(self.principal, self.purpose, self.sql, self.params, deadline=env.deadline)


@dataclass(frozen=True)
class DescribeJob:
    principal: Principal
    purpose: str
    sql: str
    params: list[Any] | None

    def run(self, env: WorkerEnv) -> pa.Schema:
        return env.engine.describe(self.principal, self.purpose, self.sql, self.params, deadline=env.deadline)


@dataclass(frozen=True)
class TablesJob:
    principal: Principal
    purpose: str

    def run(self, env: WorkerEnv) -> dict[str, pa.Schema]:
        return env.engine.tables(self.principal, self.purpose)


@dataclass(frozen=True)
class SandboxesReady:
    """Wait until the worker's sandbox pool has released used sandboxes and opened its spare
    (benchmarks: a gateway has moments without queries, as :meth:`SandboxPool.ready`)."""

    timeout: float = 5.0

    def run(self, env: WorkerEnv) -> bool:
        sandboxes = env.sandboxes
        return sandboxes.ready(self.timeout) if sandboxes is not None else True


def worker_main(conn: Connection, cancels: Connection, settings: Settings, memory: int, workers: int) -> None:
    """A worker's life: bound its memory, then run jobs one at a time until told to stop.
    ``cancels`` carries the numbers of jobs the gateway gave up on (a thread listens to it)."""
    log_everything_as_json(settings.log_level)  # a worker's lines are JSON like the gateway's
    if memory > 0:
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        except (ValueError, OSError) as exc:
            log.warning("could not bound an SQL worker's memory", extra={"error": str(exc)})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway's Ctrl-C is for the gateway
    env = WorkerEnv(settings, workers)
    batch_bytes = settings.sql_batch_bytes
    threading.Thread(target=_listen, args=(cancels, env), name="govern-sql-cancels", daemon=True).start()
    try:
        conn.send_bytes(_READY)  # imports done: the gateway may count this worker as ready
    except OSError:
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        number, install, remaining, job = message
        env.deadline = time.monotonic() + remaining
        env.begin(number)
        result: object = None
        try:
            if install is not None:
                env.install(*install)
            result = job.run(env)
            if isinstance(result, SqlResult):
                if not env.streaming(result):
                    raise SqlError("the query was cancelled", sqlstate="57014")
                _send_stream(conn, result, batch_bytes)
            else:
                value = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
                if len(value) > batch_bytes:
                    raise LimitExceeded(f"the answer is larger than {batch_bytes} bytes", limit=batch_bytes,
                                        sqlstate="54000")
                conn.send_bytes(_VALUE + value)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return  # the gateway went away
        except BaseException as exc:
            try:
                conn.send_bytes(_ERROR + pickle.dumps(_describe_error(exc)))
            except (EOFError, OSError):
                return
        finally:
            if isinstance(result, SqlResult):
                result.close()


def _listen(cancels: Connection, env: WorkerEnv) -> None:
    while True:
        try:
            number = int(cancels.recv_bytes(32))
        except (EOFError, OSError, ValueError):
            return
        env.cancel(number)


def _send_stream(conn: Connection, result: SqlResult, batch_bytes: int) -> None:
    meta = {"schema": result.schema, "datasets": result.datasets, "plans": result.plans,
            "columns": result.columns, "access_plans": result.access_plans, "cached": result.cached,
            "suppressed_groups": result.suppressed_groups}
    conn.send_bytes(_META + pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL))
    for batch in result.reader:
        for data in _encoded(batch, batch_bytes):
            conn.send_bytes(data)
    conn.send_bytes(_END)


def _encoded(batch: pa.RecordBatch, limit: int) -> Iterator[pa.Buffer]:
    """``batch`` as Arrow IPC stream messages of at most ``limit`` bytes each, split by rows."""
    sink = pa.BufferOutputStream()
    sink.write(_BATCH)
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    data = sink.getvalue()
    if data.size <= limit:
        yield data
        return
    if batch.num_rows <= 1:
        raise LimitExceeded(f"a result row is larger than {limit} bytes", limit=limit, sqlstate="54000")
    half = batch.num_rows // 2
    yield from _encoded(batch.slice(0, half), limit)
    yield from _encoded(batch.slice(half), limit)


def _describe_error(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """(error class name, detail, extra) for the parent: errors are rebuilt there by name."""
    if isinstance(exc, GovernError):
        return type(exc).__name__, exc.detail, exc.extra
    if isinstance(exc, MemoryError):
        return "LimitExceeded", "the query needs more memory than its worker may use", {"sqlstate": "53200"}
    if isinstance(exc, RecursionError):
        return "SqlError", "the query is nested too deeply", {"sqlstate": "54001"}
    log.warning("SQL worker job failed", extra={"error": type(exc).__name__})
    return "SqlError", "the query failed", {"sqlstate": "XX000"}


def _rebuild(name: str, detail: str, extra: dict[str, Any]) -> GovernError:
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, GovernError)):
        cls = SqlError
    return cls(detail, **extra)


# -- in the gateway ----------------------------------------------------------------------------
class _Worker:
    """One worker process, seen from the gateway."""

    def __init__(self, context: multiprocessing.context.SpawnContext, settings: Settings, memory: int,
                 workers: int) -> None:
        parent, child = context.Pipe(duplex=True)
        cancels_read, cancels = context.Pipe(duplex=False)
        self.process = context.Process(target=worker_main, args=(child, cancels_read, settings, memory, workers),
                                       name="govern-sql-worker", daemon=True)
        self.process.start()
        child.close()
        cancels_read.close()
        self.conn: Connection = parent
        self.cancels: Connection = cancels
        self.jobs = itertools.count(1)
        self.policy: str | None = None  # the policy version it serves
        self.world = _world_key(settings)  # the settings it serves under
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the worker's first message (its imports are done)."""
        try:
            return self.conn.poll(max(0.0, timeout)) and self.conn.recv_bytes(16) == _READY
        except (EOFError, OSError):
            return False

    def alive(self) -> bool:
        return not self.killed and self.process.is_alive()

    def kill(self) -> None:
        """SIGKILL. The socket is closed later (:meth:`dispose`): a thread blocked reading it
        wakes up with end-of-file when the process dies, and never reads a reused descriptor."""
        self.killed = True
        try:
            self.process.kill()
        except (OSError, ValueError):
            pass
        self.process.join(5)

    def dispose(self) -> None:
        self.conn.close()
        self.cancels.close()

    def stop(self) -> None:
        """Ask it to exit after its current job; kill it if it does not."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.kill()
        self.dispose()


class _Lease:
    """One job on one worker: sending it, reading the answer, and the deadline."""

    def __init__(self, service: SqlService, worker: _Worker, deadline: float, limit: float) -> None:
        self.service = service
        self.worker = worker
        self.deadline = deadline
        self.limit = limit  # the time limit the deadline stands for (for messages)
        self.done = False  # the worker answered completely: it may take another job
        self.expired = False
        self.number = next(worker.jobs)
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # one thread reads the socket at a time
        self._closed = False

    # -- talking to the worker -----------------------------------------------------------------
    def send(self, job: Job, policy: PolicySet | None, settings: Settings | None = None) -> None:
        """Send ``job``, with the policy (and settings) the worker must serve it under when they
        are not the ones it serves already."""
        worker = self.worker
        world = _world_key(settings or self.service.settings)
        install = None
        if policy is not None and (worker.policy != policy.version or worker.world != world):
            install = (settings if worker.world != world else None, policy)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout()
        try:
            worker.conn.send((self.number, install, remaining, job))
        except (OSError, ValueError):
            raise self._lost() from None
        if install is not None:
            worker.policy = policy.version if policy is not None else None
            worker.world = world

    def receive(self, until: float | None = None) -> tuple[bytes, memoryview]:
        """The worker's next message (tag, body); waits until the deadline (or ``until``), then
        kills it."""
        with self._reading:
            return self._receive(until)

    def _receive(self, until: float | None) -> tuple[bytes, memoryview]:
        conn = self.worker.conn
        end = self.deadline + KILL_GRACE if until is None else min(until, self.deadline + KILL_GRACE)
        try:
            ready = conn.poll(max(0.0, end - time.monotonic()))
        except (OSError, ValueError):
            raise self._lost() from None
        if not ready:
            self.expire()
            raise self._timeout()
        try:
            data = conn.recv_bytes(self.service.max_message)
        except OSError as exc:
            if "bad message length" not in str(exc):
                raise self._lost() from None
            self.expire()  # the stream is out of step now: the worker cannot serve again
            limit = self.service.max_message
            raise LimitExceeded(f"the worker's answer is larger than {limit} bytes", limit=limit,
                                sqlstate="54000") from None
        except (EOFError, ValueError):
            raise self._lost() from None
        view = memoryview(data)
        return bytes(view[:1]), view[1:]

    def failed(self, body: memoryview) -> GovernError:
        """The job's error; the worker goes back to the pool unless it ran out of memory (what
        it freed may not be given back to the system: it is replaced)."""
        error = _rebuild(*pickle.loads(body))
        if isinstance(error, QueryTimeout):
            error = self._timeout()  # the limit the caller set, not what was left when the worker began
        if error.extra.get("sqlstate") == "53200":
            self.discard()
        else:
            self.finish()
        return error

    def value(self) -> object:
        tag, body = self.receive()
        if tag == _VALUE:
            self.finish()
            return pickle.loads(body)
        if tag == _ERROR:
            raise self.failed(body)
        self.close()
        raise SqlError("the SQL worker answered out of turn", sqlstate="XX000")

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                tag, body = self.receive()
                if tag == _BATCH:
                    batch = pa.ipc.open_stream(pa.py_buffer(body)).read_next_batch()
                    yield batch.cast(schema) if batch.schema != schema else batch
                elif tag == _END:
                    self.finish()
                    return
                elif tag == _ERROR:
                    raise self.failed(body)
                else:
                    raise SqlError("the SQL worker answered out of turn", sqlstate="XX000")
        finally:
            self.close()

    # -- ends --------------------------------------------------------------------------------
    @property
    def over(self) -> bool:
        return self._closed

    def finish(self) -> None:
        """The worker answered completely: give it back."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.done = True
        self.service._release(self.worker, healthy=True)

    def discard(self) -> None:
        """The job is over but its worker should not serve another: replace it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.service._release(self.worker, healthy=False)

    def close(self) -> None:
        """Stop the job if it still runs and free the worker: ask the worker to cancel it and
        read what it still sends up to its final message (at most ``CANCEL_WAIT`` seconds);
        a worker that does not get there is killed and replaced."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            drain = not self.expired and not self.worker.killed
        # another thread reading the socket right now (a cancel from elsewhere): kill, it wakes up
        if drain and self._reading.acquire(blocking=False):
            try:
                healthy = self._drain()
            finally:
                self._reading.release()
        else:
            healthy = False
        self.service._release(self.worker, healthy=healthy)

    def _drain(self) -> bool:
        until = time.monotonic() + CANCEL_WAIT
        try:
            self.worker.cancels.send_bytes(str(self.number).encode())
            while True:
                tag, _ = self._receive(until)
                if tag in (_END, _ERROR, _VALUE):
                    return True
        except (GovernError, OSError, ValueError):
            return False

    def expire(self) -> None:
        """The deadline passed (plus grace): kill the worker, whoever is waiting for it."""
        with self._lock:
            if self._closed or self.expired:
                return
            self.expired = True
        self.worker.kill()

    def _timeout(self) -> QueryTimeout:
        return QueryTimeout(f"the query ran longer than {self.limit:g} s and was stopped",
                            limit=self.limit, sqlstate="57014")

    def _lost(self) -> GovernError:
        """The worker is gone: our deadline kill, or it died (most likely out of memory)."""
        if self.expired:
            return self._timeout()
        if self.worker.killed:
            return SqlError("the query was cancelled", sqlstate="57014")
        self.worker.process.join(1)
        code = self.worker.process.exitcode
        log.warning("SQL worker died", extra={"exitcode": code, "pid": self.worker.pid})
        memory = self.service.settings.sql_worker_memory
        return LimitExceeded(f"the query's worker process died (exit code {code}); most likely the query needs "
                             f"more memory than a worker may use ({memory})", limit=memory, sqlstate="53200")


class SqlService:
    """Analyst SQL for a gateway, run in a pool of ``sql_workers`` worker processes.

    Thread-safe: many request threads may call it at once; each call takes one worker (waiting
    until one is free, at most until the deadline). See the module docstring for the contract.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.size = max(1, settings.sql_workers)  # workers kept running
        # More start while every one is busy — a streaming query or a suspended wire portal holds
        # its worker until its stream ends — up to one per read slot; they stop when freed.
        self.most = max(self.size, settings.max_concurrent_reads)
        self.memory = parse_size(settings.sql_worker_memory) if settings.sql_worker_memory else 0
        self.max_message = settings.sql_batch_bytes + 1_048_576  # a batch, or a value with its framing
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0
        self._waiting = 0  # leases waiting for a worker
        self._cond = threading.Condition()
        self._closed = False
        self._leases: list[tuple[float, int, _Lease]] = []  # heap of (kill time, tiebreak, lease)
        self._count = itertools.count()
        self._monitor: threading.Thread | None = None
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- public ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers in the background (the gateway calls this at startup; without it
        they start on first use)."""
        with self._cond:
            missing = self.size - len(self._all) - self._starting
            self._starting += max(0, missing)
        for _ in range(max(0, missing)):
            threading.Thread(target=self._spawn_idle, name="govern-sql-worker-start", daemon=True).start()

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until every worker is started and idle (tests and benchmarks)."""
        self.start()
        with self._cond:
            return self._cond.wait_for(lambda: len(self._idle) >= self.size or self._closed, timeout)

    def run(self, principal: Principal, purpose: str, sql: str, params: list[Any] | None,
            policy: PolicySet, deadline: float, settings: Settings | None = None,
            cancel: threading.Event | None = None) -> SqlResult:
        """Run ``sql`` in a worker; the result streams from it. ``deadline`` is absolute
        (``time.monotonic()``) and covers everything until the last batch; ``close()`` the
        result when done (before its end, it stops the worker's query). Setting ``cancel``
        while the query runs stops it (SQLSTATE 57014; a PostgreSQL CancelRequest)."""
        lease = self._lease(deadline, settings)
        try:
            lease.send(RunJob(principal, purpose, sql, params), policy, settings)
            while cancel is not None and not lease.worker.conn.poll(0.1):
                if cancel.is_set():
                    raise SqlError("canceling statement due to user request", sqlstate="57014")
                if time.monotonic() > deadline:
                    break  # receive() reports the timeout
            tag, body = lease.receive()
            if tag == _ERROR:
                raise lease.failed(body)
            if tag != _META:
                raise SqlError("the SQL worker answered out of turn", sqlstate="XX000")
            meta = pickle.loads(body)
        except BaseException:
            lease.close()
            raise
        schema: pa.Schema = meta["schema"]
        return SqlResult(schema=schema, reader=pa.RecordBatchReader.from_batches(schema, lease.batches(schema)),
                         datasets=meta["datasets"], plans=meta["plans"], columns=meta["columns"],
                         access_plans=meta["access_plans"], cached=meta["cached"],
                         suppressed_groups=meta.get("suppressed_groups"), _on_close=lease.close)

    def describe(self, principal: Principal, purpose: str, sql: str, params: list[Any] | None,
                 policy: PolicySet, deadline: float, settings: Settings | None = None) -> pa.Schema:
        """The result schema of ``sql`` over empty views (no data is read)."""
        value = self.submit(DescribeJob(principal, purpose, sql, params), policy, deadline, settings)
        assert isinstance(value, pa.Schema)
        return value

    def tables(self, principal: Principal, purpose: str, policy: PolicySet,
               deadline: float | None = None, settings: Settings | None = None) -> dict[str, pa.Schema]:
        """Masked schemas of the datasets ``principal`` may read under ``purpose``."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.sql_timeout
        value = self.submit(TablesJob(principal, purpose), policy, deadline, settings)
        assert isinstance(value, dict)
        return value

    def submit(self, job: Job, policy: PolicySet | None, deadline: float,
               settings: Settings | None = None) -> object:
        """Run any picklable ``job`` in a worker and return its (picklable) value. ``settings``:
        the gateway's, when this pool serves gateways with other settings than its own (tests
        share one pool between many demo worlds)."""
        lease = self._lease(deadline, settings)
        try:
            lease.send(job, policy, settings)
            return lease.value()
        finally:
            lease.close()

    def workers(self) -> list[int]:
        """Process ids of the live workers (tests, metrics)."""
        with self._cond:
            return sorted(w.pid for w in self._all if w.pid is not None)

    def close(self) -> None:
        """Stop every worker (busy ones are killed)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, busy = list(self._idle), [w for w in self._all if w not in self._idle]
            self._idle.clear()
            self._all.clear()
            self._cond.notify_all()
        for worker in busy:
            worker.kill()  # its lease disposes of the socket
        for worker in idle:
            worker.stop()
        if self._monitor is not None:
            self._monitor.join(2)

    # -- the pool ----------------------------------------------------------------------------
    def _lease(self, deadline: float, settings: Settings | None = None) -> _Lease:
        """A worker for one job: an idle one, else one started now (in the background: a slow
        start must not be cut short by this query's deadline), else the next one freed —
        waiting at most ``queue_timeout`` for a busy worker. Time spent waiting for a worker
        to *start* (the first queries after startup, or after one was replaced) is not the
        query's: its deadline moves by that much (at most ``START_TIMEOUT``)."""
        now = time.monotonic()
        limit = (settings or self.settings).sql_timeout  # what the deadline stands for, in messages
        wait_until = min(deadline, now + self.settings.queue_timeout)
        starting_since: float | None = None  # waiting for a worker being started, since
        worker: _Worker | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise SqlError("the SQL service is stopped", sqlstate="57P01")
                while self._idle and worker is None:
                    candidate = self._idle.pop()
                    if candidate.alive():
                        worker = candidate
                    else:
                        self._all.discard(candidate)
                if worker is not None:
                    break
                if len(self._all) + self._starting < self.most:
                    self._starting += 1
                    threading.Thread(target=self._spawn_idle, name="govern-sql-worker-start", daemon=True).start()
                if self._starting and starting_since is None:
                    starting_since = time.monotonic()
                elif not self._starting and starting_since is not None:  # started: back to the queue
                    moved = time.monotonic() - starting_since
                    deadline, wait_until, starting_since = deadline + moved, wait_until + moved, None
                if self._starting:
                    left = starting_since + START_TIMEOUT - time.monotonic() if starting_since else 0.0
                else:
                    left = wait_until - time.monotonic()
                self._waiting += 1
                try:
                    woken = left > 0 and self._cond.wait(left)
                finally:
                    self._waiting -= 1
                if not woken:
                    if self._idle:
                        continue
                    if self._starting:
                        raise SqlError("no SQL worker process could be started in time", sqlstate="57P03")
                    if time.monotonic() >= deadline:
                        raise QueryTimeout(f"the query ran longer than {limit:g} s and was stopped",
                                           limit=limit, sqlstate="57014")
                    raise LimitExceeded(f"all {len(self._all)} SQL workers are busy; try again", limit=self.most,
                                        sqlstate="53300")
        if starting_since is not None:
            deadline += time.monotonic() - starting_since
        lease = _Lease(self, worker, deadline, limit)
        self._watch(lease)
        return lease

    def _spawn(self, timeout: float = START_TIMEOUT) -> _Worker:
        try:
            worker = _Worker(self._context, self.settings, self.memory, self.size)
            if not worker.wait_ready(timeout):
                worker.kill()
                worker.dispose()
                raise SqlError("an SQL worker process did not start in time", sqlstate="57P03")
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._starting -= 1
            if self._closed:
                worker.kill()
                raise SqlError("the SQL service is stopped", sqlstate="57P01")
            self._all.add(worker)
        return worker

    def _spawn_idle(self) -> None:
        try:
            worker = self._spawn()
        except Exception as exc:
            log.warning("could not start an SQL worker", extra={"error": type(exc).__name__})
            return
        with self._cond:
            self._idle.append(worker)
            self._cond.notify_all()

    def _release(self, worker: _Worker, *, healthy: bool) -> None:
        if healthy and worker.alive():
            with self._cond:
                if not self._closed and worker in self._all and (len(self._all) <= self.size or self._waiting):
                    self._idle.append(worker)
                    self._cond.notify_all()
                    return
                surplus = not self._closed and worker in self._all  # started for a busy moment
            if surplus:
                with self._cond:
                    self._all.discard(worker)
                    self._cond.notify_all()
                worker.stop()
                return
        if not worker.killed:
            worker.kill()
        worker.dispose()
        with self._cond:
            self._all.discard(worker)
            replace = not self._closed and len(self._all) + self._starting < self.size
            if replace:
                self._starting += 1
            self._cond.notify_all()
        if replace:  # a fresh worker, in the background: the next query need not wait for it
            threading.Thread(target=self._spawn_idle, name="govern-sql-worker-start", daemon=True).start()

    # -- deadlines ---------------------------------------------------------------------------
    def _watch(self, lease: _Lease) -> None:
        with self._cond:
            heapq.heappush(self._leases, (lease.deadline + KILL_GRACE, next(self._count), lease))
            if self._monitor is None:
                self._monitor = threading.Thread(target=self._watch_deadlines, name="govern-sql-deadlines",
                                                 daemon=True)
                self._monitor.start()
            self._cond.notify_all()

    def _watch_deadlines(self) -> None:
        """Kill the worker of every lease past its deadline that nobody is waiting for (a
        client that stopped reading): the worker must not stay blocked on a full socket."""
        while True:
            due: list[_Lease] = []
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                while self._leases and (self._leases[0][2].over or self._leases[0][0] <= now):
                    _, _, lease = heapq.heappop(self._leases)
                    if not lease.over:
                        due.append(lease)
                if not due:
                    self._cond.wait(self._leases[0][0] - now if self._leases else None)
                    continue
            for lease in due:
                lease.expire()
                lease.close()  # frees the slot; the reader, if it comes back, gets QueryTimeout


def _world_key(settings: Settings) -> str:
    """Which settings a worker serves under (secrets included: pickle keeps SecretStr values)."""
    return hashlib.sha256(pickle.dumps(settings, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()


def _close_at_exit(ref: weakref.ref[SqlService]) -> None:
    service = ref()
    if service is not None:
        service.close()
