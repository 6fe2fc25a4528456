"""Verify JWTs from an OpenID Connect provider against its published JWKS.

PyJWT does the cryptography and the standard claim checks; this module decides *which key and
which algorithm* are used, because that is where JWT verifiers get broken:

* the algorithm allow-list comes only from settings (asymmetric algorithms, see
  :mod:`govern.identity.oidc_settings`), and the token's ``alg`` is checked against it before any
  key is looked up, so ``none`` and ``HS256`` (HMAC keyed with the public RSA key) never reach a
  verifier;
* a JWKS entry is used only if it is a public signature key whose ``kty``/``crv``/``alg``/``use``
  agree with the token's ``alg``, and it is handed to PyJWT as a ``PyJWK`` *bound to that
  algorithm*; keys carrying private or symmetric material are never used;
* headers that point at other keys (``jku``, ``x5u``, embedded ``jwk``) are ignored: only ``kid``
  selects a key, and only among configured keys;
* RSA keys under 2048 bits are refused, the issuer is compared exactly once more after PyJWT
  (PyJWT 2.10.0 matched substrings, CVE-2024-53861), and time claims must be JSON numbers.

Remote key sets are cached for ``jwks_cache_seconds``; an unknown ``kid`` forces at most one
refresh per cooldown (so random kids cannot hammer the provider), a failed fetch backs off (so an
outage costs one timeout, not one per request), and a stale set is used for at most one more
cache period while the provider is unreachable. Error details name the reason, never the token.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidJTIError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)

from govern.errors import AuthenticationFailed
from govern.identity.oidc_settings import OidcSettings

__all__ = ["JwtVerifier"]

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 16 * 1024  # bounded work: a bearer token is a few KB at most
MAX_JWKS_BYTES = 1 << 20
REQUIRED_CLAIMS = ("exp", "iss", "aud", "sub")

_KTY_FOR_ALG = {"RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "PS256": "RSA",
                "ES256": "EC", "ES384": "EC"}
_CRV_FOR_ALG = {"ES256": "P-256", "ES384": "P-384"}
# JWK members that only private or symmetric keys have (RFC 7518 §6.2.2, §6.3.2, §6.4).
_SECRET_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

# PyJWT exception → short reason. Order matters: subclasses before their bases.
_REASONS: tuple[tuple[type[PyJWTError], str], ...] = (
    (ExpiredSignatureError, "expired"),
    (ImmatureSignatureError, "not yet valid"),
    (InvalidAudienceError, "wrong audience"),
    (InvalidIssuerError, "wrong issuer"),
    (InvalidIssuedAtError, "malformed claims"),
    (InvalidSubjectError, "malformed claims"),
    (InvalidJTIError, "malformed claims"),
    (InvalidAlgorithmError, "algorithm not allowed"),
    (InvalidSignatureError, "bad signature"),
    (InvalidKeyError, "unusable signing key"),
    (DecodeError, "malformed"),
)


def _fail(reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(f"invalid token: {reason}", reason=reason)


class _KeysUnavailable(Exception):
    """The key set could not be read; the message is for the server log only."""


def _parse_jwks(data: bytes) -> list[dict[str, Any]]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise _KeysUnavailable("JWKS is not valid JSON") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise _KeysUnavailable("JWKS has no 'keys' list")
    return [k for k in keys if isinstance(k, dict)]


class _FileKeys:
    """A JWKS file, re-read when it changes on disk (so rotation needs no restart)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def get(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            try:
                st = os.stat(self._path)
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._stamp:
                    if st.st_size > MAX_JWKS_BYTES:
                        raise _KeysUnavailable(f"JWKS file {self._path} is too large")
                    self._keys = _parse_jwks(self._path.read_bytes())
                    self._stamp = stamp
            except OSError as exc:
                raise _KeysUnavailable(f"cannot read JWKS file {self._path}: {exc.strerror}") from None
            return self._keys


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could move the key fetch off the configured (https) origin."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _UrlKeys:
    """A JWKS fetched over HTTP(S) with a TTL cache, refresh cooldown and failure backoff."""

    def __init__(self, url: str, *, ttl: float, timeout: float, cooldown: float,
                 backoff: float, clock: Callable[[], float]) -> None:
        self._url = url
        self._ttl = ttl
        self._timeout = timeout
        self._cooldown = cooldown
        self._backoff = backoff
        self._clock = clock
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_NoRedirect())

    def get(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock()
            age = None if self._keys is None else now - self._fetched_at
            due = age is None or age >= self._ttl or (refresh and age >= self._cooldown)
            backing_off = self._failed_at is not None and now - self._failed_at < self._backoff
            if due and not backing_off:
                try:
                    self._keys = self._fetch()
                    self._fetched_at = now
                    self._failed_at = None
                    return self._keys
                except _KeysUnavailable as exc:
                    self._failed_at = now
                    log.warning("JWKS refresh failed: %s", exc)
            if self._keys is not None and now - self._fetched_at < 2 * self._ttl:
                return self._keys  # fresh, or stale for at most one more period
            raise _KeysUnavailable(f"no usable JWKS from {self._url}")

    def _fetch(self) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            self._url, headers={"Accept": "application/json", "User-Agent": "govern"}
        )
        deadline = time.monotonic() + self._timeout
        body = bytearray()
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                while chunk := response.read1(65536):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise _KeysUnavailable(f"JWKS from {self._url} is too large")
                    if time.monotonic() > deadline:
                        raise _KeysUnavailable(f"JWKS fetch from {self._url} timed out")
        except _KeysUnavailable:
            raise
        except Exception as exc:  # URLError, HTTPError, timeouts, protocol errors
            raise _KeysUnavailable(f"cannot fetch JWKS from {self._url}: {exc}") from None
        return _parse_jwks(bytes(body))


