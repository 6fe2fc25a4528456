"""Delta Sharing (``/delta-sharing``): shares, schemas, tables, version, metadata, query, and the
files — masked materializations — served by govern itself.

Recipients authenticate with ``Authorization: Bearer``: a profile's ticket (``govern sharing
profile``; it names the principal and the purpose, the only share it opens) or an API key (then
the share named in the path is the purpose declared). Files are fetched with the short-lived
ticket in their URL (``?ticket=``), as the protocol's pre-signed URLs are: redeeming it re-runs
the lifecycle — principal resolved now, purpose declared again, plan compiled now and compared
with the one the ticket was issued for, data version too. Every request, each file fetch and
each ``Range`` of one included, walks one exchange and leaves one audit record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Exchange
from govern.deliver.materialize import Materialized
from govern.errors import AccessDenied, InvalidRequest, NotFound, RangeNotSatisfiable, StorageError
from govern.identity.tickets import Ticket, issue, looks_like_ticket
from govern.server.bodies import validate
from govern.server.contract import errors
from govern.server.exchange import bearer, governed, load_json, read_body
from govern.server.streaming import CHUNK, Chunk, ReadStream
from govern.sharing.protocol import (
    FILE_TICKET,
    PROFILE_TICKET,
    SCHEMA,
    file_line,
    metadata_line,
    protocol_line,
    stable_id,
    table_version,
)
from govern.storage.materialized import Entry

router = APIRouter(prefix="/delta-sharing", tags=["delta-sharing"])

NDJSON = "application/x-ndjson; charset=utf-8"
QUERY_BODY = 65_536
PageToken = Annotated[str | None, Query(alias="pageToken", max_length=200)]
MaxResults = Annotated[int | None, Query(alias="maxResults", ge=0, le=10_000)]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _recipient(ex: Exchange, request: Request, share: str | None) -> list[str]:
    """Authenticate the recipient and return its shares (purposes); with ``share``, declare it."""
    token = _token(request)
    if token is not None and looks_like_ticket(token):
        ticket = ex.redeem(token, kind=PROFILE_TICKET, now=time.time())
        if share is not None and share != ticket.purpose:
            raise NotFound(f"no share '{share}' is available to this profile")
        return [ticket.purpose]
    principal = ex.authenticate(bearer(request))
    if share is not None:
        return [ex.declare(share)]
    declared = request.headers.get("x-purpose")
    if declared:  # an API key may narrow the listing to one purpose (checked like any declaration)
        return [ex.declare(declared)]
    return list(ex.state.decider.purposes(principal))


def _schema(schema: str) -> None:
    if schema != SCHEMA:
        raise NotFound(f"no schema '{schema}' in this share (every share has one schema, '{SCHEMA}')")


def _page(items: list[dict], max_results: int | None, token: str | None) -> dict:
    start = int(token) if token and token.isdigit() else 0
    if token and not token.isdigit():
        raise InvalidRequest("pageToken is not one this server made")
    end = len(items) if not max_results else start + max_results
    body: dict = {"items": items[start:end]}
    if end < len(items):
        body["nextPageToken"] = str(end)
    return body


def _table(share: str, name: str) -> dict:
    return {"name": name, "schema": SCHEMA, "share": share, "shareId": stable_id("share", share),
            "id": stable_id("table", share, name)}


@router.get("/shares", summary="Shares (purposes) you may use", responses=errors())
def list_shares(request: Request, max_results: MaxResults = None, page_token: PageToken = None) -> dict:
    with governed(request, "sharing-shares", "list") as ex:
        shares = _recipient(ex, request, None)
        body = _page([{"name": s, "id": stable_id("share", s)} for s in shares], max_results, page_token)
        ex.finish(rows=len(body["items"]))
    return body


@router.get("/shares/{share}", summary="One share", responses=errors())
def get_share(share: str, request: Request) -> dict:
    with governed(request, "sharing-share", "list") as ex:
        _recipient(ex, request, share)
        ex.finish(rows=1)
    return {"share": {"name": share, "id": stable_id("share", share)}}


@router.get("/shares/{share}/schemas", summary="The share's schemas (one)", responses=errors())
def list_schemas(share: str, request: Request, max_results: MaxResults = None, page_token: PageToken = None) -> dict:
    with governed(request, "sharing-schemas", "list") as ex:
        _recipient(ex, request, share)
        body = _page([{"name": SCHEMA, "share": share}], max_results, page_token)
        ex.finish(rows=len(body["items"]))
    return body


@router.get("/shares/{share}/schemas/{schema}/tables", summary="Datasets you may read under the share's purpose", responses=errors())
def list_tables(share: str, schema: str, request: Request, max_results: MaxResults = None,
                page_token: PageToken = None) -> dict:
    with governed(request, "sharing-tables", "list") as ex:
        _recipient(ex, request, share)
        _schema(schema)
        body = _page([_table(share, n) for n in ex.datasets("read")], max_results, page_token)
        ex.finish(rows=len(body["items"]))
    return body


@router.get("/shares/{share}/all-tables", summary="Every table of the share", responses=errors())
def list_all_tables(share: str, request: Request, max_results: MaxResults = None,
                    page_token: PageToken = None) -> dict:
    with governed(request, "sharing-all-tables", "list") as ex:
        _recipient(ex, request, share)
        body = _page([_table(share, n) for n in ex.datasets("read")], max_results, page_token)
        ex.finish(rows=len(body["items"]))
    return body


def _versioned(gw: Gateway, ex: Exchange, request: Request, share: str, schema: str, table: str) -> tuple[str, int]:
    """Authenticate, declare, authorize ``read`` and compile: (data version, table version)."""
    _recipient(ex, request, share)
    _schema(schema)
    plan = ex.compile(table, "read")
    version = gw.materializer.data_version(table, ex.state)
    return version, table_version(plan.hash, version)


def _headers(version: int) -> dict[str, str]:
    return {"Delta-Table-Version": str(version), "delta-sharing-capabilities": "responseformat=parquet"}


@router.get("/shares/{share}/schemas/{schema}/tables/{table}/version", summary="The table's version", responses=errors())
def table_version_route(share: str, schema: str, table: str, request: Request) -> Response:
    gw = _gateway(request)
    with governed(request, "sharing-version", "describe", table) as ex:
        _, version = _versioned(gw, ex, request, share, schema, table)
        ex.finish()
    return Response(status_code=200, headers=_headers(version))


@router.get("/shares/{share}/schemas/{schema}/tables/{table}/metadata", summary="The masked schema", responses=errors())
def table_metadata(share: str, schema: str, table: str, request: Request) -> Response:
    gw = _gateway(request)
    with governed(request, "sharing-metadata", "describe", table) as ex:
        _, version = _versioned(gw, ex, request, share, schema, table)
        assert ex.principal is not None and ex.purpose is not None
        opened = gw.governor.read(ex.principal, table, ex.purpose, limit=0, state=ex.state)
        masked = opened.reader.schema
        opened.reader.close()
        ex.finish()
    body = protocol_line() + "\n" + metadata_line(stable_id("table", share, table), masked) + "\n"
    return Response(body, media_type=NDJSON, headers=_headers(version))


class QueryRequest(BaseModel):
    """The protocol's query body. Hints are accepted and ignored (the protocol allows it): the
    file holds the whole masked table and the client filters and limits what it reads."""

    model_config = ConfigDict(extra="allow")

    predicateHints: list[str] | None = None
    jsonPredicateHints: str | None = None
    limitHint: int | None = None
    version: int | None = None
    timestamp: str | None = None
    startingVersion: int | None = None
    endingVersion: int | None = None


@router.post("/shares/{share}/schemas/{schema}/tables/{table}/query",
             summary="The masked schema and the table's file (a masked materialization)",
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": QueryRequest.model_json_schema()}}}},
             responses=errors(408, 413))
async def query_table(share: str, schema: str, table: str, request: Request) -> Response:
    async with governed(request, "sharing-query", "share", table) as ex:
        gw = _gateway(request)
        await run_in_threadpool(_recipient, ex, request, share)
        raw = await read_body(ex, request, QUERY_BODY)
        return await run_in_threadpool(_query, gw, ex, request, share, schema, table, raw)


def _query(gw: Gateway, ex: Exchange, request: Request, share: str, schema: str, table: str, raw: bytes) -> Response:
    _schema(schema)
    plan = ex.compile_rows(table)  # no file of a table under a result policy
    body = validate(QueryRequest, load_json(raw, '{"limitHint"?: n}') or {})
    if body.timestamp is not None or body.startingVersion is not None or body.endingVersion is not None:
        raise InvalidRequest("govern shares the current snapshot only: no timestamp or version ranges")
    if not gw.materializer.enabled:
        raise StorageError("Delta Sharing serves masked materializations, which are off (materialize_max_bytes)")
    ex.admit()
    assert ex.principal is not None and ex.purpose is not None
    found = gw.materializer.get_or_build(ex.principal, table, ex.purpose, state=ex.state)
    ex.plan = found.plan
    version = table_version(found.plan.hash, found.data_version)
    if body.version is not None and body.version != version:
        raise InvalidRequest(f"version {body.version} is not served: the current version is {version}")
    if plan.hash != found.plan.hash:  # pragma: no cover - one state, one plan
        raise StorageError("the plan changed during the request")
    url, expires = _file_url(gw, request, ex, found)
    entry = found.entry
    ex.extra.update({"file_id": entry.file_id, "files": 1, "built": found.built,
                     "hints": sorted(k for k, v in body.model_dump().items() if v is not None)})
    lines = [protocol_line(),
             metadata_line(stable_id("table", share, table), entry.schema(), size=entry.size, num_files=1),
             file_line(url, entry.file_id, entry.size, entry.rows, expires * 1000)]
    ex.finish(rows=None)
    return Response("\n".join(lines) + "\n", media_type=NDJSON, headers=_headers(version))


def _file_url(gw: Gateway, request: Request, ex: Exchange, found: Materialized) -> tuple[str, int]:
    assert ex.principal is not None and ex.purpose is not None
    expires = int(time.time() + gw.settings.sharing_file_ttl)
    ticket = Ticket(kind=FILE_TICKET, principal=ex.principal, purpose=ex.purpose, dataset=found.plan.dataset,
                    plan_hash=found.plan.hash, data_version=found.data_version, subject=found.entry.file_id,
                    expires=expires)
    base = (gw.settings.sharing_public_url or str(request.base_url)).rstrip("/")
    return f"{base}/delta-sharing/files/{found.entry.file_id}?ticket={issue(ticket, gw.governor.keys)}", expires


# -- files ---------------------------------------------------------------------------------------------

def _position(digits: str) -> int:
    """A Range number; past 18 digits it is beyond any file, and ``int()`` of thousands of
    digits would raise (Python caps str→int at 4,300 digits): a crash, not an answer."""
    return int(digits) if len(digits) <= 18 else 10**18


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``Range: bytes=…``; None for no (or a multi-part) range."""
    if not header:
        return None
    if "," in header:
        return None  # several ranges: answered with the whole file (RFC 9110 allows it)
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable("only 'Range: bytes=first-last' is supported", limit=size)
    if not m.group(1):  # the last n bytes
        n = _position(m.group(2))
        if n == 0:
            raise RangeNotSatisfiable(f"the range is empty (the file has {size} bytes)", limit=size)
        return max(0, size - n), size - 1
    first = _position(m.group(1))
    last = min(_position(m.group(2)), size - 1) if m.group(2) else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(f"the range lies outside the file ({size} bytes)", limit=size)
    return first, last


