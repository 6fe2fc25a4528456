"""Group commit: one writer thread per log drains a queue, many requests share one transaction.

Three kinds of work reach the writer:

- ``reserve(request_id)`` and ``append(record)`` — the caller waits until its work is committed
  (and, for records, anchored by a checkpoint). They go first: whatever is waiting when the
  writer is free is committed together, so under load N requests cost one transaction and
  one fsync instead of N, and the chain stays contiguous (the store seals a group behind the
  head it locks; across processes the store's lock still orders the groups).
- ``submit(record)`` — never blocks: the record joins a bounded queue that the writer drains
  through a token bucket: at most ``rate`` records per ``delay`` seconds (256 per 100 ms),
  ``chunk`` per transaction. While the bucket has tokens, submitted records are committed at
  once and in order with appends (an append takes the up to ``chunk`` older submitted records
  along into its transaction, so seq order is request order); once a flood has used the
  tokens, they wait for the next window and appends no longer take them along. This is for
  refusals before authentication: a flood of bad tokens costs the writer at most ``rate``
  records per ``delay``, and an authenticated append waits at most for one chunk.
- when more than ``queue_limit`` submitted records are waiting, further ones are coalesced
  into a single record saying how many requests it stands for, with their first and last
  request ids; memory never grows with the flood.

If a transaction fails, the waiting callers get the ``AuditError`` (the request fails, as
invariant 4 demands); submitted records stay queued and are retried with a growing pause.
``flush(timeout)`` waits until everything queued before it is committed (lifting the rate);
``close()`` flushes, then stops the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from govern.audit.record import AuditRecord
from govern.errors import AuditError

log = logging.getLogger("govern.audit")

Commit = Callable[[Sequence[str], Sequence[AuditRecord]], list[AuditRecord]]
"""``(request ids to reserve, records to seal) -> sealed records``, in one transaction."""
Checkpointer = Callable[[list[AuditRecord]], None]
"""Called with each committed group of records (to write its checkpoint); may raise ``OSError``."""
_COALESCED_KEYS = frozenset({"coalesced", "first_request_id", "last_request_id", "first_time",
                             "last_time", "statuses"})


@dataclass
class _Job:
    """A caller waiting for its reservation or record to be committed."""

    reserve: str | None
    record: AuditRecord | None
    ticket: int = 0
    done: Future[AuditRecord | None] = field(default_factory=Future)


@dataclass
class Coalesced:
    """Submitted records that found the queue full, summed up as one record."""

    count: int = 0
    first: tuple[int, AuditRecord] | None = None  # (ticket, record)
    last: tuple[int, AuditRecord] | None = None
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, ticket: int, rec: AuditRecord) -> None:
        standing_for = rec.extra.get("coalesced") if set(rec.extra) == _COALESCED_KEYS else None
        self.count += standing_for if isinstance(standing_for, int) else 1
        if self.first is None or ticket < self.first[0]:
            self.first = (ticket, rec)
        if self.last is None or ticket > self.last[0]:
            self.last = (ticket, rec)
        key = f"{rec.outcome} {rec.status}"
        if key in self.statuses or len(self.statuses) < 16:
            self.statuses[key] = self.statuses.get(key, 0) + 1
        else:
            self.statuses["other"] = self.statuses.get("other", 0) + 1

    def record(self) -> AuditRecord:
        """One record for all of them: the first one's action, outcome and status (the
        breakdown is in ``extra["statuses"]``), no principal, purpose or dataset."""
        assert self.first is not None and self.last is not None
        first, last = self.first[1], self.last[1]
        return AuditRecord(
            seq=None, time=last.time, request_id=first.request_id, principal=None, purpose=None,
            dataset=None, action=first.action, outcome=first.outcome, status=first.status,
            plan_hash=None, detail=f"{self.count} requests coalesced: the audit queue was full",
            extra={"coalesced": self.count, "first_request_id": first.request_id,
                   "last_request_id": last.request_id, "first_time": first.time,
                   "last_time": last.time, "statuses": dict(self.statuses)},
            policy_version=first.policy_version)


class GroupWriter:
    """The queue and the thread behind one :class:`~govern.audit.log.AuditLog`."""

    def __init__(self, commit: Commit, anchor: Checkpointer | None, *, queue_limit: int = 256,
                 delay: float = 0.1, batch_max: int = 256, rate: int = 256, chunk: int = 16,
                 name: str = "audit") -> None:
        if min(queue_limit, batch_max, rate, chunk) < 1 or delay <= 0:
            raise ValueError("queue_limit, batch_max, rate, chunk and delay must be positive")
        self._commit = commit
        self._anchor = anchor
        self.queue_limit, self.delay = queue_limit, delay
        self.batch_max, self.rate, self.chunk = batch_max, rate, chunk
        self._allowance = 0  # submitted records the current window may still commit
        self._window_end = 0.0  # when the allowance is refilled
        self._name = name
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._waiting: deque[tuple[int, AuditRecord]] = deque()
        self._overflow = Coalesced()
        self._tickets = 0
        self._retry_at = 0.0  # after a failed transaction, no retry of submitted records before
        self._backoff = 0.0
        self._in_flight: list[int] = []  # tickets of the transaction being committed
        self._flushes = 0
        self._closing = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.coalesced = 0  # submitted records summed up into coalesced ones (a metric)

    # -- callers --------------------------------------------------------------------------------
    def reserve(self, request_id: str) -> None:
        self._wait(_Job(request_id, None))

    def append(self, record: AuditRecord) -> AuditRecord:
        sealed = self._wait(_Job(None, record))
        assert sealed is not None
        return sealed

    def submit(self, record: AuditRecord) -> None:
        with self._cond:
            self._check_open()
            self._tickets += 1
            if len(self._waiting) < self.queue_limit:
                first = not self._waiting and not self._overflow.count
                self._waiting.append((self._tickets, record))
                if first:  # the writer may commit it now; later records change nothing for it
                    self._start()
                    self._cond.notify()
            else:
                self._overflow.add(self._tickets, record)
                self.coalesced += 1

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every reservation and record queued before this call is committed (later
        ones may still wait); ``AuditError`` if some are not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            upto = self._tickets
            self._flushes += 1
            self._cond.notify_all()
            try:
                while self._oldest() <= upto and not self._stopped:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                late = self._oldest() <= upto
                left_over = self._backlog()
            finally:
                self._flushes -= 1
        if late:
            raise AuditError(f"audit log: records not committed within {timeout:g}s "
                             f"({left_over} waiting)")

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new work, commit what is queued (log what could not be), stop the thread."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        try:
            self.flush(timeout)
        except AuditError as exc:
            log.error("%s: closing with records lost: %s", self._name, exc)
        with self._cond:
            self._stopped = True
            for job in self._jobs:
                job.done.set_exception(AuditError("audit log is closed"))
            self._jobs.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- internals ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise AuditError("audit log is closed")

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self._name}-writer",
                                            daemon=True)
            self._thread.start()

    def _backlog(self) -> int:
        return len(self._jobs) + len(self._waiting) + self._overflow.count + len(self._in_flight)

    def _oldest(self) -> float:
        """The smallest ticket not yet committed (infinity when nothing waits)."""
        tickets = [*self._in_flight, *(j.ticket for j in self._jobs), *(t for t, _ in self._waiting)]
        if self._overflow.first is not None:
            tickets.append(self._overflow.first[0])
        return min(tickets, default=float("inf"))

    def _wait(self, job: _Job) -> AuditRecord | None:
        with self._cond:
            self._check_open()
            self._tickets += 1
            job.ticket = self._tickets
            self._jobs.append(job)
            self._start()
            self._cond.notify()
        return job.done.result()

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
                jobs, submitted = batch
                self._in_flight = [*(j.ticket for j in jobs), *(t for t, _ in submitted)]
            try:
                self._run_batch(jobs, submitted)
            except Exception:  # a bug, not a storage failure: fail the waiting callers
                log.exception("%s: writer failed", self._name)
                for job in jobs:
                    if not job.done.done():
                        job.done.set_exception(AuditError("audit log unavailable: writer failed"))
            finally:
                with self._cond:
                    self._in_flight = []
                    self._cond.notify_all()

    def _urgent(self) -> bool:
        return self._closing or self._flushes > 0

    def _next_batch(self) -> tuple[list[_Job], list[tuple[int, AuditRecord]]] | None:
        """Wait for work; take a group (call with the lock held). None: stop."""
        while True:
            if self._stopped:
                return None
            now = time.monotonic()
            if now >= self._window_end:
                self._allowance, self._window_end = self.rate, now + self.delay
            queued = bool(self._waiting or self._overflow.count)
            retry_ok = now >= self._retry_at
            drain = queued and retry_ok and (self._urgent() or self._allowance > 0)
            if self._jobs or drain:
                break
            if queued:
                wake = self._retry_at if self._urgent() else max(self._window_end, self._retry_at)
                self._cond.wait(max(0.0, wake - now))
            else:
                self._cond.wait()
        jobs = [self._jobs.popleft() for _ in range(min(len(self._jobs), self.batch_max))]
        if not retry_ok:
            take = 0
        elif self._urgent():
            take = self.batch_max
        else:
            take = min(self.chunk, self._allowance)
        if jobs:  # only submitted records older than the appends, to keep request order
            newest, older = jobs[-1].ticket, 0
            for ticket, _ in self._waiting:
                if older >= take or ticket >= newest:
                    break
                older += 1
            take = older
        submitted = [self._waiting.popleft() for _ in range(min(take, len(self._waiting)))]
        self._allowance -= len(submitted)
        if (self._overflow.count and len(self._waiting) < self.queue_limit
                and (submitted or not self._waiting)):
            ticket = self._overflow.first[0] if self._overflow.first else self._tickets
            self._waiting.append((ticket, self._overflow.record()))
            self._overflow = Coalesced()
        return jobs, submitted

    def _run_batch(self, jobs: list[_Job], submitted: list[tuple[int, AuditRecord]]) -> None:
        reserves = [j.reserve for j in jobs if j.reserve is not None]
        ordered = sorted([(j.ticket, j.record, j) for j in jobs if j.record is not None]
                         + [(t, r, None) for t, r in submitted], key=lambda item: item[0])
        records = [r for _, r, _ in ordered]
        try:
            sealed = self._commit(reserves, records)
        except Exception as exc:
            error = exc if isinstance(exc, AuditError) else AuditError(
                f"audit log unavailable: cannot append ({type(exc).__name__})")
            self._requeue(submitted, error)
            for job in jobs:
                job.done.set_exception(error)
            return
        self._backoff = 0.0
        anchored: AuditError | None = None
        if sealed and self._anchor is not None:
            try:
                self._anchor(sealed)
            except OSError as exc:
                log.error("%s: checkpoint not written (records up to %s are committed but not "
                          "anchored): %s", self._name, sealed[-1].seq, exc.strerror)
                anchored = AuditError(f"audit log unavailable: cannot write checkpoint "
                                      f"({type(exc).__name__})")
        result = {id(job): rec for (_, _, job), rec in zip(ordered, sealed, strict=True)
                  if job is not None}
        for job in jobs:
            if anchored is not None:
                job.done.set_exception(anchored)
            else:
                job.done.set_result(result.get(id(job)))

    def _requeue(self, submitted: list[tuple[int, AuditRecord]], error: AuditError) -> None:
        with self._cond:
            if submitted:
                self._waiting.extendleft(reversed(submitted))
                while len(self._waiting) > self.queue_limit:
                    ticket, rec = self._waiting.pop()
                    self._overflow.add(ticket, rec)
                self._backoff = min(2.0, max(0.1, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
                log.warning("%s: %d submitted record(s) kept for a retry in %.1fs: %s",
                            self._name, len(self._waiting), self._backoff, error)
