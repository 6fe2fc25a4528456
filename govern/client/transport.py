"""The HTTP plumbing every client call shares: authentication, purpose, retries, problems.

:class:`Transport` sends one request and turns a problem+json answer back into the gateway's
own exception class (by its ``type``); :class:`ResponseReader` lets pyarrow read a streamed
body. A stream that breaks midway raises :class:`StreamInterrupted`: never a silently short
result.
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


class ResponseReader:
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


class Transport:
    def __init__(self, base_url: str, token: str, purpose: str | None = None, *, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.3, transport: httpx.BaseTransport | None = None) -> None:
        self.purpose = purpose
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {token}", "User-Agent": "govern-client"})

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({str(self._http.base_url)!r}, purpose={self.purpose!r})"

    # -- plumbing --------------------------------------------------------------------------------
    def _headers(self, purpose: str | None) -> dict[str, str]:
        p = purpose or self.purpose
        return {"X-Purpose": p} if p else {}

    def send(self, method: str, path: str, *, purpose: str | None = None, params: dict[str, Any] | None = None,
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
                body = self.problem(response)
                raise error_from_problem(response.status_code, body)
            return response
        raise TransportFailed("retries exhausted")  # pragma: no cover - loop always returns or raises

    @staticmethod
    def problem(response: httpx.Response) -> dict[str, Any]:
        try:
            response.read()
            body = response.json()
            return body if isinstance(body, dict) else {"detail": str(body)}
        except Exception:
            return {"detail": f"HTTP {response.status_code}"}
        finally:
            response.close()

    @staticmethod
    def arrow(response: httpx.Response) -> tuple[pa.RecordBatchStreamReader, ResponseReader, httpx.Response]:
        source = ResponseReader(response)
        try:
            return pa.ipc.open_stream(source), source, response
        except pa.ArrowInvalid as exc:
            response.close()
            raise StreamInterrupted(f"the Arrow stream is incomplete or corrupt: {exc}") from None

    @staticmethod
    def batches(reader: pa.RecordBatchStreamReader, source: ResponseReader,
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
