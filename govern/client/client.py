"""The Python client for pipelines: governed reads and SQL as Arrow, pandas or polars, streaming.

>>> from govern.client import Client
>>> c = Client("http://127.0.0.1:8000", token="gk_...", purpose="model-training")  # doctest: +SKIP
>>> table = c.read("patients", columns=["patient_id", "zip"], filter="region = 'EU'")  # doctest: +SKIP
>>> df = c.sql("select region, count(*) from patients group by 1").to_pandas()  # doctest: +SKIP

Errors come back as the same exception classes the gateway raises (``govern.errors``), chosen
by the problem ``type``; ``exc.status`` and ``exc.request_id`` are set. Only idempotent requests
are retried (connection failures, 429 and 503 before any data arrived) — dataset reads and
``sql()``, whose query the gateway only runs if it is read-only; a stream that breaks midway
raises :class:`~govern.client.transport.StreamInterrupted` — it is never silently short.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa

from govern.client import encrypted
from govern.client.transport import ResponseReader, Transport
from govern.errors import SyntheticError

__all__ = ["Client"]


class Client(Transport):
    """One gateway, one token, a default purpose (``purpose=`` on each call overrides it)."""

    # -- datasets --------------------------------------------------------------------------------
    def datasets(self, purpose: str | None = None) -> list[dict[str, Any]]:
        return self.send("GET", "/v1/datasets", purpose=purpose).json()["datasets"]

    def describe(self, name: str, purpose: str | None = None) -> dict[str, Any]:
        return self.send("GET", f"/v1/datasets/{name}", purpose=purpose).json()

    def _open(self, name: str, columns: list[str] | None, filter: str | None, limit: int | None,
              purpose: str | None) -> tuple[pa.RecordBatchStreamReader, ResponseReader, httpx.Response]:
        params = {"columns": ",".join(columns) if columns else None, "filter": filter, "limit": limit,
                  "format": "arrow"}
        return self.arrow(self.send("GET", f"/v1/datasets/{name}/rows", purpose=purpose, params=params,
                                      stream=True))

    def stream(self, name: str, columns: list[str] | None = None, filter: str | None = None,
               limit: int | None = None, purpose: str | None = None) -> Iterator[pa.RecordBatch]:
        """Yield record batches as they arrive (memory stays bounded)."""
        reader, source, response = self._open(name, columns, filter, limit, purpose)
        yield from self.batches(reader, source, response)

    def read(self, name: str, columns: list[str] | None = None, filter: str | None = None,
             limit: int | None = None, purpose: str | None = None) -> pa.Table:
        reader, source, response = self._open(name, columns, filter, limit, purpose)
        batches = list(self.batches(reader, source, response))
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
        yield from self.batches(reader, source, response)

    def sql(self, query: str, params: list[Any] | None = None, purpose: str | None = None) -> pa.Table:
        """Run one read-only query over the masked views you may read; the result as a ``pyarrow.Table``.

        ``params`` are the values of ``$1, $2, …`` (or ``?``), bound as typed values by the gateway.
        Refusals raise the gateway's errors (``SqlError`` with ``extra["position"]``,
        ``QueryTimeout``, ``LimitExceeded``…). Retried like a dataset read: a query is read-only.
        """
        reader, source, response = self._sql(query, params, purpose)
        return pa.Table.from_batches(list(self.batches(reader, source, response)), schema=reader.schema)

    def _sql(self, query: str, params: list[Any] | None,
             purpose: str | None) -> tuple[pa.RecordBatchStreamReader, ResponseReader, httpx.Response]:
        body: dict[str, Any] = {"sql": query, "format": "arrow"}
        if params is not None:
            body["params"] = list(params)
        return self.arrow(self.send("POST", "/v1/sql", purpose=purpose, json=body, stream=True))

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
        return self.send("POST", f"/v1/datasets/{name}/dp", purpose=purpose, json=body, idempotent=False).json()

    def dp_sql(self, query: str, *, epsilon: float, delta: float = 0.0, contributions: int = 1,
               purpose: str | None = None) -> dict[str, Any]:
        """Differentially private SQL (``POST /v1/sql`` with ``"privacy": "dp"``): ``columns``,
        ``rows``, ``intervals``, ``privacy``, ``budget``. Never retried (charged)."""
        body = {"sql": query, "privacy": "dp", "epsilon": epsilon, "delta": delta, "contributions": contributions}
        return self.send("POST", "/v1/sql", purpose=purpose, json=body, idempotent=False).json()

    def budget(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Your privacy budgets: limit, spent, left and when each resets (``GET /v1/budget``)."""
        return self.send("GET", "/v1/budget", params={"dataset": dataset}).json()["budgets"]

    # -- encrypted views (helpers in govern.client.encrypted; needs the `he` extra) -------------
    def encrypted_view(self, name: str, columns: list[str], **kwargs: Any):  # -> EncryptedView
        """CKKS ciphertexts of numeric columns you may read, to compute on; see docs/encryption.md."""
        return encrypted.open_view(self, name, columns, **kwargs)

    def he_release(self, view: Any, computation: dict[str, Any], epsilon: float,
                   purpose: str | None = None):  # -> Release
        """Release a declared aggregate over an encrypted view (noisy; charged to your budget)."""
        return encrypted.release(self, view, computation, epsilon, purpose=purpose)

    def encrypted_query(self, name: str, weights: dict[str, float], **kwargs: Any):  # -> QueryResult
        """Aggregates under your own key: your weights are encrypted here, the result decrypted here."""
        return encrypted.encrypted_query(self, name, weights, **kwargs)

    # -- synthetic views (the gateway needs its `synthetic` extra) ---------------------------------
    def synthetic(self, name: str, rows: int, *, seed: int | None = None, purpose: str | None = None,
                  wait: float = 600.0) -> pa.Table:
        """``rows`` synthetic rows shaped like dataset ``name``, with your plan applied.

        The report (quality, privacy, seed) is ``json.loads(table.schema.metadata[b"govern.synthetic.report"])``.
        Pass the report's ``seed`` to get the same rows again. If the gateway has no model for the
        dataset's current version yet (202), this polls the model's status for up to ``wait``
        seconds while it is fitted, then asks again.
        """
        body = {k: v for k, v in {"rows": rows, "seed": seed, "format": "arrow"}.items() if v is not None}
        deadline = time.monotonic() + wait
        while True:
            response = self.send("POST", f"/v1/datasets/{name}/synthetic", purpose=purpose, json=body)
            if response.status_code != 202:
                return pa.ipc.open_stream(response.content).read_all()
            while True:
                delay = response.headers.get("retry-after", "2")
                if time.monotonic() + float(delay if delay.isdigit() else 2) > deadline:
                    raise SyntheticError(f"the synthetic model of '{name}' is still being fitted after {wait:g}s; "
                                         "try again later")
                time.sleep(float(delay) if delay.isdigit() else 2.0)
                status = self.send("GET", f"/v1/datasets/{name}/synthetic/status", purpose=purpose).json()
                if status.get("state") in ("ready", "failed", "absent"):
                    break

    def synthetic_status(self, name: str, purpose: str | None = None) -> dict[str, Any]:
        """The synthetic model of ``name``: state, fit progress, and its quality/privacy reports."""
        return self.send("GET", f"/v1/datasets/{name}/synthetic/status", purpose=purpose).json()

    # -- stewards --------------------------------------------------------------------------------
    def audit(self, after: int = 0, limit: int = 100, purpose: str | None = None, **filters: str) -> dict[str, Any]:
        return self.send("GET", "/v1/audit", purpose=purpose,
                          params={"after": after, "limit": limit, **filters}).json()

    def explain(self, principal: str, dataset: str, for_purpose: str, purpose: str | None = None) -> dict[str, Any]:
        return self.send("GET", "/v1/policy/explain", purpose=purpose,
                          params={"principal": principal, "dataset": dataset, "for_purpose": for_purpose}).json()
