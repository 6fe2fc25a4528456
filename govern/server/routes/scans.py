"""Scans: a dataset's fragments, each fetched with a plan-bound ticket (the Spark data source, the Dask reader).

``POST /v1/datasets/{name}/scan`` (the *scan manifest*) authenticates the caller with its API
key, compiles its plan and cuts the dataset into fragments (:mod:`govern.storage.fragments`),
each with a short-lived fragment ticket (:mod:`govern.identity.tickets`) naming the principal,
purpose, plan hash, data version, the fragment, the pruned columns and the post-policy filters.
``GET /v1/fragments/{id}`` takes only that ticket as its bearer credential: the ticket is
redeemed through the lifecycle (purpose declared again, plan compiled again under the policy
served now), refused when the plan or the data moved since it was issued, and the fragment's
masked rows stream as Arrow IPC.

So the workers of a distributed job (Spark executors) never hold the caller's API key, storage
credentials or masking keys; any gateway instance sharing the key ring serves any fragment.
Without filters, fragments are row-group runs of the plan's masked materialization
(:mod:`govern.deliver.materialize`, built on the first scan when the store is enabled), so a
fragment fetch decodes Parquet and masks nothing; with filters (or the store off), fragments are
row-group runs of the dataset's own files, masked by the engine as ``/rows`` would.

The job's reads are audited as one scan (the manifest's record, whose request id is the scan id)
plus one record per fragment carrying that scan id.

Filters are *post-policy*: they are evaluated on what the caller sees, and only on columns the
plan leaves unmasked (kept, with no cell rule), so a pushed filter can never test a raw value
the caller does not see — the gateway re-checks this, whatever the client sent.
"""

from __future__ import annotations

import base64
import time
from typing import Annotated

import pyarrow.parquet as pq
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.errors import AuthenticationFailed, InvalidRequest, TicketStale
from govern.identity.tickets import Ticket, issue
from govern.plan.model import AccessPlan
from govern.plan.predicates import compile_client_filter
from govern.server.bodies import validate
from govern.server.connections import lost_probe
from govern.server.contract import errors
from govern.server.exchange import (
    bearer,
    body_purpose,
    governed,
    load_json,
    purpose_candidates,
    read_body,
)
from govern.server.streaming import MEDIA_TYPES, PARQUET_FRAGMENT, ReadStream, encode, stored
from govern.storage.fragments import (
    Fragment,
    StoredSpan,
    row_group_reader,
    row_group_runs,
    stored_span,
)
from govern.storage.materialized import Entry

router = APIRouter(tags=["scans"])

Auth = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]
SCAN_BODY = 262_144
MAX_FILTERS = 64
KIND = "fragment"


class ScanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str | None = Field(default=None, description="Why you are asking (or the X-Purpose header).")
    columns: list[str] | None = Field(default=None, max_length=10_000,
                                      description="The columns to read (pruning); all visible ones if absent.")
    filters: list[str] = Field(default_factory=list, max_length=MAX_FILTERS,
                               description="Post-policy predicates, ANDed, on columns the plan leaves unmasked.")


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def unmasked(plan: AccessPlan) -> set[str]:
    """Columns whose values the caller sees as stored: kept, and no cell rule may change them."""
    ruled = {cr.column for cr in plan.cell_rules}
    return {c.name for c in plan.columns if c.action == "keep" and c.name not in ruled}


def combined_filter(plan: AccessPlan, filters: list[str]) -> str | None:
    """``filters`` as one predicate, refused unless each reads only unmasked columns."""
    if not filters:
        return None
    allowed = unmasked(plan)
    for text in filters:
        predicate = compile_client_filter(text)
        bad = [c for c in predicate.columns if c not in allowed]
        if bad:
            raise InvalidRequest(f"a scan filter may only use columns your plan leaves unmasked; "
                                 f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} not")
    return " AND ".join(f"({f})" for f in filters)


@router.post("/v1/datasets/{name}/scan", summary="A scan manifest: the dataset's fragments, each with a ticket",
             openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
                 "schema": ScanRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}},
             responses=errors(413))