@router.head("/files/{file_id}", summary="A file's headers (size, type) without its bytes: the same checks",
             responses=errors(408, 413))
@router.get("/files/{file_id}", summary="A file of a query's answer: a masked materialization (Range supported)",
            responses={206: {"description": "The requested byte range (Range)"}, **errors(408, 413)})
def get_file(file_id: str, request: Request,
             ticket: Annotated[str | None, Query(description="The ticket of the file URL.")] = None) -> Response:
    gw = _gateway(request)
    with governed(request, "sharing-file", "read") as ex:
        asserted = ex.authenticate(bearer(request)).name if _token(request) else None
        opened = ex.redeem(ticket or "", kind=FILE_TICKET, now=time.time())
        if asserted is not None and asserted != opened.principal.name:
            ex.extra["asserted_principal"] = asserted
            raise AccessDenied("this file URL was issued to another principal")
        if opened.subject != file_id:
            raise AccessDenied("this ticket does not open that file")
        plan = ex.compile_rows(opened.dataset)  # a ticket issued before a result policy came into force
        version = gw.materializer.data_version(opened.dataset, ex.state)
        ex.check_ticket(opened, plan, version)
        ex.admit()
        assert ex.principal is not None and ex.purpose is not None
        entry = gw.materializer.find(plan, version)
        if entry is None:  # evicted since the query: the same plan on the same data builds the same rows
            entry = gw.materializer.get_or_build(ex.principal, opened.dataset, ex.purpose, state=ex.state).entry
        if entry.file_id != file_id:  # pragma: no cover - the ticket's plan and data are the entry's key
            raise NotFound("no such file")
        span = _byte_range(request.headers.get("range"), entry.size)
        headers = {"accept-ranges": "bytes", "etag": f'"{file_id}"', "cache-control": "no-store"}
        first, last = span if span is not None else (0, entry.size - 1)
        length = max(0, last - first + 1)
        headers["content-length"] = str(length)
        if span is not None:
            headers["content-range"] = f"bytes {first}-{last}/{entry.size}"
            ex.extra["range"] = [first, last]
        if request.method == "HEAD":
            ex.finish(rows=None, nbytes=0)
            return Response(status_code=200, headers={**headers, "content-length": str(entry.size)},
                            media_type="application/vnd.apache.parquet")
        rows = entry.rows if span is None or (first == 0 and last == entry.size - 1) else None
        stream = ex.stream(_bytes(entry, first, length, rows))
    response = ReadStream(stream, media_type="application/vnd.apache.parquet", headers=headers)
    if span is not None:
        response.status_code = 206
    return response


def _bytes(entry: Entry, first: int, length: int,
           rows: int | None) -> Callable[[Callable[[int, int], None]], Iterator[Chunk]]:
    def source(finish: Callable[[int, int], None]) -> Iterator[Chunk]:
        with entry.open() as handle:
            handle.seek(first)
            left = length
            while left > 0:
                chunk = handle.read(min(CHUNK, left))
                if not chunk:
                    raise StorageError("the materialization ended early")
                left -= len(chunk)
                if left == 0:
                    finish(rows if rows is not None else 0, length)
                yield chunk
            if length == 0:
                finish(0, 0)
    return source

