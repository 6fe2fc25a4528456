"""Python client for pipelines: governed reads and SQL as Arrow, pandas or polars, streaming.

>>> from govern.client import Client
>>> c = Client("http://127.0.0.1:8000", token="gk_...", purpose="model-training")  # doctest: +SKIP
>>> table = c.read("patients", columns=["patient_id", "zip"], filter="region = 'EU'")  # doctest: +SKIP
>>> df = c.sql("select region, count(*) from patients group by 1").to_pandas()  # doctest: +SKIP

Errors come back as the same exception classes the gateway raises (``govern.errors``), chosen
by the problem ``type``; ``exc.status`` and ``exc.request_id`` are set. Only idempotent requests
are retried (connection failures, 429 and 503 before any data arrived) — dataset reads and
``sql()``, whose query the gateway only runs if it is read-only; a stream that breaks midway
raises :class:`StreamInterrupted` — it is never silently short.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa

from govern import errors as _errors
from govern.errors import PROBLEM_BASE, GovernError

ARROW_STREAM = "application/vnd.apache.arrow.stream"
EOS_MARKER = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC end-of-stream


class StreamInterrupted(GovernError):
    status = 502
    slug = "stream-interrupted"
    title = "The data stream ended before its end marker"


class TransportFailed(GovernError):
    status = 503
    slug = "transport-failed"
    title = "Could not reach the gateway"


_BY_SLUG: dict[str, type[GovernError]] = {cls.slug: cls for cls in _errors.ALL_ERRORS}


def error_from_problem(status: int, body: dict[str, Any]) -> GovernError:
    """Rebuild a typed exception from a problem+json body."""
    slug = str(body.get("type", "")).removeprefix(PROBLEM_BASE)
    cls = _BY_SLUG.get(slug, GovernError)
    exc = cls.__new__(cls)
    extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
    GovernError.__init__(exc, str(body.get("detail", "request failed")), **extra)
    exc.status = status  # type: ignore[misc]
    exc.request_id = body.get("request_id")  # type: ignore[attr-defined]
    if isinstance(exc, _errors.PolicyError):
        exc.problems = []
    return exc


class _ResponseReader:
    """A read-only file object over a streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.iter_raw(1 << 16)
        self._buf = bytearray()
        self._done = False
        self.closed = False
        self.tail = b""  # the last bytes handed out: an Arrow stream must end with its EOS marker

    def read(self, n: int = -1) -> bytes:
        try:
            while not self._done and (n < 0 or len(self._buf) < n):
                try:
                    self._buf += next(self._chunks)
                except StopIteration:
                    self._done = True
        except httpx.HTTPError as exc:
            raise StreamInterrupted(f"connection broke while streaming: {type(exc).__name__}") from None
        if n < 0:
            out, self._buf = bytes(self._buf), bytearray()
        else:
            out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        self.tail = (self.tail + out[-8:])[-8:]  # a short read keeps the earlier tail bytes
        return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class Client:
    def __init__(self, base_url: str, token: str, purpose: str | None = None, *, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.3, transport: httpx.BaseTransport | None = None) -> None:
        self.purpose = purpose
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {token}", "User-Agent": "govern-client"})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never show the token
        return f"Client({str(self._http.base_url)!r}, purpose={self.purpose!r})"

    # -- plumbing --------------------------------------------------------------------------------
    def _headers(self, purpose: str | None) -> dict[str, str]:
        p = purpose or self.purpose
        return {"X-Purpose": p} if p else {}

    def _send(self, method: str, path: str, *, purpose: str | None = None, params: dict[str, Any] | None = None,
              json: Any = None, stream: bool = False, idempotent: bool = True) -> httpx.Response:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = self.retries + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                request = self._http.build_request(method, path, params=params, json=json,
                                                   headers=self._headers(purpose))
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt + 1 >= attempts:
                    raise TransportFailed(f"could not reach the gateway: {type(exc).__name__}") from None
                time.sleep(self.backoff * (2 ** attempt))
                continue
            if response.status_code in (429, 503) and attempt + 1 < attempts:
                retry_after = response.headers.get("retry-after")
                response.close()
                time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else self.backoff * (2 ** attempt))
                continue
            if response.status_code >= 400:
                body = self._problem(response)
                raise error_from_problem(response.status_code, body)
            return response
        raise TransportFailed("retries exhausted")  # pragma: no cover - loop always returns or raises

    @staticmethod
    def _problem(response: httpx.Response) -> dict[str, Any]:
        try:
            response.read()
            body = response.json()
            return body if isinstance(body, dict) else {"detail": str(body)}
        except Exception:
            return {"detail": f"HTTP {response.status_code}"}
        finally:
            response.close()

    # -- datasets --------------------------------------------------------------------------------
    def datasets(self, purpose: str | None = None) -> list[dict[str, Any]]:
        return self._send("GET", "/v1/datasets", purpose=purpose).json()["datasets"]

    def describe(self, name: str, purpose: str | None = None) -> dict[str, Any]:
        return self._send("GET", f"/v1/datasets/{name}", purpose=purpose).json()

    def _open(self, name: str, columns: list[str] | None, filter: str | None, limit: int | None,
              purpose: str | None) -> tuple[pa.RecordBatchStreamReader, _ResponseReader, httpx.Response]:
        params = {"columns": ",".join(columns) if columns else None, "filter": filter, "limit": limit,
                  "format": "arrow"}
        return self._arrow(self._send("GET", f"/v1/datasets/{name}/rows", purpose=purpose, params=params,
                                      stream=True))

    @staticmethod
    def _arrow(response: httpx.Response) -> tuple[pa.RecordBatchStreamReader, _ResponseReader, httpx.Response]:
        source = _ResponseReader(response)
        try:
            return pa.ipc.open_stream(source), source, response
        except pa.ArrowInvalid as exc:
            response.close()
            raise StreamInterrupted(f"the Arrow stream is incomplete or corrupt: {exc}") from None

    @staticmethod
    def _batches(reader: pa.RecordBatchStreamReader, source: _ResponseReader,
                 response: httpx.Response) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    if source.tail != EOS_MARKER:
                        raise StreamInterrupted("the Arrow stream ended without its end-of-stream marker") from None
                    break
                except pa.ArrowInvalid as exc:
                    raise StreamInterrupted(f"the Arrow stream is incomplete or corrupt: {exc}") from None
                yield batch
        finally:
            response.close()

    def stream(self, name: str, columns: list[str] | None = None, filter: str | None = None,
               limit: int | None = None, purpose: str | None = None) -> Iterator[pa.RecordBatch]:
        """Yield record batches as they arrive (memory stays bounded)."""
        reader, source, response = self._open(name, columns, filter, limit, purpose)
        yield from self._batches(reader, source, response)

    def read(self, name: str, columns: list[str] | None = None, filter: str | None = None,
             limit: int | None = None, purpose: str | None = None) -> pa.Table:
        reader, source, response = self._open(name, columns, filter, limit, purpose)
        batches = list(self._batches(reader, source, response))
        return pa.Table.from_batches(batches, schema=reader.schema)

    def read_pandas(self, name: str, **kwargs: Any):  # -> pandas.DataFrame
        return self.read(name, **kwargs).to_pandas()

    def read_polars(self, name: str, **kwargs: Any):  # -> polars.DataFrame
        import polars as pl

        return pl.from_arrow(self.read(name, **kwargs))

    # -- SQL -------------------------------------------------------------------------------------
    def sql_stream(self, query: str, params: list[Any] | None = None,
                   purpose: str | None = None) -> Iterator[pa.RecordBatch]:
        """Yield the result of ``query`` batch by batch (``POST /v1/sql``, Arrow; memory stays bounded)."""
        reader, source, response = self._sql(query, params, purpose)
        yield from self._batches(reader, source, response)

    def sql(self, query: str, params: list[Any] | None = None, purpose: str | None = None) -> pa.Table:
        """Run one read-only query over the masked views you may read; the result as a ``pyarrow.Table``.

        ``params`` are the values of ``$1, $2, …`` (or ``?``), bound as typed values by the gateway.
        Refusals raise the gateway's errors (``SqlError`` with ``extra["position"]``,
        ``QueryTimeout``, ``LimitExceeded``…). Retried like a dataset read: a query is read-only.
        """
        reader, source, response = self._sql(query, params, purpose)
        return pa.Table.from_batches(list(self._batches(reader, source, response)), schema=reader.schema)

    def _sql(self, query: str, params: list[Any] | None,
             purpose: str | None) -> tuple[pa.RecordBatchStreamReader, _ResponseReader, httpx.Response]:
        body: dict[str, Any] = {"sql": query, "format": "arrow"}
        if params is not None:
            body["params"] = list(params)
        return self._arrow(self._send("POST", "/v1/sql", purpose=purpose, json=body, stream=True))

    # -- differential privacy (docs/privacy.md) ---------------------------------------------------
    def dp(self, name: str, aggregates: list[dict[str, Any]], *, epsilon: float, delta: float = 0.0,
           group_by: list[str] | None = None, filter: str | None = None, keys: dict[str, list[Any]] | None = None,
           contributions: int = 1, purpose: str | None = None) -> dict[str, Any]:
        """Differentially private aggregates of ``name`` (``POST /v1/datasets/{name}/dp``): rows of
        noisy values with 95% intervals, the privacy spent and the budget left. Never retried: each
        release is charged to your budget. Over budget raises ``BudgetExceeded``."""
        body: dict[str, Any] = {"aggregates": aggregates, "epsilon": epsilon, "delta": delta,
                                "contributions": contributions}
        body.update({k: v for k, v in {"group_by": group_by, "filter": filter, "keys": keys}.items() if v})
        return self._send("POST", f"/v1/datasets/{name}/dp", purpose=purpose, json=body, idempotent=False).json()

    def dp_sql(self, query: str, *, epsilon: float, delta: float = 0.0, contributions: int = 1,
               purpose: str | None = None) -> dict[str, Any]:
        """Differentially private SQL (``POST /v1/sql`` with ``"privacy": "dp"``): ``columns``,
        ``rows``, ``intervals``, ``privacy``, ``budget``. Never retried (charged)."""
        body = {"sql": query, "privacy": "dp", "epsilon": epsilon, "delta": delta, "contributions": contributions}
        return self._send("POST", "/v1/sql", purpose=purpose, json=body, idempotent=False).json()

    def budget(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Your privacy budgets: limit, spent, left and when each resets (``GET /v1/budget``)."""
        return self._send("GET", "/v1/budget", params={"dataset": dataset}).json()["budgets"]

    # -- encrypted views (helpers in govern.privacy.he.client; needs the `he` extra) -------------
    def encrypted_view(self, name: str, columns: list[str], **kwargs: Any):  # -> EncryptedView
        """CKKS ciphertexts of numeric columns you may read, to compute on; see docs/encryption.md."""
        from govern.privacy.he.client import open_view

        return open_view(self, name, columns, **kwargs)

    def he_release(self, view: Any, computation: dict[str, Any], epsilon: float,
                   purpose: str | None = None):  # -> Release
        """Release a declared aggregate over an encrypted view (noisy; charged to your budget)."""
        from govern.privacy.he.client import release

        return release(self, view, computation, epsilon, purpose=purpose)

    def encrypted_query(self, name: str, weights: dict[str, float], **kwargs: Any):  # -> QueryResult
        """Aggregates under your own key: your weights are encrypted here, the result decrypted here."""
        from govern.privacy.he.client import encrypted_query

        return encrypted_query(self, name, weights, **kwargs)

    # -- synthetic views (the gateway needs its `synthetic` extra) ---------------------------------
    def synthetic(self, name: str, rows: int, *, seed: int | None = None, purpose: str | None = None,
                  wait: float = 600.0) -> pa.Table:
        """``rows`` synthetic rows shaped like dataset ``name``, with your plan applied.

        The report (quality, privacy, seed) is ``json.loads(table.schema.metadata[b"govern.synthetic.report"])``.
        Pass the report's ``seed`` to get the same rows again. If the gateway has no model for the
        dataset's current version yet (202), this polls the model's status for up to ``wait``
        seconds while it is fitted, then asks again.
        """
        from govern.errors import SyntheticError

        body = {k: v for k, v in {"rows": rows, "seed": seed, "format": "arrow"}.items() if v is not None}
        deadline = time.monotonic() + wait
        while True:
            response = self._send("POST", f"/v1/datasets/{name}/synthetic", purpose=purpose, json=body)
            if response.status_code != 202:
                return pa.ipc.open_stream(response.content).read_all()
            while True:
                delay = response.headers.get("retry-after", "2")
                if time.monotonic() + float(delay if delay.isdigit() else 2) > deadline:
                    raise SyntheticError(f"the synthetic model of '{name}' is still being fitted after {wait:g}s; "
                                         "try again later")
                time.sleep(float(delay) if delay.isdigit() else 2.0)
                status = self._send("GET", f"/v1/datasets/{name}/synthetic/status", purpose=purpose).json()
                if status.get("state") in ("ready", "failed", "absent"):
                    break

    def synthetic_status(self, name: str, purpose: str | None = None) -> dict[str, Any]:
        """The synthetic model of ``name``: state, fit progress, and its quality/privacy reports."""
        return self._send("GET", f"/v1/datasets/{name}/synthetic/status", purpose=purpose).json()

    # -- stewards --------------------------------------------------------------------------------
    def audit(self, after: int = 0, limit: int = 100, purpose: str | None = None, **filters: str) -> dict[str, Any]:
        return self._send("GET", "/v1/audit", purpose=purpose,
                          params={"after": after, "limit": limit, **filters}).json()

    def explain(self, principal: str, dataset: str, for_purpose: str, purpose: str | None = None) -> dict[str, Any]:
        return self._send("GET", "/v1/policy/explain", purpose=purpose,
                          params={"principal": principal, "dataset": dataset, "for_purpose": for_purpose}).json()
