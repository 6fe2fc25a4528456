"""Console sessions: a signed cookie naming a server-side session, and the CSRF tokens.

The browser holds only ``SID.SIGNATURE`` (HMAC-SHA-256 of the session id under a key made at
start-up and never written anywhere): a forged or altered cookie names no session. The
credential the steward signed in with (an API key or an OIDC bearer token) stays on the server,
and every request re-authenticates it through the lifecycle, so a revoked key or an expired token
ends its console sessions at the next click. Sessions live in this process's memory, expire after
``ttl`` seconds, and are bounded in number (the oldest go first).

CSRF: each session has a random token every form posts back (compared in constant time); the
sign-in form, which has no session yet, uses a signed double-submit token (a cookie and a form
field that must agree, the cookie signed so that another site cannot plant one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["COOKIE", "PRE_COOKIE", "Session", "Sessions"]

COOKIE = "govern_console"
PRE_COOKIE = "govern_console_signin"


@dataclass(frozen=True)
class Session:
    id: str
    principal: str
    purpose: str
    csrf: str
    expires: float
    credential: str = field(repr=False)  # "Bearer <API key | JWT>", kept server-side only


class Sessions:
    """Signed-in console sessions of one gateway process."""

    def __init__(self, *, ttl: int = 8 * 3600, limit: int = 10_000, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self.ttl = ttl
        self._limit = limit
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    # -- signing ---------------------------------------------------------------------------------
    def _sign(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def _unsign(self, kind: str, cookie: str | None) -> str | None:
        value, _, signature = (cookie or "").partition(".")
        if not value or not hmac.compare_digest(self._sign(kind, value), signature):
            return None
        return value

    # -- sessions ----------------------------------------------------------------------------------
    def create(self, principal: str, purpose: str, credential: str) -> tuple[Session, str]:
        """A new session and the cookie value that names it."""
        session = Session(secrets.token_urlsafe(24), principal, purpose, secrets.token_urlsafe(24),
                          time.time() + self.ttl, credential)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self._limit:
                self._sessions.popitem(last=False)
        return session, f"{session.id}.{self._sign('session', session.id)}"

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (unsigned, unknown or expired)."""
        sid = self._unsign("session", cookie)
        if sid is None:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires < time.time():
                del self._sessions[sid]
                return None
        return session

    def drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    # -- the sign-in form's double-submit token ------------------------------------------------------
    def signin_token(self) -> tuple[str, str]:
        """(form value, cookie value) for a sign-in form."""
        nonce = secrets.token_urlsafe(18)
        return nonce, f"{nonce}.{self._sign('signin', nonce)}"

    def signin_token_ok(self, cookie: str | None, form_value: str | None) -> bool:
        nonce = self._unsign("signin", cookie)
        return nonce is not None and bool(form_value) and hmac.compare_digest(nonce, form_value or "")

    @staticmethod
    def csrf_ok(session: Session, form_value: str | None) -> bool:
        return bool(form_value) and hmac.compare_digest(session.csrf, form_value or "")