def _key_refusal(jwk: dict[str, Any], alg: str) -> str | None:
    """Why ``jwk`` must not verify a token signed with ``alg`` (None: it may)."""
    if _SECRET_MEMBERS & jwk.keys():
        log.warning("JWKS key %r holds private or symmetric material; not used", jwk.get("kid"))
        return "unusable signing key"
    if jwk.get("kty") != _KTY_FOR_ALG[alg]:
        return "key type does not match algorithm"
    if alg in _CRV_FOR_ALG and jwk.get("crv") != _CRV_FOR_ALG[alg]:
        return "curve does not match algorithm"
    if "alg" in jwk and jwk["alg"] != alg:
        return "key algorithm does not match"
    if "use" in jwk and jwk["use"] != "sig":
        return "key is not a signature key"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key is not a verification key"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class JwtVerifier:
    """Verifies bearer JWTs for one issuer. Thread-safe; keys are loaded lazily on first use.

    ``refresh_cooldown``, ``failure_backoff`` and ``clock`` tune the remote key cache (tests use
    them to run without sleeping).
    """

    def __init__(self, settings: OidcSettings, *, refresh_cooldown: float = 30.0,
                 failure_backoff: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._algorithms = list(settings.algorithms)
        self._keys: _FileKeys | _UrlKeys
        if settings.jwks_file is not None:
            self._keys = _FileKeys(settings.jwks_file)
        else:
            assert settings.jwks_url is not None  # guaranteed by OidcSettings
            self._keys = _UrlKeys(
                settings.jwks_url, ttl=settings.jwks_cache_seconds, timeout=settings.http_timeout,
                cooldown=refresh_cooldown, backoff=failure_backoff, clock=clock,
            )

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` if it is valid now; else :class:`AuthenticationFailed`."""
        if not isinstance(token, str) or not token:
            raise _fail("malformed")
        if len(token) > MAX_TOKEN_CHARS:
            raise _fail("too large")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise _fail("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _fail("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _fail("missing key id")
        key = self._key_for(kid, alg)
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                audience=s.audiences,
                issuer=s.issuer,
                leeway=s.leeway_seconds,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_sub": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except MissingRequiredClaimError as exc:
            raise _fail(f"missing claim '{exc.claim}'") from None
        except PyJWTError as exc:
            reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "rejected")
            raise _fail(reason) from None
        # Belt and braces over PyJWT: exact issuer, numeric time claims (PyJWT accepts "123").
        if claims.get("iss") != s.issuer:
            raise _fail("wrong issuer")
        if any(c in claims and not _is_number(claims[c]) for c in ("exp", "nbf", "iat")):
            raise _fail("malformed claims")
        return claims

    def _key_for(self, kid: str, alg: str) -> PyJWK:
        """The configured key named ``kid`` that may verify ``alg``, bound to ``alg``."""
        try:
            key, refusal = self._match(self._keys.get(), kid, alg)
            if key is None and refusal is None:  # unknown kid: maybe the provider rotated keys
                key, refusal = self._match(self._keys.get(refresh=True), kid, alg)
        except _KeysUnavailable as exc:
            log.warning("JWT refused, signing keys unavailable: %s", exc)
            raise _fail("signing keys unavailable") from None
        if key is None:
            raise _fail(refusal or "unknown key id")
        return key

    @staticmethod
    def _match(keys: list[dict[str, Any]], kid: str, alg: str) -> tuple[PyJWK | None, str | None]:
        refusal: str | None = None
        for jwk in keys:
            if jwk.get("kid") != kid:
                continue
            refusal = _key_refusal(jwk, alg)
            if refusal is not None:
                continue
            try:
                return PyJWK(jwk, algorithm=alg), None
            except PyJWTError:
                refusal = "unusable signing key"
        return None, refusal
