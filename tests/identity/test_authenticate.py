"""Authenticator: Authorization header / PG login → Principal, against a stand-in policy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from govern.errors import AuthenticationFailed
from govern.identity.authenticate import Authenticator
from govern.identity.principal import Principal

from .conftest import (
    FakePolicy,
    Keys,
    fixed_key,
    hs256_with_public_pem,
    issue_key,
    mint,
    oidc_settings,
    principal_entry,
)

ALICE_KEY = fixed_key("a11ce001", "alice")
ALICE_OLD_KEY = fixed_key("a11ce000", "alice-old")
BOB_KEY = fixed_key("b0b00001", "bob")


def policy(version: str = "v1", **extra: Any) -> FakePolicy:
    principals = {
        "alice": principal_entry("alice", {"region": "EU", "clearance": "internal"}, ALICE_KEY, ALICE_OLD_KEY),
        "bob": principal_entry("bob", {"region": "US"}, BOB_KEY),
        "eve": principal_entry("eve", {}),
    }
    principals.update(extra)
    return FakePolicy(principals=principals, version=version)


class Provider:
    """The gateway's live policy: tests swap it to simulate a reload."""

    def __init__(self, current: FakePolicy) -> None:
        self.current = current

    def __call__(self) -> Any:
        return self.current


def refused(call: Any, detail: str, secret: str = "") -> None:
    with pytest.raises(AuthenticationFailed) as info:
        call()
    assert info.value.detail == detail
    assert info.value.status == 401
    if secret:
        text = str(info.value) + repr(info.value.extra)
        parts = [secret, *secret.split("."), secret.rsplit("_", 1)[-1]]
        assert not any(len(part) >= 8 and part in text for part in parts)


# -- API keys ----------------------------------------------------------------------------------


def test_api_key_resolves_to_its_principal() -> None:
    auth = Authenticator(Provider(policy()), None)
    got = auth.authenticate(f"Bearer {ALICE_KEY[1]}")
    assert got == Principal(name="alice", attributes={"region": "EU", "clearance": "internal"},
                            source="api-key")
    assert auth.authenticate(f"bearer   {ALICE_OLD_KEY[1]}  ").name == "alice"  # scheme is case-insensitive
    assert auth.authenticate(f"Bearer {BOB_KEY[1]}").name == "bob"


def test_principal_attributes_are_a_copy() -> None:
    p = policy()
    got = Authenticator(Provider(p), None).authenticate(f"Bearer {ALICE_KEY[1]}")
    got.attributes["region"] = "US"  # type: ignore[index]
    assert p.principals["alice"].attributes["region"] == "EU"


