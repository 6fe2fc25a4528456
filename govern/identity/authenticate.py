"""Who is asking: turn an ``Authorization`` header (or a PG user/password) into a Principal.

Two kinds of bearer token are accepted. An API key (``gk_<id>_<secret>``) is found by its id in
the *current* policy's principals and checked against the stored hash in constant time; the id
index is rebuilt whenever ``policy.version`` changes, so a key removed from principals.yaml stops
working at the next reload. Anything else is treated as a JWT from the configured OIDC issuer
(:mod:`govern.identity.jwt`); its principal lives in the issuer's namespace (``oidc:<sub>``), so
it never takes the grants or attributes of a local principal or a role of the same name.

Every failure is :class:`AuthenticationFailed` with a short reason that never quotes the
credential; a wrong key and a key of another user get the same answer, so the reply is no oracle.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from govern.errors import AuthenticationFailed
from govern.identity import apikeys
from govern.identity.jwt import JwtVerifier
from govern.identity.oidc_settings import OidcSettings
from govern.identity.principal import Principal, is_namespaced

if TYPE_CHECKING:
    from govern.policy.model import PolicySet

__all__ = ["Authenticator"]

# RFC 6750 b64token: API keys and compact JWTs both fit; anything else is refused unparsed.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_NAME = 256
# Compared against when a key id is unknown, so known and unknown ids cost the same work.
_DUMMY_HASH = apikeys.hash_key(apikeys.PREFIX + "00000000_" + "x" * 43)


@dataclass(frozen=True)
class _KeyIndex:
    """API key id → ((principal name, stored hash), …) for one policy version."""

    version: str
    by_id: Mapping[str, tuple[tuple[str, str], ...]]

    @classmethod
    def build(cls, policy: PolicySet) -> _KeyIndex:
        by_id: dict[str, list[tuple[str, str]]] = {}
        for name, entry in policy.principals.items():
            for key in entry.api_keys:
                by_id.setdefault(key.id, []).append((name, key.hash))
        return cls(policy.version, {k: tuple(v) for k, v in by_id.items()})


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by literal name (URLs contain dots), else by dotted path (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _roles(value: Any, policy: PolicySet) -> tuple[str, ...]:
    """Roles from a claim; anything that is not a string is dropped (roles only ever add rights),
    and so is a name that is a principal — a local one (``carol``) or a namespaced subject
    (``oidc:carol``) — since holding it as a role would inherit that principal's grants."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(dict.fromkeys(
        r for r in items
        if isinstance(r, str) and r and r not in policy.principals and not is_namespaced(r)
    ))


def _bearer_token(header: str | None) -> str:
    if header is None or not header.strip():
        raise AuthenticationFailed("missing bearer token")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationFailed("unsupported authorization scheme; use 'Bearer <token>'")
    token = rest.strip()
    if not token:
        raise AuthenticationFailed("missing bearer token")
    if not _B64TOKEN.fullmatch(token):
        raise AuthenticationFailed("malformed bearer token")
    return token


class Authenticator:
    """Resolves credentials against the live policy (``policy_provider``) and optional OIDC."""

    def __init__(self, policy_provider: Callable[[], PolicySet], oidc: OidcSettings | None,
                 *, verifier: JwtVerifier | None = None) -> None:
        self._policy = policy_provider
        self._oidc = oidc
        self._verifier = verifier or (JwtVerifier(oidc) if oidc is not None else None)
        self._index: _KeyIndex | None = None
        self._lock = threading.Lock()

    def authenticate(self, authorization_header: str | None) -> Principal:
        """The principal behind ``Authorization: Bearer <API key | JWT>``."""
        token = _bearer_token(authorization_header)
        policy = self._policy()
        if token.startswith(apikeys.PREFIX):
            name = self._key_owner(policy, token)
            if name is None:
                raise AuthenticationFailed("invalid API key")
            return self._api_key_principal(policy, name)
        if self._verifier is None:
            raise AuthenticationFailed("invalid token: not an API key and OIDC is not configured")
        return self._oidc_principal(policy, self._verifier.verify(token))

    def authenticate_password(self, user: str, password: str) -> Principal:
        """PostgreSQL wire login: ``user`` is the principal, ``password`` one of *its* API keys."""
        if not user or not password:
            raise AuthenticationFailed("missing user name or password")
        policy = self._policy()
        name = self._key_owner(policy, password)
        if name is None or name != user:
            raise AuthenticationFailed("invalid user name or API key")
        return self._api_key_principal(policy, name)

    def current(self, principal: Principal) -> Principal:
        """``principal`` as the live policy has it now, for credentials issued earlier (tickets).

        A principal authenticated by API key is looked up again: removed from the policy, or left
        with no key at all (every key revoked), it is refused; its attributes are today's. An
        identity provider's principal keeps the claims it was authenticated with (the ticket
        sealing them is short-lived)."""
        if principal.source != "api-key":
            return principal
        policy = self._policy()
        entry = policy.principals.get(principal.name)
        if entry is None or not entry.api_keys:
            raise AuthenticationFailed("invalid ticket", reason="principal no longer has an API key")
        return self._api_key_principal(policy, principal.name)

    # -- API keys -------------------------------------------------------------------------------

    def _key_index(self, policy: PolicySet) -> _KeyIndex:
        index = self._index
        if index is None or index.version != policy.version:
            with self._lock:
                index = self._index
                if index is None or index.version != policy.version:
                    index = self._index = _KeyIndex.build(policy)
        return index

    def _key_owner(self, policy: PolicySet, key: str) -> str | None:
        """The principal owning ``key`` in this policy version, else None."""
        key_id = apikeys.parse_key(key)
        if key_id is None:
            return None
        candidates = self._key_index(policy).by_id.get(key_id) or (("", _DUMMY_HASH),)
        owner: str | None = None
        for name, stored in candidates:  # ids are 32 bits: a collision is possible, check all
            if apikeys.verify(key, stored) and name and owner is None:
                owner = name
        return owner

    @staticmethod
    def _api_key_principal(policy: PolicySet, name: str) -> Principal:
        entry = policy.principals[name]
        return Principal(name=name, attributes=copy.deepcopy(dict(entry.attributes)),
                         source="api-key")

    # -- OIDC -----------------------------------------------------------------------------------

    def _oidc_principal(self, policy: PolicySet, claims: Mapping[str, Any]) -> Principal:
        """Name (``principal_prefix`` + the principal claim: ``oidc:frank``), roles and mapped
        attributes from the claims. A ``principals.yaml`` entry of that namespaced name supplies
        base attributes, and claims override only the attributes they are mapped to.
        """
        s = self._oidc
        assert s is not None
        raw = _claim(claims, s.principal_claim)
        if not isinstance(raw, str) or not raw:
            raise AuthenticationFailed(f"invalid token: missing claim '{s.principal_claim}'",
                                       reason="missing claim")
        name = s.principal_prefix + raw
        if len(name) > _MAX_NAME or not name.isprintable():
            raise AuthenticationFailed("invalid token: unusable principal name",
                                       reason="unusable principal name")
        entry = policy.principals.get(name)
        attributes: dict[str, Any] = copy.deepcopy(dict(entry.attributes)) if entry else {}
        for attribute, claim_name in s.attribute_claims.items():
            value = _claim(claims, claim_name)
            if value is not None:
                attributes[attribute] = copy.deepcopy(value)
        roles = _roles(_claim(claims, s.roles_claim), policy) if s.roles_claim else ()
        return Principal(name=name, attributes=attributes, roles=roles, source="oidc")
