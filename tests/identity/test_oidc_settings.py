"""The OIDC settings refuse, at load time, anything that would let a forged token through."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from govern.identity.oidc_settings import ASYMMETRIC_ALGORITHMS, OidcSettings

BASE = {"issuer": "https://idp.example.com", "audience": "govern", "jwks_file": "jwks.json"}


def make(**overrides: object) -> OidcSettings:
    return OidcSettings(**{**BASE, **overrides})


def test_defaults() -> None:
    s = make()
    assert s.algorithms == ["RS256", "ES256"]
    assert (s.leeway_seconds, s.principal_claim, s.roles_claim) == (30, "sub", "roles")
    assert (s.attribute_claims, s.principal_prefix) == ({}, "oidc:")
    assert (s.jwks_cache_seconds, s.http_timeout) == (300, 3.0)
    assert s.jwks_file == Path("jwks.json") and s.jwks_url is None
    assert s.audiences == ["govern"]
    assert make(audience=["a", "b"]).audiences == ["a", "b"]


def test_every_listed_asymmetric_algorithm_is_accepted() -> None:
    assert make(algorithms=sorted(ASYMMETRIC_ALGORITHMS)).algorithms == sorted(ASYMMETRIC_ALGORITHMS)
    assert make(algorithms=["RS256", "RS256"]).algorithms == ["RS256"]


@pytest.mark.parametrize("algs", [
    ["HS256"], ["RS256", "HS384"], ["HS512"],  # HMAC: the public key would become the secret
    ["none"], ["None"], ["NONE"],              # no signature at all
    ["ES512"], ["EdDSA"], ["rs256"],           # not on govern's list
    [],                                        # nothing allowed is a mistake, not a lock
])
def test_refused_algorithms(algs: list[str]) -> None:
    with pytest.raises(ValidationError, match="algorithm"):
        make(algorithms=algs)


@pytest.mark.parametrize("overrides, message", [
    ({"jwks_file": None}, "exactly one of jwks_file or jwks_url"),
    ({"jwks_url": "https://idp.example.com/jwks"}, "exactly one of jwks_file or jwks_url"),
    ({"jwks_file": None, "jwks_url": "http://idp.example.com/jwks"}, "https"),
    ({"jwks_file": None, "jwks_url": "file:///etc/jwks.json"}, "https"),
    ({"jwks_file": None, "jwks_url": "ftp://idp.example.com/jwks"}, "https"),
    ({"jwks_file": None, "jwks_url": "https:///jwks"}, "https"),
    ({"issuer": ""}, "issuer"),
    ({"audience": ""}, "audience"),
    ({"audience": []}, "audience"),
    ({"leeway_seconds": -1}, "leeway_seconds"),
    ({"jwks_cache_seconds": 0}, "jwks_cache_seconds"),
    ({"http_timeout": 0}, "http_timeout"),
    ({"principal_claim": ""}, "principal_claim"),
    ({"attribute_claims": {"region": ""}}, "attribute_claims"),
    ({"principal_prefix": ""}, "principal_prefix"),        # subjects would meet local names
    ({"principal_prefix": "oidc"}, "principal_prefix"),    # 'oidcarol' could be any name
    ({"principal_prefix": "oidc/"}, "principal_prefix"),
    ({"principal_prefix": "a b:"}, "principal_prefix"),
    ({"unknown_setting": 1}, "unknown_setting"),
])
def test_refused_settings(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**overrides)


@pytest.mark.parametrize("url", [
    "https://idp.example.com/.well-known/jwks.json",
    "http://127.0.0.1:8080/jwks",   # plain http only on loopback (local IdP, tests)
    "http://localhost/jwks",
    "http://[::1]:9000/jwks",
])
def test_accepted_jwks_urls(url: str) -> None:
    assert make(jwks_file=None, jwks_url=url).jwks_url == url


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        make().issuer = "https://evil.example.com"  # type: ignore[misc]


def test_gateway_settings_accept_an_oidc_section(tmp_path: Path) -> None:
    from govern.config import Settings

    s = Settings(oidc={**BASE, "attribute_claims": {"regions": "regions"}})
    assert s.oidc is not None and s.oidc.attribute_claims == {"regions": "regions"}
    with pytest.raises(ValidationError):
        Settings(oidc={**BASE, "algorithms": ["HS256"]})
