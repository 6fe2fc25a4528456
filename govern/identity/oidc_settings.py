"""The ``oidc:`` section of govern.yaml: which identity provider's tokens the gateway trusts.

Everything that decides whether a JWT is accepted lives here and is checked when settings load,
not when the first token arrives: an allow-list that could admit ``HS256`` or ``none``, a key
source that is missing or ambiguous, or a JWKS URL fetched over plain HTTP from a remote host
would each let a forged token through, so they are refused up front.
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ASYMMETRIC_ALGORITHMS", "OidcSettings"]

# Asymmetric signature algorithms only. HMAC (HS*) would make the *public* JWKS key a shared
# secret (the HS/RS confusion attack) and ``none`` disables signatures altogether.
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"}
)

_LOOPBACK_NAMES = {"localhost"}
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,32}:")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class OidcSettings(BaseModel):
    """Trust settings for one OpenID Connect / OAuth 2 issuer.

    ``attribute_claims`` maps a govern attribute name to the claim that carries it, e.g.
    ``{"regions": "regions", "clearance": "clearance"}``; claims that are not mapped never become
    attributes, so an identity provider cannot inject attributes the steward did not expect.

    ``principal_prefix`` (default ``oidc:``) puts every subject in the provider's namespace: the
    principal of ``sub: frank`` is ``oidc:frank``, never the local ``frank`` or the role ``frank``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1)
    audience: str | list[str]
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_seconds: int = Field(default=30, ge=0, le=600)
    principal_claim: str = Field(default="sub", min_length=1)
    roles_claim: str | None = "roles"
    attribute_claims: dict[str, str] = Field(default_factory=dict)
    principal_prefix: str = "oidc:"
    jwks_cache_seconds: int = Field(default=300, gt=0)
    http_timeout: float = Field(default=3.0, gt=0, le=60)

    @field_validator("audience")
    @classmethod
    def _audience_not_empty(cls, value: str | list[str]) -> str | list[str]:
        values = [value] if isinstance(value, str) else value
        if not values or any(not v for v in values):
            raise ValueError("audience must be a non-empty string or list of non-empty strings")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("algorithms must list at least one algorithm")
        refused = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if refused:
            allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            raise ValueError(
                f"algorithms {refused} are not allowed (HMAC and 'none' are refused); "
                f"use only: {allowed}"
            )
        return list(dict.fromkeys(value))  # keep order, drop duplicates

    @field_validator("jwks_url")
    @classmethod
    def _https_or_loopback(cls, value: str | None) -> str | None:
        """Keys fetched over plain HTTP could be swapped in transit; allow it only on loopback."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("jwks_url must be an https:// URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("jwks_url must use https (plain http is allowed only for loopback)")
        return value

    @field_validator("principal_prefix")
    @classmethod
    def _a_namespace(cls, value: str) -> str:
        """Subjects live in their own namespace: a ``sub`` of ``steward`` or ``carol`` must not
        become the role or the local principal of that name. There is no way to turn this off."""
        if not _NAMESPACE.fullmatch(value):
            raise ValueError(
                "principal_prefix must be a namespace ending in ':' (letters, digits, '_', '.', '-' "
                "before it, e.g. 'oidc:'); OIDC subjects are never mapped onto local principal or "
                "role names — grant them roles with `g, oidc:<sub>, ROLE` in policy.csv"
            )
        return value

    @field_validator("attribute_claims")
    @classmethod
    def _claims_named(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k or not v for k, v in value.items()):
            raise ValueError("attribute_claims maps non-empty attribute names to claim names")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> OidcSettings:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of jwks_file or jwks_url")
        return self

    @property
    def audiences(self) -> list[str]:
        """The accepted audiences as a list, whatever form the YAML used."""
        return [self.audience] if isinstance(self.audience, str) else list(self.audience)