@pytest.mark.parametrize("header, detail", [
    # no credential at all
    (None, "missing bearer token"),
    ("", "missing bearer token"),
    ("   ", "missing bearer token"),
    ("Bearer", "missing bearer token"),
    ("Bearer    ", "missing bearer token"),
    # another scheme
    ("Basic YWxpY2U6c2VjcmV0", "unsupported authorization scheme; use 'Bearer <token>'"),
    ("Token gk_12345678_abc", "unsupported authorization scheme; use 'Bearer <token>'"),
    # not a single b64token
    ("Bearer gk_1234 5678_abc", "malformed bearer token"),
    ("Bearer gk_12345678_ab\u00e9", "malformed bearer token"),
    ("Bearer gk_12345678_ab\x00c", "malformed bearer token"),
    # looks like a key but is not a valid one
    ("Bearer gk_", "invalid API key"),
    ("Bearer gk_123_secret", "invalid API key"),
    ("Bearer gk_12345678_", "invalid API key"),
    ("Bearer gk_00000000_" + "x" * 43, "invalid API key"),                # unknown id
    (f"Bearer {ALICE_KEY[1][:12]}{'A' * 43}", "invalid API key"),         # right id, wrong secret
    (f"Bearer {ALICE_KEY[1]}x", "invalid API key"),
    # a JWT-looking token while OIDC is off
    ("Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "invalid token: not an API key and OIDC is not configured"),
])
def test_refused_headers(header: str | None, detail: str) -> None:
    auth = Authenticator(Provider(policy()), None)
    refused(lambda: auth.authenticate(header), detail)


def test_error_never_contains_the_key() -> None:
    auth = Authenticator(Provider(policy()), None)
    wrong = ALICE_KEY[1][:-1] + ("A" if ALICE_KEY[1][-1] != "A" else "B")
    refused(lambda: auth.authenticate(f"Bearer {wrong}"), "invalid API key", secret=wrong)
    refused(lambda: auth.authenticate_password("bob", ALICE_KEY[1]), "invalid user name or API key",
            secret=ALICE_KEY[1])


def test_revoked_on_reload_and_new_keys_work() -> None:
    provider = Provider(policy("v1"))
    auth = Authenticator(provider, None)
    assert auth.authenticate(f"Bearer {ALICE_OLD_KEY[1]}").name == "alice"
    new_key = issue_key()
    provider.current = FakePolicy(
        principals={"alice": principal_entry("alice", {"region": "EU"}, ALICE_KEY, new_key)},
        version="v2",
    )
    refused(lambda: auth.authenticate(f"Bearer {ALICE_OLD_KEY[1]}"), "invalid API key")
    refused(lambda: auth.authenticate(f"Bearer {BOB_KEY[1]}"), "invalid API key")  # bob removed
    assert auth.authenticate(f"Bearer {new_key[1]}").name == "alice"
    provider.current = policy("v1")  # rolled back: the index follows the version, whatever it is
    assert auth.authenticate(f"Bearer {ALICE_OLD_KEY[1]}").name == "alice"


def test_colliding_key_ids_are_told_apart_by_hash() -> None:
    """Key ids are 32 random bits; two principals may share one, the secret decides."""
    a, b = ("cafebabe", "gk_cafebabe_" + "a" * 43), ("cafebabe", "gk_cafebabe_" + "b" * 43)
    p = FakePolicy(principals={"ann": principal_entry("ann", {}, a), "ben": principal_entry("ben", {}, b)})
    auth = Authenticator(Provider(p), None)
    assert auth.authenticate(f"Bearer {a[1]}").name == "ann"
    assert auth.authenticate(f"Bearer {b[1]}").name == "ben"
    refused(lambda: auth.authenticate("Bearer gk_cafebabe_" + "c" * 43), "invalid API key")


# -- PostgreSQL wire: user + password (= API key) ----------------------------------------------


def test_password_login() -> None:
    auth = Authenticator(Provider(policy()), None)
    assert auth.authenticate_password("alice", ALICE_KEY[1]) == Principal(
        name="alice", attributes={"region": "EU", "clearance": "internal"}, source="api-key")
    assert auth.authenticate_password("bob", BOB_KEY[1]).name == "bob"


@pytest.mark.parametrize("user, password, detail", [
    ("alice", BOB_KEY[1], "invalid user name or API key"),    # a real key, of another user
    ("bob", ALICE_KEY[1], "invalid user name or API key"),
    ("eve", ALICE_KEY[1], "invalid user name or API key"),    # eve has no keys at all
    ("mallory", ALICE_KEY[1], "invalid user name or API key"),
    ("alice", "secret", "invalid user name or API key"),
    ("alice", ALICE_KEY[1] + "x", "invalid user name or API key"),
    ("ALICE", ALICE_KEY[1], "invalid user name or API key"),  # names are exact
    ("alice", "", "missing user name or password"),
    ("", ALICE_KEY[1], "missing user name or password"),
])
def test_password_login_refusals(user: str, password: str, detail: str) -> None:
    auth = Authenticator(Provider(policy()), None)
    refused(lambda: auth.authenticate_password(user, password), detail)


# -- OIDC --------------------------------------------------------------------------------------


def oidc_auth(jwks_file: Path, p: FakePolicy | None = None, **overrides: Any) -> Authenticator:
    return Authenticator(Provider(p or policy()), oidc_settings(jwks_file=jwks_file, **overrides))


MAPPED = {"regions": "regions", "clearance": "clearance"}


def test_jwt_claims_become_a_principal(keys: Keys, jwks_file: Path) -> None:
    auth = oidc_auth(jwks_file, attribute_claims=MAPPED)
    token = mint(keys.rsa, sub="u-7", roles=["analyst", "analyst", "steward", 3],
                 regions=["EU", "UK"], clearance="confidential", admin=True)
    got = auth.authenticate(f"Bearer {token}")
    assert got == Principal(
        name="oidc:u-7",                                                     # the issuer's namespace
        attributes={"regions": ["EU", "UK"], "clearance": "confidential"},  # "admin" is not mapped
        roles=("analyst", "steward"),                                        # deduplicated, strings only
        source="oidc",
    )


@pytest.mark.parametrize("roles_value, expected", [
    (["a", "b"], ("a", "b")),
    ("solo", ("solo",)),
    ({"a": 1}, ()),        # not a list: no roles (roles only ever add rights)
    (None, ()),
    ([1, None, ""], ()),
])
def test_roles_claim_shapes(keys: Keys, jwks_file: Path, roles_value: Any, expected: tuple[str, ...]) -> None:
    token = mint(keys.rsa, roles=roles_value)
    assert oidc_auth(jwks_file).authenticate(f"Bearer {token}").roles == expected


def test_roles_claim_disabled_and_nested(keys: Keys, jwks_file: Path) -> None:
    token = mint(keys.rsa, roles=["admin"], realm_access={"roles": ["analyst"]})
    assert oidc_auth(jwks_file, roles_claim=None).authenticate(f"Bearer {token}").roles == ()
    got = oidc_auth(jwks_file, roles_claim="realm_access.roles").authenticate(f"Bearer {token}")
    assert got.roles == ("analyst",)


def test_claim_names_with_dots_are_taken_literally_first(keys: Keys, jwks_file: Path) -> None:
    token = mint(keys.rsa, **{"https://govern.example/roles": ["steward"]})
    got = oidc_auth(jwks_file, roles_claim="https://govern.example/roles").authenticate(f"Bearer {token}")
    assert got.roles == ("steward",)


def test_principal_prefix_and_claim(keys: Keys, jwks_file: Path) -> None:
    token = mint(keys.rsa, sub="0a1b", email="dana@example.com")
    assert oidc_auth(jwks_file).authenticate(f"Bearer {token}").name == "oidc:0a1b"  # the default
    assert oidc_auth(jwks_file, principal_prefix="kc:").authenticate(f"Bearer {token}").name == "kc:0a1b"
    got = oidc_auth(jwks_file, principal_claim="email").authenticate(f"Bearer {token}")
    assert got.name == "oidc:dana@example.com"


def test_the_namespaced_entry_is_the_base_and_mapped_claims_override(keys: Keys, jwks_file: Path) -> None:
    # principals.yaml may give an OIDC subject base attributes under its namespaced name
    p = policy(**{"oidc:alice": principal_entry("oidc:alice", {"region": "EU", "clearance": "internal"})})
    auth = oidc_auth(jwks_file, p, attribute_claims={"region": "region", "team": "team"})
    token = mint(keys.rsa, sub="alice", region="US", clearance="secret")
    got = auth.authenticate(f"Bearer {token}")
    assert (got.name, got.source) == ("oidc:alice", "oidc")
    assert got.attributes == {"region": "US", "clearance": "internal"}  # clearance is not mapped
    # a mapped claim that is absent leaves the base value alone
    assert auth.authenticate(f"Bearer {mint(keys.rsa, sub='alice')}").attributes == {
        "region": "EU", "clearance": "internal"}
    # the local alice (an API-key principal) lends nothing to the subject "alice"
    plain = oidc_auth(jwks_file, attribute_claims={"region": "region"})
    assert plain.authenticate(f"Bearer {mint(keys.rsa, sub='alice')}").attributes == {}


def test_roles_naming_principals_are_dropped(keys: Keys, jwks_file: Path) -> None:
    token = mint(keys.rsa, roles=["alice", "oidc:bob", "kc:x", "analyst"])
    assert oidc_auth(jwks_file).authenticate(f"Bearer {token}").roles == ("analyst",)


def test_jwt_principal_refusals(keys: Keys, jwks_file: Path) -> None:
    auth = oidc_auth(jwks_file, principal_claim="email")
    cases = [
        (mint(keys.rsa), "invalid token: missing claim 'email'"),
        (mint(keys.rsa, email=""), "invalid token: missing claim 'email'"),
        (mint(keys.rsa, email=["a@x"]), "invalid token: missing claim 'email'"),
        (mint(keys.rsa, email="a\nb"), "invalid token: unusable principal name"),
        (mint(keys.rsa, email="x" * 300), "invalid token: unusable principal name"),
    ]
    for token, detail in cases:
        refused(lambda t=token: auth.authenticate(f"Bearer {t}"), detail, secret=token)


def test_bad_jwts_through_the_authenticator(keys: Keys, jwks_file: Path) -> None:
    auth = oidc_auth(jwks_file)
    now = int(time.time())
    cases = [
        (mint(keys.rsa, exp=now - 3600), "invalid token: expired"),
        (hs256_with_public_pem(keys.rsa.public_key()), "invalid token: algorithm not allowed"),
        (mint(keys.rsa_other), "invalid token: bad signature"),
        (mint(keys.rsa, kid="gone"), "invalid token: unknown key id"),
    ]
    for token, detail in cases:
        refused(lambda t=token: auth.authenticate(f"Bearer {t}"), detail, secret=token)


def test_api_keys_still_work_with_oidc_enabled(keys: Keys, jwks_file: Path) -> None:
    auth = oidc_auth(jwks_file)
    assert auth.authenticate(f"Bearer {ALICE_KEY[1]}").source == "api-key"
    # a JWT is not a PG password: the wire protocol takes API keys only
    refused(lambda: auth.authenticate_password("user-1", mint(keys.rsa)), "invalid user name or API key")
