"""THE request lifecycle every surface goes through.

::

    authenticate ─► purpose ─► authorize ─► bound ─► execute ─► audit (exactly once)
    who are you?    why?       may you?     slot,     the work     one record per request,
                                            deadline               data-bearing or refused

A surface (HTTP, the PostgreSQL wire, anything added later) turns what arrived into a
:class:`Call`, opens an :class:`Exchange` for it and walks the steps in that order. The
exchange, not the surface, writes the audit record and holds the read slot, so a surface cannot
forget either:

- leaving the ``with`` block by an exception records the refusal (``denied`` for 4xx, ``error``
  for 5xx) with the error's status and type, and frees the slot;
- a result is delivered through :meth:`Exchange.finish` (one ``ok`` record, written before the
  response leaves) or :meth:`Exchange.stream` (the record is written when the stream ends:
  ``ok`` just before its end marker, ``aborted`` if the client leaves or the source fails);
- leaving the block without either is a programming error: it is recorded as an ``error`` and
  raised, never silently unaudited;
- the steps check their order: no slot, plan or data before authentication and a purpose, so
  expensive work (body parsing, SQL validation, TenSEAL deserialization) cannot run for a caller
  who was never identified and authorized.

Records of refusals before authentication (a flood of bad tokens) are handed to the audit log
without waiting (:meth:`AuditLog.submit`, group-committed and bounded); every other record is
committed before the call returns, and if that write fails the request fails.

The client's own request id (``X-Request-Id``) is recorded as ``extra.client_request_id`` but
never used as a key: every exchange has a fresh server-made id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from govern.audit.log import AuditLog
from govern.audit.record import AuditRecord
from govern.config import Settings
from govern.deliver.governor import Governor, PolicyState
from govern.deliver.limits import Deadline, ReadSlots, Slot
from govern.deliver.metrics import Metrics
from govern.errors import (
    AccessDenied,
    AuditError,
    GovernError,
    NotFound,
    PurposeRequired,
    TicketStale,
)
from govern.identity.authenticate import Authenticator
from govern.identity.principal import Principal
from govern.identity.tickets import Ticket, open_ticket
from govern.plan.compile import authorize_purpose
from govern.plan.model import AccessPlan

__all__ = ["ACTIONS_SEEN", "AuditedStream", "Bearer", "Call", "Credentials", "Exchange", "Lifecycle", "Password",
           "outcome_of"]

log = logging.getLogger("govern.deliver")

T = TypeVar("T")

# Actions whose grant on a dataset make the dataset "visible" to a principal: without any of
# them an existing dataset is answered exactly like an unknown one (no existence oracle).
ACTIONS_SEEN: tuple[str, ...] = ("read", "query_dp", "read_synthetic", "read_encrypted", "reidentify",
                                 "administer")
# 501: a request form govern refuses by design (a protocol message, a Flight command) — a denial,
# not a failure of the gateway.
_DENIED = frozenset({400, 401, 403, 404, 405, 406, 409, 411, 413, 415, 416, 422, 428, 429, 431, 501})


def outcome_of(status: int) -> str:
    """The audit outcome of a response status: refused by rule or input, or failed."""
    if status == 499:
        return "aborted"
    return "denied" if status in _DENIED else ("ok" if status < 400 else "error")


@dataclass(frozen=True)
class Bearer:
    """``Authorization: Bearer <API key | JWT>`` (HTTP, Flight)."""

    header: str | None


@dataclass(frozen=True)
class Password:
    """User name and API key (the PostgreSQL wire: user = principal, password = key). A session
    keeps it and is resolved again on every statement, so a revoked key or changed attributes
    reach open sessions."""

    user: str
    password: str = field(repr=False)


Credentials = Bearer | Password


@dataclass(frozen=True)
class Call:
    """What arrived, before anything is known about who sent it."""

    surface: str  # "http", "pgwire", ...
    route: str  # the route or message, for the audit record and metrics
    action: str  # the audit action ("read", "sql", "query_dp", ...)
    dataset: str | None = None
    client_request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Lifecycle:
    """What every exchange needs: policy, identity, audit, slots, settings. One per gateway."""

    def __init__(self, settings: Settings, governor: Governor, authenticator: Authenticator, audit: AuditLog,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.governor = governor
        self.authenticator = authenticator
        self.audit = audit
        self.metrics = metrics
        self.slots = ReadSlots(settings.max_concurrent_reads, settings.max_reads_per_principal
                               or max(1, settings.max_concurrent_reads // 2))

    def open(self, call: Call) -> Exchange:
        return Exchange(self, call)


class Exchange:
    """One request's way through the lifecycle. Use as a context manager."""

    def __init__(self, lifecycle: Lifecycle, call: Call) -> None:
        self._life = lifecycle
        self.call = call
        self.request_id = uuid.uuid4().hex
        self.state: PolicyState = lifecycle.governor.state  # one policy version per request
        self.principal: Principal | None = None
        self.purpose: str | None = None
        self.dataset: str | None = call.dataset
        self.action = call.action
        self.plan: AccessPlan | None = None
        self.extra: dict[str, Any] = dict(call.extra)
        if call.client_request_id:
            self.extra["client_request_id"] = call.client_request_id[:128]
        self.deadline: Deadline | None = None
        self.record: AuditRecord | None = None
        self._slot: Slot | None = None
        self._handed_off = False
        self._stream: AuditedStream[Any] | None = None
        self._reserve_due = False  # admit(defer_reserve=True): reserve before a first byte leaves
        self._lock = threading.Lock()
        self._recorded = False

    # -- the context -----------------------------------------------------------------------------
    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.refuse(exc)
            return
        if not self._handed_off and not self._recorded:
            self.refuse(GovernError(f"{self.call.surface} {self.call.route} ended without an outcome"))
            raise RuntimeError(f"{self.call.route}: the exchange ended without finish() or stream()")

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.__exit__, kind, exc, tb)  # the audit write blocks

    @property
    def settings(self) -> Settings:
        return self._life.settings

    @property
    def settled(self) -> bool:
        """Whether the exchange has its record (or a stream that will write it)."""
        return self._recorded or self._handed_off

    # -- 1. authenticate -----------------------------------------------------------------------------
    def authenticate(self, credentials: Credentials) -> Principal:
        auth = self._life.authenticator
        if isinstance(credentials, Bearer):
            principal = auth.authenticate(credentials.header)
        else:
            principal = auth.authenticate_password(credentials.user, credentials.password)
        self.principal = principal
        return principal

    def redeem(self, text: str, *, kind: str, now: float) -> Ticket:
        """Authenticate by a plan-bound ticket (:mod:`govern.identity.tickets`) and declare its
        purpose again under the current policy. The caller then compiles the plan and calls
        :meth:`check_ticket`: a ticket is a credential, never a decision."""
        try:
            ticket = open_ticket(text, self._life.governor.keys, kind=kind, now=now)
        except GovernError as exc:
            self.extra["ticket"] = exc.extra.get("reason")
            raise
        self.extra["ticket"] = {"kind": ticket.kind, "subject": ticket.subject}
        self.principal = self._life.authenticator.current(ticket.principal)
        self.declare(ticket.purpose)
        return ticket

    def check_ticket(self, ticket: Ticket, plan: AccessPlan, data_version: str) -> None:
        """Refuse ``ticket`` unless the plan compiled now and the data now are what it was
        issued for."""
        if ticket.dataset != plan.dataset or ticket.plan_hash != plan.hash:
            raise TicketStale("the access plan changed since this ticket was issued (policy or grants "
                              "changed): ask the gateway for a new one", reason="plan changed")
        if ticket.data_version != data_version:
            raise TicketStale("the data changed since this ticket was issued: ask the gateway for a new one",
                              reason="data changed")

    # -- 2. purpose ------------------------------------------------------------------------------------
    def declare(self, *candidates: str | None) -> str:
        """The first non-empty declared purpose, if the principal may act under it."""
        principal = self._need_principal("declare a purpose")
        decider = self.state.decider
        purpose = next((c.strip() for c in candidates if c and c.strip()), "")
        if not purpose:
            raise PurposeRequired("declare a purpose with the X-Purpose header or the 'purpose' parameter",
                                  purposes=decider.purposes(principal))
        self.purpose = purpose
        authorize_purpose(decider, principal, purpose)
        return purpose

    # -- 3. authorize ----------------------------------------------------------------------------------
    def authorize(self, dataset: str, action: str | None = None) -> None:
        """``action`` (default: the call's) on ``dataset`` under the declared purpose.

        A dataset the principal has no grant on at all (none of :data:`ACTIONS_SEEN`) gets the
        same answer as one that does not exist; otherwise a denial says which rule decided."""
        principal, purpose = self._need_purpose("authorize")
        action = action or self.action
        self.dataset = dataset
        decider = self.state.decider
        if dataset not in self.state.policy.datasets or not self.sees(dataset):
            raise NotFound(f"no dataset '{dataset}' is available to you for purpose '{purpose}'")
        decision = decider.decide(principal, f"dataset:{dataset}", action, purpose)
        if not decision.allowed:
            raise AccessDenied(f"'{action}' on dataset '{dataset}' for purpose '{purpose}' is denied: "
                               f"{decision.reason.detail}", decision=decision.to_dict())

    def sees(self, dataset: str) -> bool:
        """Whether the principal has any grant on ``dataset`` under the declared purpose."""
        principal, purpose = self._need_purpose("look up datasets")
        decide = self.state.decider.decide
        return any(decide(principal, f"dataset:{dataset}", a, purpose).allowed for a in ACTIONS_SEEN)

    def datasets(self, action: str | None = None) -> list[str]:
        """Datasets the principal may ``action`` (default: the call's) under the declared purpose."""
        principal, purpose = self._need_purpose("look up datasets")
        decide = self.state.decider.decide
        action = action or self.action
        return [n for n in sorted(self.state.policy.datasets)
                if decide(principal, f"dataset:{n}", action, purpose).allowed]

    def permitted(self, action: str | None = None) -> list[str]:
        """:meth:`datasets`, refused (AccessDenied) when there is none: a principal with no grant
        is turned away before any expensive work (parsing its SQL, say)."""
        names = self.datasets(action)
        if not names:
            assert self.principal is not None
            raise AccessDenied(f"'{self.principal.name}' may not '{action or self.action}' any dataset for "
                               f"purpose '{self.purpose}'")
        return names

    def compile(self, dataset: str, action: str | None = None) -> AccessPlan:
        """Authorize, then compile the access plan under this exchange's policy version."""
        self.authorize(dataset, action)
        principal, purpose = self._need_purpose("plan")
        plan = self._life.governor.plan(principal, dataset, purpose, action=action or self.action, state=self.state)
        self.plan = plan
        return plan

    def compile_rows(self, dataset: str) -> AccessPlan:
        """:meth:`compile` for a surface that hands out *rows* (reads, scans and fragments, Delta
        Sharing files): refused where the plan carries a result policy (min_group, projection,
        k_anonymity), which only the SQL engine and the DP routes enforce — rows would be the side
        door around it (docs/privacy.md, "Result policies")."""
        plan = self.compile(dataset, "read")
        if plan.result is not None:
            raise AccessDenied(f"dataset '{plan.dataset}' is under a result policy for purpose '{plan.purpose}' "
                               f"({plan.result.reason.source}): rows are not served; query it with POST /v1/sql "
                               "(or the PostgreSQL wire, Flight SQL), where the policy applies")
        return plan

    # -- 4. bound ---------------------------------------------------------------------------------------
    def admit(self, *, seconds: float | None = None, slot: bool = True, reserve: bool = True,
              defer_reserve: bool = False) -> Deadline:
        """Take a read slot (the principal's fair share), start the one deadline, and prove the
        audit store writable before any data is produced.

        ``defer_reserve``: prove it (commit the pending row) only when the first byte of the
        stream is about to leave the process (:meth:`AuditedStream.release`, or the first chunk
        of a stream nobody holds back). A response held back whole commits its ``ok`` record
        before anything leaves, which proves the same: a small read then costs one commit, not
        two. Only for exchanges that end in :meth:`stream`."""
        principal = self._need_principal("be admitted")
        if self.deadline is not None:
            raise RuntimeError("admit() once per exchange")
        settings = self._life.settings
        if slot:
            self._slot = self._life.slots.acquire(principal.name, settings.queue_timeout)
        self.deadline = Deadline.after(seconds if seconds is not None else settings.request_timeout)
        if defer_reserve:
            self._reserve_due = True
        elif reserve:
            self._life.audit.reserve(self.request_id)
        return self.deadline

    def reserve_now(self) -> None:
        """The reservation :meth:`admit` deferred, if it is still due (once)."""
        if self._reserve_due:
            self._life.audit.reserve(self.request_id)
            self._reserve_due = False

    # -- 5 & 6. deliver and audit ------------------------------------------------------------------------
    def finish(self, *, status: int = 200, rows: int | None = None, nbytes: int | None = None,
               detail: str | None = None) -> AuditRecord:
        """The ``ok`` record of a response built in full (write it *before* sending the response:
        if the audit store fails, nothing leaves). Frees the slot."""
        try:
            record = self._write("ok", status, rows=rows, nbytes=nbytes, detail=detail)
        finally:
            self._free()
        return record

    def stream(self, source: Callable[[Callable[[int, int], None]], Iterator[T]], *,
               close: Callable[[], None] = lambda: None,
               progress: Callable[[], tuple[int, int]] | None = None) -> AuditedStream[T]:
        """Hand the rest of the request to a stream. ``source(finish)`` must call
        ``finish(rows, bytes)`` — the ``ok`` record — before it yields its end marker;
        ``close`` frees what the source holds if the stream does not run to its end;
        ``progress`` says how many rows and bytes had gone out, for an ``aborted`` record."""
        if self._recorded or self._handed_off:
            raise RuntimeError("the exchange already has its outcome")
        self._handed_off = True
        self._stream = AuditedStream(self, source, close, progress)
        return self._stream

    def refuse(self, exc: BaseException) -> None:
        """Record ``exc`` as this request's outcome (once), and free the slot. A failed audit write
        does not change the refusal: no data goes out either way."""
        stream = self._stream
        if stream is not None and not stream.started and not self._recorded:
            stream.discard()  # handed to a stream that will never run: this is its outcome
        elif self.settled:
            self._free()
            return
        try:
            self._record_refusal(exc, wait=self.principal is not None)
        finally:
            self._free()

    def _record_refusal(self, exc: BaseException, *, wait: bool = True) -> None:
        """Write ``exc`` as a refusal (counted in the metrics); a failed audit write changes
        nothing: no data goes out either way."""
        if isinstance(exc, GovernError):
            exc.recorded = True
            self._life.metrics.denials.labels(reason=exc.slug).inc()
            status, detail = exc.status, f"{exc.slug}: {exc.detail}"
        else:
            self._life.metrics.denials.labels(reason="internal").inc()
            status, detail = 500, f"internal: {type(exc).__name__}"
        try:
            self._write(outcome_of(status), status, detail=detail, wait=wait)
        except AuditError:
            pass

    def close_as(self, status: int, detail: str, reason: str | None = None) -> None:
        """Record the outcome of a response the surface produced without this exchange (a 404 for
        an unknown route, a 422 from parameter validation), unless there is one already."""
        if self.settled:
            return
        if status >= 400:
            self._life.metrics.denials.labels(reason=reason or f"http-{status}").inc()
        try:
            self._write(outcome_of(status), status, detail=detail[:500], wait=self.principal is not None)
        except AuditError:
            pass
        finally:
            self._free()

    # -- internals ---------------------------------------------------------------------------------------
    def _need_principal(self, what: str) -> Principal:
        if self.principal is None:
            raise RuntimeError(f"authenticate before you {what}")
        return self.principal

    def _need_purpose(self, what: str) -> tuple[Principal, str]:
        principal = self._need_principal(what)
        if self.purpose is None:
            raise RuntimeError(f"declare a purpose before you {what}")
        return principal, self.purpose

    def _free(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()

    def _write(self, outcome: str, status: int, *, rows: int | None = None, nbytes: int | None = None,
               detail: str | None = None, wait: bool = True) -> AuditRecord:
        with self._lock:
            if self._recorded:
                raise RuntimeError("the exchange already has its record")
            self._recorded = True
        plan = self.plan
        columns = {c.name: (f"mask:{c.mask.function}" if c.mask else c.action) for c in plan.columns} if plan else {}
        extra = dict(self.extra)
        extra.setdefault("surface", self.call.surface)
        extra.setdefault("route", self.call.route)
        record = AuditRecord(
            seq=None, time="", request_id=self.request_id,
            principal=self.principal.name if self.principal else None,
            purpose=self.purpose, dataset=self.dataset, action=self.action, outcome=outcome, status=status,
            plan_hash=plan.hash if plan else None, columns=columns, rows=rows, bytes=nbytes,
            detail=detail[:500] if detail else None, extra=extra,
            prev_hash="", hash="", policy_version=self.state.policy.version)
        audit = self._life.audit
        if wait:
            self.record = audit.append(record)
            if outcome == "ok" and rows is not None:
                self._life.metrics.delivered(self.extra.get("datasets") or ([self.dataset] if self.dataset else []),
                                             rows, nbytes or 0)
            return self.record
        audit.submit(record)  # a refusal before authentication: group-committed, never waited for
        self.record = record
        return record


class AuditedStream(Iterator[T]):
    """The rest of a request, as an iterator: exactly one record and one slot release, whatever
    the consumer does (runs it to the end, stops midway, fails, or never starts it)."""

    def __init__(self, exchange: Exchange, source: Callable[[Callable[[int, int], None]], Iterator[T]],
                 close: Callable[[], None], progress: Callable[[], tuple[int, int]] | None = None) -> None:
        self._ex = exchange
        self._close = close
        self._progress = progress
        self._started = False
        self._done = False
        self._holding = False
        self._it = self._run(source)

    def __iter__(self) -> AuditedStream[T]:
        return self

    @property
    def started(self) -> bool:
        return self._started

    def discard(self) -> None:
        """The stream will never run (the surface failed before sending it): free what it holds
        without a record of its own; the exchange records the failure."""
        if not self._started and not self._done:
            self._done = True
            self._close()

    def __next__(self) -> T:
        self._started = True
        return next(self._it)

    def hold(self) -> None:
        """The consumer keeps the chunks in the process until :meth:`release` (or the end): a
        reservation the exchange deferred is not needed for them yet."""
        self._holding = True

    def release(self) -> None:
        """Held chunks are about to leave: make the deferred reservation now. If the audit store
        refuses it, the stream records its failure and the error is raised (nothing leaves)."""
        try:
            self._ex.reserve_now()
        except BaseException as exc:
            self._it.throw(exc)  # still held: recorded by _run as a refusal, and raised again
            raise
        self._holding = False

    def _run(self, source: Callable[[Callable[[int, int], None]], Iterator[T]]) -> Generator[T, None, None]:
        ex = self._ex
        finished = False

        def finish(rows: int, nbytes: int) -> None:
            ex._write("ok", 200, rows=rows, nbytes=nbytes)

        chunks = source(finish)
        try:
            for chunk in chunks:
                if not self._holding:
                    ex.reserve_now()  # before the first chunk leaves (admit(defer_reserve=True))
                yield chunk
            finished = True
        except GeneratorExit:  # the consumer stopped: the client went away
            self._abort(499, "client disconnected")
            raise
        except BaseException as exc:
            if self._holding and not ex._recorded:  # nothing has left: a refusal like any other
                ex._record_refusal(exc)
                raise
            status = exc.status if isinstance(exc, GovernError) else 500
            detail = f"{exc.slug}: {exc.detail}" if isinstance(exc, GovernError) else type(exc).__name__
            self._abort(status, f"stream aborted: {detail}")
            raise
        finally:
            self._done = True
            ex._free()
            stop = getattr(chunks, "close", None)
            if stop is not None:
                stop()  # a source generator left midway runs its own cleanup now
            if not finished:
                self._close()

    def close(self) -> None:
        """Stop the stream: if it never started, it is recorded as abandoned (499)."""
        if not self._started and not self._done:
            self._done = True
            try:
                self._abort(499, "client disconnected before the stream started")
            finally:
                self._ex._free()
                self._close()
            return
        self._it.close()

    def _abort(self, status: int, detail: str) -> None:
        if self._ex._recorded:  # the ok record was written: the end marker was being sent
            return
        rows, nbytes = self._progress() if self._progress is not None else (None, None)
        try:
            self._ex._write("aborted", status, rows=rows, nbytes=nbytes, detail=detail[:500])
        except (AuditError, RuntimeError):
            pass
