"""View tokens: what a view was, signed by the gateway, so releases need no server-side state.

A view's container carries ``hv1.<payload>.<mac>``: the payload (base64url JSON) says who asked,
under which purpose, which plan, which columns, bounds, filter and groups, the key id, row count,
a *keyed* digest of the plaintext, and when the token expires; the MAC is HMAC-SHA-256 under the
key store's ``token.key``. A release presents the token: the gateway checks the MAC, expiry and
caller, recomputes the plaintext under the current plan and compares digests — so the release is
over exactly the view the client received, or it is refused. The payload is readable by its
holder and contains nothing she may not know (the digest is keyed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from govern.errors import AccessDenied, InvalidRequest
from govern.privacy.he.prepare import ViewSpec

PREFIX = "hv1"


@dataclass(frozen=True)
class ViewToken:
    view_id: str
    principal: str
    purpose: str
    spec: ViewSpec
    key_id: str
    rows: int
    digest: str
    plan_hash: str
    issued: int
    expires: int

    def to_dict(self) -> dict[str, Any]:
        return {"view_id": self.view_id, "principal": self.principal, "purpose": self.purpose,
                "spec": self.spec.to_dict(), "key_id": self.key_id, "rows": self.rows, "digest": self.digest,
                "plan_hash": self.plan_hash, "issued": self.issued, "expires": self.expires}

    @classmethod
    def new(cls, principal: str, purpose: str, spec: ViewSpec, key_id: str, rows: int, digest: str,
            plan_hash: str, ttl: float) -> ViewToken:
        now = int(time.time())
        return cls(secrets.token_hex(12), principal, purpose, spec, key_id, rows, digest, plan_hash, now,
                   now + int(ttl))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(token: ViewToken, key: bytes) -> str:
    body = f"{PREFIX}.{_b64(json.dumps(token.to_dict(), sort_keys=True, separators=(',', ':')).encode())}"
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(text: str, key: bytes, *, principal: str, now: float | None = None) -> ViewToken:
    """The token's content, if its MAC verifies, it has not expired and it was issued to
    ``principal``. Any failure says only what failed, never why a MAC differs."""
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidRequest("view_token is not a govern view token")
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(parts[2])
        payload = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("view_token is malformed") from None
    if not hmac.compare_digest(expected, given):
        raise InvalidRequest("view_token does not verify (altered, or issued by another gateway)")
    token = ViewToken(payload["view_id"], payload["principal"], payload["purpose"],
                      ViewSpec.from_dict(payload["spec"]), payload["key_id"], int(payload["rows"]),
                      payload["digest"], payload["plan_hash"], int(payload["issued"]), int(payload["expires"]))
    if (now if now is not None else time.time()) > token.expires:
        raise InvalidRequest("view_token has expired: request a new encrypted view")
    if token.principal != principal:
        raise AccessDenied("this view was issued to another principal")
    return token
