"""Plan-bound tickets: short-lived capabilities that only the gateway can make and check.

Why: a Spark executor fetching one fragment, or a Delta Sharing client fetching one file, must
not carry the principal's API key (it would sit in the Spark conf, the UI, shell history and
logs), and must get nothing but *that* fragment under *that* plan. A ticket names who asked
(the principal, with the attributes it was authenticated with), the purpose, the dataset, the
access plan's hash, the data version, one subject (a fragment, a file) and an expiry, and is
sealed with an HMAC under a subkey of the masking key ring. Every gateway instance of a
deployment shares that ring, so any instance can redeem a ticket another made; nobody else can
make one.

A ticket is a credential, not a decision: redeeming it re-runs the lifecycle (the purpose is
declared again, the plan compiled again under the current policy) and the route refuses it
when the plan's hash or the data version moved since it was issued — a policy change, a
revoked grant or a rewritten file makes every outstanding ticket stale at once.

This module is pure: no clock, no I/O. ``now`` is the caller's.

Text form: ``gt1.<key id>.<base64url(JSON payload)>.<base64url(HMAC-SHA256)>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from govern.errors import AuthenticationFailed
from govern.identity.principal import Principal
from govern.mask.keys import KeyRing

__all__ = ["PREFIX", "Ticket", "TicketExpired", "issue", "looks_like_ticket", "open_ticket"]

PREFIX = "gt1."
_SUBKEY = "ticket/v1"
_MAX_TEXT = 8192


class TicketExpired(AuthenticationFailed):
    slug = "ticket-expired"
    title = "Ticket expired"


@dataclass(frozen=True)
class Ticket:
    """What a ticket grants. ``kind`` keeps a Delta Sharing file ticket from opening a Spark
    fragment and vice versa; ``subject`` is the one fragment or file it opens."""

    kind: str
    principal: Principal
    purpose: str
    dataset: str
    plan_hash: str
    data_version: str
    subject: str
    expires: int  # unix seconds
    extra: Mapping[str, Any] = field(default_factory=dict)  # safe, signed hints (e.g. a row range)

    def payload(self) -> dict[str, Any]:
        p = self.principal
        return {"k": self.kind, "p": {"n": p.name, "a": dict(p.attributes), "r": list(p.roles), "s": p.source},
                "u": self.purpose, "d": self.dataset, "h": self.plan_hash, "v": self.data_version,
                "s": self.subject, "e": int(self.expires), "x": dict(self.extra)}

    @classmethod
    def from_payload(cls, body: Mapping[str, Any]) -> Ticket:
        p = body["p"]
        principal = Principal(name=str(p["n"]), attributes=dict(p["a"]), roles=tuple(p["r"]), source=str(p["s"]))
        return cls(kind=str(body["k"]), principal=principal, purpose=str(body["u"]), dataset=str(body["d"]),
                   plan_hash=str(body["h"]), data_version=str(body["v"]), subject=str(body["s"]),
                   expires=int(body["e"]), extra=dict(body.get("x") or {}))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(keys: KeyRing, key_id: str, signed: str) -> bytes:
    return hmac.new(keys.subkey(_SUBKEY, key_id), signed.encode(), hashlib.sha256).digest()


def issue(ticket: Ticket, keys: KeyRing) -> str:
    """The ticket's text, sealed under the ring's active key."""
    body = _b64(json.dumps(ticket.payload(), sort_keys=True, separators=(",", ":")).encode())
    signed = f"{PREFIX}{keys.active}.{body}"
    return f"{signed}.{_b64(_mac(keys, keys.active, signed))}"


def looks_like_ticket(text: str | None) -> bool:
    return bool(text) and str(text).startswith(PREFIX)


def open_ticket(text: str, keys: KeyRing, *, kind: str, now: float) -> Ticket:
    """The ticket ``text`` seals, if this gateway made it, it is of ``kind`` and not expired.

    Every failure is :class:`AuthenticationFailed` with one detail ("invalid ticket"), except
    expiry (:class:`TicketExpired`), which the holder can act on by asking for a new one; the
    audit record gets the precise reason in ``extra['reason']``."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT or not text.startswith(PREFIX):
        raise AuthenticationFailed("invalid ticket", reason="malformed")
    parts = text[len(PREFIX):].split(".")
    if len(parts) != 3:
        raise AuthenticationFailed("invalid ticket", reason="malformed")
    key_id, body, mac = parts
    if key_id not in keys:
        raise AuthenticationFailed("invalid ticket", reason="unknown key id")
    try:
        given = _unb64(mac)
    except (ValueError, TypeError):
        raise AuthenticationFailed("invalid ticket", reason="malformed") from None
    if not hmac.compare_digest(given, _mac(keys, key_id, f"{PREFIX}{key_id}.{body}")):
        raise AuthenticationFailed("invalid ticket", reason="bad seal")
    try:
        ticket = Ticket.from_payload(json.loads(_unb64(body)))
    except (ValueError, KeyError, TypeError):  # sealed by us, so never: fail closed all the same
        raise AuthenticationFailed("invalid ticket", reason="malformed") from None
    if ticket.kind != kind:
        raise AuthenticationFailed("invalid ticket", reason=f"a {ticket.kind} ticket used as a {kind} ticket")
    if now >= ticket.expires:
        raise TicketExpired("the ticket has expired: ask the gateway for a new one", reason="expired")
    return ticket
