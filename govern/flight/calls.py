"""Who is calling and why: each Flight call's headers, credentials and purpose, and its one
exchange with the request lifecycle.

pyarrow hands a server its call headers only through middleware, so :class:`CallHeaders`
(one per call) keeps them for the handler; a Handshake is answered there too
(:meth:`Calls.login`), since its answer is a response header. Everything else happens inside
the call's :meth:`Calls.exchange`: credentials are resolved again on every call (a session
token stands for the credentials its Handshake proved, see :mod:`govern.flight.sessions`),
then the purpose, then whatever the call does. Leaving the exchange by a govern error records
it and turns it into the matching Flight status (:mod:`govern.flight.status`).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.flight as flight

from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Bearer, Call, Credentials, Exchange, Password
from govern.errors import AuthenticationFailed, GovernError
from govern.flight.sessions import TOKEN_PREFIX, Session, Sessions
from govern.flight.status import flight_error
from govern.identity.principal import Principal

__all__ = ["MIDDLEWARE", "CallHeaders", "CallHeadersFactory", "Calls"]

log = logging.getLogger("govern.flight")

MIDDLEWARE = "govern"
SURFACE = "flight"


class CallHeaders(flight.ServerMiddleware):
    """One call's request headers (and, for a Handshake, the session token to send back)."""

    def __init__(self, headers: dict[str, list[Any]]) -> None:
        self._headers = {k.lower(): v for k, v in headers.items()}
        self.token: str | None = None

    def get(self, name: str) -> str | None:
        values = self._headers.get(name.lower())
        if not values:
            return None
        value = values[0]
        return value.decode("latin-1") if isinstance(value, bytes) else str(value)

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


class CallHeadersFactory(flight.ServerMiddlewareFactory):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[Any]]) -> CallHeaders:
        call = CallHeaders(headers)
        if info.method == flight.FlightMethod.HANDSHAKE:
            call.token = self.calls.login(call)
        return call


class AcceptHandshake(flight.ServerAuthHandler):
    """Lets the Handshake RPC through (pyarrow answers UNIMPLEMENTED without a handler); the
    credentials are checked by :meth:`Calls.login` from the call's headers, and every other
    call is checked in its own exchange."""

    def authenticate(self, outgoing: flight.ServerAuthSender, incoming: flight.ServerAuthReader) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        return ""


def basic(header: str) -> Password:
    """``Basic base64(user:password)`` as wire-style credentials (padded or not: Go clients
    send base64 without padding)."""
    try:
        encoded = header.split(None, 1)[1].strip()
        encoded += "=" * (-len(encoded) % 4)
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed("malformed Basic credentials") from None
    if not sep or not user:
        raise AuthenticationFailed("Basic credentials need a user (the principal) and a password (its API key)")
    return Password(user, password)


class Calls:
    """The lifecycle side of every Flight call, for one gateway."""

    def __init__(self, gateway: Gateway, sessions: Sessions) -> None:
        self.gw = gateway
        self.sessions = sessions

    @contextmanager
    def exchange(self, context: flight.ServerCallContext, route: str, action: str) -> Iterator[Exchange]:
        """The call's one exchange; a govern error leaving it is recorded, then raised as the
        Flight status that matches it."""
        headers = context.get_middleware(MIDDLEWARE)
        rid = headers.get("x-request-id") if isinstance(headers, CallHeaders) else None
        try:
            with self.gw.exchange(Call(SURFACE, route, action, client_request_id=rid,
                                       extra={"peer": context.peer()[:100]})) as ex:
                yield ex
        except GovernError as exc:
            raise flight_error(exc) from None
        except flight.FlightError:
            raise
        except Exception as exc:
            log.warning("flight call failed", extra={"route": route, "error": type(exc).__name__})
            raise flight.FlightInternalError(f"internal error ({type(exc).__name__})") from None

    @staticmethod
    def headers(context: flight.ServerCallContext) -> CallHeaders:
        headers = context.get_middleware(MIDDLEWARE)
        assert isinstance(headers, CallHeaders)
        return headers

    def credentials(self, headers: CallHeaders) -> tuple[Credentials, Session | None]:
        """The call's credentials: a session token's (re-resolved now), a bearer API key or JWT,
        or Basic user/password; none at all is refused by the authenticator."""
        auth = headers.get("authorization")
        if auth:
            scheme, _, value = auth.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip().startswith(TOKEN_PREFIX):
                session = self.sessions.get(value.strip())
                if session is None:
                    raise AuthenticationFailed("the Flight session has ended or is unknown: authenticate again "
                                               "(Handshake)")
                return session.credentials, session
            if scheme.lower() == "basic":
                return basic(auth), None
        return Bearer(auth), None

    def enter(self, ex: Exchange, context: flight.ServerCallContext, *purposes: str | None,
              purpose: bool = True) -> tuple[Principal, Session | None]:
        """Authenticate the call; then, with ``purpose``, declare the first purpose given: the
        statement's own, the ``x-purpose`` header, the session's ``catalog`` option."""
        headers = self.headers(context)
        credentials, session = self.credentials(headers)
        principal = ex.authenticate(credentials)
        if purpose:
            ex.declare(*self.purposes(headers, session, *purposes))
        return principal, session

    @staticmethod
    def purposes(headers: CallHeaders, session: Session | None, *first: str | None) -> tuple[str | None, ...]:
        return (*first, headers.get("x-purpose"), session.options.get("catalog") if session else None)

    def login(self, headers: CallHeaders) -> str:
        """A Handshake: prove the credentials (and the ``x-purpose`` header, if sent) in an
        exchange audited as ``connect``; answer with a new session token."""
        try:
            with self.gw.exchange(Call(SURFACE, "Handshake", "connect",
                                       client_request_id=headers.get("x-request-id"))) as ex:
                credentials, _session = self.credentials(headers)
                if isinstance(credentials, Bearer) and credentials.header is None:
                    raise AuthenticationFailed("send Authorization: Basic (user = principal, password = API key) "
                                               "or Bearer (an API key or a JWT)")
                principal = ex.authenticate(credentials)
                if headers.get("x-purpose"):
                    ex.declare(headers.get("x-purpose"))
                ex.finish()
        except GovernError as exc:
            raise flight_error(exc) from None
        return self.sessions.open(credentials, principal.name)