async def scan(name: str, request: Request, authorization: Auth = None) -> dict:
    async with governed(request, "scan", "read", name) as ex:
        await run_in_threadpool(ex.authenticate, bearer(request))
        raw = await read_body(ex, request, SCAN_BODY)
        return await run_in_threadpool(_manifest, _gateway(request), ex, request, raw)


def _manifest(gw: Gateway, ex: Exchange, request: Request, raw: bytes) -> dict:
    data = load_json(raw, '{"columns": [...], "filters": [...]}') if raw else {}
    purpose = ex.declare(*purpose_candidates(request, body_purpose(data)))
    ex.authorize(ex.dataset or "", "read")
    body = validate(ScanRequest, data)
    name = ex.dataset or ""
    plan = ex.compile_rows(name)  # no fragments of a dataset under a result policy
    where = combined_filter(plan, body.filters)
    ex.extra.update({k: v for k, v in {"columns": body.columns, "filters": body.filters or None}.items() if v})
    ex.admit(slot=False)
    assert ex.principal is not None
    governor = gw.governor
    # Validates the columns and filter against the plan and gives the schema; reads nothing.
    opened = governor.read(ex.principal, name, purpose, columns=body.columns, filter=where, state=ex.state)
    schema = opened.reader.schema
    opened.reader.close()
    version = governor.data_version(name, ex.state)
    fragments, materialized = governor.fragments(name, ex.state), False
    m = gw.materializer
    if where is None and m.enabled:  # fragments of the plan's masked Parquet: nothing masked again
        found = m.get_or_build(ex.principal, name, purpose, state=ex.state)
        if found.plan.hash == plan.hash and found.data_version == version:
            with found.entry.open() as handle:
                fragments = row_group_runs(pq.ParquetFile(handle).metadata, found.entry.file_id,
                                           gw.settings.fragment_rows)
            materialized = True
            ex.extra["materialization"] = {"file_id": found.entry.file_id, "built": found.built}
    expires = int(time.time() + gw.settings.fragment_ticket_ttl)
    keys = governor.keys
    out = []
    for i, frag in enumerate(fragments):
        ticket = Ticket(KIND, ex.principal, purpose, name, plan.hash, version, str(i), expires,
                        {"scan": ex.request_id, "fragment": {**frag.to_dict(), "materialized": materialized},
                         "columns": list(opened.request.columns), "filter": where})
        out.append({"id": str(i), "rows": frag.rows, "bytes": frag.nbytes, "url": f"/v1/fragments/{i}",
                    "ticket": issue(ticket, keys)})
    ex.extra.update({"scan": ex.request_id, "fragments": len(out), "data_version": version})
    ex.finish(rows=len(out))
    return {"scan_id": ex.request_id, "dataset": name, "purpose": purpose, "plan_hash": plan.hash,
            "policy_version": plan.policy_version, "data_version": version, "expires": expires,
            "columns": list(opened.request.columns),
            "schema": base64.b64encode(schema.serialize().to_pybytes()).decode(), "fragments": out}


@router.get("/v1/fragments/{fragment_id}",
            summary="One fragment's masked rows (Arrow IPC, or its stored Parquet when accepted); the bearer is its ticket",
            responses={200: {"content": {MEDIA_TYPES["arrow"]: {}, PARQUET_FRAGMENT: {}}}, **errors(408, 413)})
