"""Flight sessions: the bearer token a Handshake hands out, and what it stands for.

A Handshake with ``Authorization: Basic`` (user = principal, password = API key) or with a
bearer (an API key or a JWT) is answered with a fresh session token
(``Authorization: Bearer gf_…``). The token is **not** a credential of its own: it stands for
the credentials the Handshake proved, which every later call presents to the request
lifecycle again, so a removed API key, a changed principal or an expired JWT stops working
at the next call, exactly as on the PostgreSQL wire. A session also keeps its options
(``SetSessionOptions``: the ``catalog``, i.e. the purpose).

Tokens are kept only as SHA-256 digests; the store is bounded (least recently used sessions
go first) and idle sessions expire.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from govern.deliver.lifecycle import Credentials

__all__ = ["TOKEN_PREFIX", "Session", "Sessions"]

TOKEN_PREFIX = "gf_"


@dataclass
class Session:
    credentials: Credentials = field(repr=False)
    principal: str
    options: dict[str, str] = field(default_factory=dict)
    used: float = field(default_factory=time.monotonic)


class Sessions:
    """Token → session, bounded in number and idle time. Thread-safe."""

    def __init__(self, *, limit: int = 10_000, idle: float = 3_600.0) -> None:
        self.limit = limit
        self.idle = idle
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def open(self, credentials: Credentials, principal: str) -> str:
        """A new session for proven ``credentials``; returns its token (shown once)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[self._key(token)] = Session(credentials, principal)
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)
        return token

    def get(self, token: str) -> Session | None:
        """The live session of ``token`` (touching it), or None: unknown, closed or idle too long."""
        key = self._key(token)
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.used > self.idle:
                del self._sessions[key]
                return None
            session.used = now
            self._sessions.move_to_end(key)
            return session

    def close(self, token: str) -> bool:
        with self._lock:
            return self._sessions.pop(self._key(token), None) is not None

    def __len__(self) -> int:
        return len(self._sessions)
