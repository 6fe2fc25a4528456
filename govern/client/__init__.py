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

from govern.client.client import Client
from govern.client.encrypted import EncryptedView, PrivateKey, QueryResult, Release
from govern.client.transport import (
    EOS_MARKER,
    ResponseReader,
    StreamInterrupted,
    Transport,
    TransportFailed,
    error_from_problem,
)

__all__ = ["EOS_MARKER", "Client", "EncryptedView", "PrivateKey", "QueryResult", "Release", "ResponseReader",
           "StreamInterrupted", "Transport", "TransportFailed", "error_from_problem"]