def fragment(fragment_id: str, request: Request, authorization: Auth = None) -> ReadStream:
    gw = _gateway(request)
    with governed(request, "fragment", "read") as ex:
        text = _ticket_text(request.headers.get("authorization"))
        ticket = ex.redeem(text, kind=KIND, now=time.time())
        ex.extra["scan"] = ticket.extra.get("scan")
        if ticket.subject != fragment_id:
            raise AuthenticationFailed("invalid ticket", reason="another fragment's ticket")
        plan = ex.compile_rows(ticket.dataset)
        ex.check_ticket(ticket, plan, gw.governor.data_version(ticket.dataset, ex.state))
        where = ticket.extra.get("filter")
        combined_filter(plan, [where] if where else [])  # signed, and checked again all the same
        spec = ticket.extra.get("fragment") or {}
        groups = spec.get("row_groups")
        frag = Fragment(str(spec.get("file")), (int(groups[0]), int(groups[1])) if groups else None, 0, 0)
        columns = list(ticket.extra["columns"])
        ex.admit()
        assert ex.principal is not None and ex.purpose is not None
        media, layout, length = MEDIA_TYPES["arrow"], {}, None
        if spec.get("materialized"):
            entry = _materialization(gw, ex, ticket.dataset, frag)
            assert frag.row_groups is not None
            span = _stored_span(entry, frag.row_groups, columns) if _accepts(request, PARQUET_FRAGMENT) else None
            if span is not None:  # the stored bytes as they are: nothing decoded or encoded here
                ex.extra["format"] = "parquet-fragment"
                ranges = [(span.begin, span.end), (span.footer_begin, span.size)]
                stream = ex.stream(lambda finish: stored(entry.open, ranges, span.rows, finish))
                media, length = PARQUET_FRAGMENT, sum(e - b for b, e in ranges)
                layout = {"x-govern-file-size": str(span.size), "x-govern-byte-span": f"{span.begin}-{span.end}",
                          "x-govern-row-groups": f"{frag.row_groups[0]}-{frag.row_groups[1]}"}
            else:
                reader = row_group_reader(entry.open(), frag.row_groups, columns, gw.settings.batch_size)
                stream = ex.stream(lambda finish: encode("arrow", reader, finish), close=reader.close)
        else:
            opened = gw.governor.read(ex.principal, ticket.dataset, ex.purpose, columns=columns, filter=where,
                                      state=ex.state, fragment=frag)
            ex.plan, reader = opened.plan, opened.reader
            stream = ex.stream(lambda finish: encode("arrow", reader, finish), close=reader.close)
    headers = {"x-govern-plan-hash": plan.hash, "x-govern-policy-version": plan.policy_version or "", **layout}
    return ReadStream(stream, media_type=media, headers=headers, length=length).prefetch(lost_probe(request.scope))


def _accepts(request: Request, media_type: str) -> bool:
    return any(part.split(";")[0].strip() == media_type for part in request.headers.get("accept", "").split(","))


def _materialization(gw: Gateway, ex: Exchange, dataset: str, frag: Fragment) -> Entry:
    """The plan's masked materialization the fragment's row groups are cut from, built again if
    the store evicted it (same plan, same data: the same rows and row groups)."""
    assert ex.principal is not None and ex.purpose is not None
    found = gw.materializer.get_or_build(ex.principal, dataset, ex.purpose, state=ex.state)
    if found.entry.file_id != frag.file:  # the plan or the data moved after check_ticket: stale all the same
        raise TicketStale("the data changed since this ticket was issued: ask the gateway for a new one",
                          reason="data changed")
    ex.plan = found.plan
    ex.extra["materialization"] = {"file_id": found.entry.file_id, "built": found.built}
    return found.entry


def _stored_span(entry: Entry, row_groups: tuple[int, int], columns: list[str]) -> StoredSpan | None:
    """Where the fragment's row groups lie in the stored file, when the ticket's columns are the
    file's own, in its order (else the rows are decoded and projected: None)."""
    with entry.open() as handle:
        parquet = pq.ParquetFile(handle)
        if parquet.schema_arrow.names != columns:
            return None
        handle.seek(entry.size - 8)
        return stored_span(parquet.metadata, row_groups, entry.size, handle.read(8))


def _ticket_text(header: str | None) -> str:
    """The ticket of ``Authorization: Bearer gt1....``; anything else (an API key) is refused."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationFailed("send the fragment's ticket as 'Authorization: Bearer <ticket>'",
                                   reason="no ticket")
    return value.strip()
