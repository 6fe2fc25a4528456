"""JWKS served over HTTP by a real local server: caching, rotation, outages and timeouts.

The cache clock is injected, so expiry is tested without sleeping; network timeouts are real.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from govern.errors import AuthenticationFailed
from govern.identity.jwt import JwtVerifier

from .conftest import Keys, mint, oidc_settings, public_jwk, standard_jwks


class JwksServer:
    """Serves ``body`` at /jwks with ``status``; counts requests. ``/moved`` redirects to /jwks."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if self.path == "/drip":  # headers at once, then one byte per 0.1 s
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    for _ in range(30):
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.1)
                    return
                if self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", "/jwks")
                    self.end_headers()
                    return
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def publish(self, jwks: dict[str, Any]) -> None:
        self.body = json.dumps(jwks).encode()


@pytest.fixture
def server(keys: Keys) -> Iterator[JwksServer]:
    s = JwksServer()
    s.publish(standard_jwks(keys))
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def url_verifier(url: str, clock: Clock | None = None, **kw: Any) -> JwtVerifier:
    tuning = {k: kw.pop(k) for k in ("refresh_cooldown", "failure_backoff") if k in kw}
    settings = oidc_settings(jwks_url=url, jwks_cache_seconds=300, **kw)
    return JwtVerifier(settings, clock=clock or Clock(), **tuning)


def refused_with(v: JwtVerifier, token: str, detail: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        v.verify(token)
    assert info.value.detail == detail


def test_keys_are_fetched_once_and_cached(keys: Keys, server: JwksServer) -> None:
    clock = Clock()
    v = url_verifier(server.url, clock)
    assert server.requests == 0  # nothing is fetched before the first token
    for _ in range(3):
        v.verify(mint(keys.rsa))
        v.verify(mint(keys.ec256, alg="ES256", kid="ec1"))
    assert server.requests == 1
    clock.now += 299
    v.verify(mint(keys.rsa))
    assert server.requests == 1
    clock.now += 2  # past jwks_cache_seconds
    v.verify(mint(keys.rsa))
    assert server.requests == 2


def test_rotation_unknown_kid_refreshes_at_most_once_per_cooldown(keys: Keys, server: JwksServer) -> None:
    clock = Clock()
    v = url_verifier(server.url, clock, refresh_cooldown=30)
    v.verify(mint(keys.rsa))
    server.publish({"keys": [public_jwk(keys.rsa_other, "rotated")]})
    rotated = mint(keys.rsa_other, kid="rotated")
    # Within the cooldown an unknown kid does not reach the provider (random kids cannot DoS it).
    for _ in range(5):
        refused_with(v, rotated, "invalid token: unknown key id")
    assert server.requests == 1
    clock.now += 30
    assert v.verify(rotated)["sub"] == "user-1"
    assert server.requests == 2
    # The old key is gone from the refreshed set.
    refused_with(v, mint(keys.rsa), "invalid token: unknown key id")


def test_stale_keys_serve_one_more_period_then_fail_closed(keys: Keys, server: JwksServer) -> None:
    clock = Clock()
    v = url_verifier(server.url, clock, failure_backoff=10)
    v.verify(mint(keys.rsa))
    server.status = 503
    clock.now += 301  # expired: the refresh fails, the previous set is still used
    v.verify(mint(keys.rsa))
    assert server.requests == 2
    clock.now += 5  # within the failure backoff: no new attempt
    v.verify(mint(keys.rsa))
    assert server.requests == 2
    clock.now += 300  # more than twice the cache period since the last good fetch
    refused_with(v, mint(keys.rsa), "invalid token: signing keys unavailable")
    server.status = 200
    clock.now += 10  # backoff over: the provider is back
    v.verify(mint(keys.rsa))


@pytest.mark.parametrize("status, body", [(500, b"{}"), (200, b"<html>"), (200, b'{"keys": 1}'),
                                          (404, b"")])
def test_bad_responses_fail_closed(keys: Keys, server: JwksServer, status: int, body: bytes) -> None:
    server.status, server.body = status, body
    refused_with(url_verifier(server.url), mint(keys.rsa), "invalid token: signing keys unavailable")


def test_redirects_are_not_followed(keys: Keys, server: JwksServer) -> None:
    v = url_verifier(server.url.replace("/jwks", "/moved"))
    refused_with(v, mint(keys.rsa), "invalid token: signing keys unavailable")
    assert server.requests == 1


def test_refused_tokens_never_trigger_a_fetch(keys: Keys, server: JwksServer) -> None:
    from .conftest import hs256_with_public_pem

    v = url_verifier(server.url)
    refused_with(v, hs256_with_public_pem(keys.rsa.public_key()), "invalid token: algorithm not allowed")
    refused_with(v, "a.b.c", "invalid token: malformed")
    assert server.requests == 0


def test_connection_refused_fails_fast(keys: Keys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    v = url_verifier(f"http://127.0.0.1:{port}/jwks", http_timeout=2.0)
    started = time.monotonic()
    refused_with(v, mint(keys.rsa), "invalid token: signing keys unavailable")
    assert time.monotonic() - started < 2.0


def test_unresponsive_server_fails_within_the_timeout_then_backs_off(keys: Keys) -> None:
    """A server that accepts the connection but never answers: one timeout, then fail fast."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or replies
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/jwks"
        v = url_verifier(url, http_timeout=0.5, failure_backoff=10)
        started = time.monotonic()
        refused_with(v, mint(keys.rsa), "invalid token: signing keys unavailable")
        first = time.monotonic() - started
        assert 0.4 < first < 1.5
        started = time.monotonic()
        refused_with(v, mint(keys.rsa), "invalid token: signing keys unavailable")
        assert time.monotonic() - started < 0.1  # backing off: no second timeout per request


def test_slow_drip_body_is_cut_at_the_total_deadline(keys: Keys, server: JwksServer) -> None:
    """The socket timeout alone would wait per read; the fetch has one overall deadline."""
    v = url_verifier(server.url.replace("/jwks", "/drip"), http_timeout=0.5)
    started = time.monotonic()
    refused_with(v, mint(keys.rsa), "invalid token: signing keys unavailable")
    assert time.monotonic() - started < 1.2
