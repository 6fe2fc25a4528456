"""A recipient's profile file (Delta Sharing ``shareCredentialsVersion`` 1).

The bearer token of a profile is a dedicated ticket (:mod:`govern.identity.tickets`, kind
``share-profile``), not the principal's API key: a profile is handed to another team or
organisation and sits in notebooks and shared folders, so it must open only what sharing
serves — one principal, under one purpose (the share), until ``expirationTime``. Redeeming it
declares the purpose again and resolves the principal under the policy served then: removing
the principal, every API key of it, or its grant for the purpose stops every profile at once;
rotating the key ring stops all profiles.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from govern.identity.principal import Principal
from govern.identity.tickets import Ticket, issue
from govern.mask.keys import KeyRing
from govern.sharing.protocol import PROFILE_TICKET

__all__ = ["make_profile"]


def make_profile(principal: Principal, purpose: str, endpoint: str, keys: KeyRing, *, now: float,
                 ttl: float) -> dict[str, Any]:
    """The profile's JSON body. ``endpoint`` is the gateway's base URL + ``/delta-sharing``."""
    expires = int(now + ttl)
    ticket = Ticket(kind=PROFILE_TICKET, principal=principal, purpose=purpose, dataset="*", plan_hash="",
                    data_version="", subject=uuid.uuid4().hex, expires=expires)
    when = dt.datetime.fromtimestamp(expires, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"shareCredentialsVersion": 1, "endpoint": endpoint.rstrip("/"), "bearerToken": issue(ticket, keys),
            "expirationTime": when}
