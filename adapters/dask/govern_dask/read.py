"""The scan manifest on the client, its fragments on the workers.

Why tickets and not the API key in the graph: a Dask graph is pickled and shipped to every
worker, and shows in the scheduler's dashboard and logs; whoever runs the cluster can read it.
A fragment ticket redeems one fragment of one scan, for its principal and plan, until it
expires (``fragment_ticket_ttl``, an hour by default), and a policy or data change refuses it.

Columns are pandas ``ArrowDtype``: nulls, decimals, dates and time zones arrive as the gateway
sent them, with no conversion to NumPy types.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.dataframe as dd
import httpx
import pandas as pd
import pyarrow as pa

KEY_ENV = "GOVERN_API_KEY"
ARROW_STREAM = "application/vnd.apache.arrow.stream"


class GatewayError(RuntimeError):
    """The gateway refused or failed a request; the message carries its problem type and detail."""


@dataclass(frozen=True)
class Fragment:
    """What one partition's task holds: where its fragment is and the ticket that redeems it.
    ``repr`` leaves the ticket out (a graph's tasks are printed in logs and the dashboard)."""

    url: str
    ticket: str
    timeout: float = 60.0

    def __repr__(self) -> str:
        return f"Fragment({self.url!r})"


def read_dataset(gateway: str, dataset: str, purpose: str, *, columns: Sequence[str] | None = None,
                 filters: Sequence[str] | None = None, api_key: str | None = None,
                 timeout: float = 60.0) -> dd.DataFrame:
    """``dataset`` as the caller may see it for ``purpose``: a lazy DataFrame, one partition per
    fragment of the gateway's scan manifest (``POST /v1/datasets/{name}/scan``).

    ``columns`` prunes at the gateway; ``filters`` are SQL predicates on columns the plan leaves
    unmasked, applied after the policy's own row filters (the gateway refuses any other). The
    manifest is asked for now, so a refusal raises :class:`GatewayError` here, not at
    ``compute()``; compute within the tickets' lifetime. ``api_key`` defaults to
    ``$GOVERN_API_KEY`` and is used for this one call only."""
    key = api_key if api_key is not None else os.environ.get(KEY_ENV, "")
    if not key.strip():
        raise GatewayError(f"no API key: pass api_key= or set {KEY_ENV}")
    base = gateway.rstrip("/")
    body: dict[str, Any] = {"columns": list(columns) if columns else None, "filters": list(filters or [])}
    try:
        r = httpx.post(f"{base}/v1/datasets/{urllib.parse.quote(dataset, safe='')}/scan", json=body, timeout=timeout,
                       headers={"Authorization": f"Bearer {key.strip()}", "X-Purpose": purpose})
    except httpx.HTTPError as exc:
        raise GatewayError(f"cannot reach the gateway at {base}: {exc}") from None
    _check(r)
    manifest = r.json()
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(manifest["schema"])))
    meta = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
    fragments = [Fragment(base + f["url"], f["ticket"], timeout) for f in manifest["fragments"]]
    if not fragments:  # an empty manifest: one empty partition, so the frame still computes
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(read_fragment, fragments, meta=meta, label=f"govern-{dataset}",
                       enforce_metadata=False)


def read_fragment(fragment: Fragment) -> pd.DataFrame:
    """One partition: the fragment's masked rows, fetched with its ticket only. A body cut
    short raises (httpx checks ``Content-Length`` and the last chunk): an Arrow stream cut
    between two messages would otherwise read as a shorter, valid one."""
    try:
        r = httpx.get(fragment.url, timeout=fragment.timeout,
                      headers={"Authorization": f"Bearer {fragment.ticket}", "Accept": ARROW_STREAM})
    except httpx.RemoteProtocolError as exc:  # fewer bytes than Content-Length, or no last chunk
        raise GatewayError(f"the gateway's answer was cut short ({exc})") from None
    except httpx.HTTPError as exc:
        raise GatewayError(f"fetching {fragment.url} failed: {exc}") from None
    _check(r)
    table = pa.ipc.open_stream(r.content).read_all()
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _check(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        problem = r.json()
        detail = f"{problem.get('type', '')}: {problem.get('detail', '')}"
    except ValueError:
        detail = r.text[:200]
    raise GatewayError(f"gateway answered {r.status_code} ({detail})")
