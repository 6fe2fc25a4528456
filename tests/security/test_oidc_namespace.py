"""Finding: identity namespaces. An OIDC subject named like a role or a local principal took its grants.

The Casbin subject of a JWT principal was the bare ``sub`` claim, so a token with
``sub: steward`` (a role), ``sub: clinician`` (a role) or ``sub: carol`` (a local principal,
member of ``steward``) inherited that role's or principal's grants, and a local principal's
attributes. Anyone who can choose their subject at some trusted identity provider (a self-service
account, a service account name) became a steward.

Attack: mint real JWTs with those subjects and no roles, and ask which purposes they may use
and for data; a roles claim naming a local principal (``roles: [carol]``) is the same attack
through the other claim. OIDC subjects must live in their own namespace (``oidc:<sub>``) and get
grants only from rules that name them there (``g, oidc:frank, steward``) or from roles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from govern.cli import main
from govern.errors import PurposeNotEntitled
from govern.identity.authenticate import Authenticator
from tests.gateway import make_client
from tests.identity.conftest import AUDIENCE, ISSUER, Keys, mint, oidc_settings, public_jwk

NAMES = ["steward", "clinician", "carol", "dave", "analyst"]


def authenticator(policy_provider, jwks_file: Path, **overrides) -> Authenticator:
    return Authenticator(policy_provider, oidc_settings(jwks_file=jwks_file, **overrides))


@pytest.mark.parametrize("sub", NAMES)
def test_a_subject_named_like_a_role_or_principal_gets_nothing(governor, keys: Keys, jwks_file: Path,
                                                               sub: str) -> None:
    auth = authenticator(lambda: governor.state.policy, jwks_file)
    who = auth.authenticate(f"Bearer {mint(keys.rsa, sub=sub)}")
    assert who.name != sub
    assert governor.state.decider.purposes(who) == []
    for purpose in ("governance", "treatment", "analytics"):
        with pytest.raises(PurposeNotEntitled):
            governor.plan(who, "patients", purpose)


def test_a_subject_does_not_take_a_local_principals_attributes(governor, keys: Keys, jwks_file: Path) -> None:
    auth = authenticator(lambda: governor.state.policy, jwks_file)
    who = auth.authenticate(f"Bearer {mint(keys.rsa, sub='bob', roles=['analyst'])}")
    assert "clearance" not in who.attributes  # bob's `restricted` stays bob's


@pytest.mark.parametrize("role", ["carol", "dave", "oidc:carol"])
def test_a_roles_claim_naming_a_principal_is_not_a_role(governor, keys: Keys, jwks_file: Path, role: str) -> None:
    auth = authenticator(lambda: governor.state.policy, jwks_file)
    who = auth.authenticate(f"Bearer {mint(keys.rsa, sub='mallory', roles=[role, 'analyst'])}")
    assert who.roles == ("analyst",)
    assert governor.state.decider.purposes(who) == ["analytics", "quality-improvement"]


def test_through_the_gateway(world, keys: Keys) -> None:
    (world.directory / "jwks.json").write_text(json.dumps({"keys": [public_jwk(keys.rsa, "rsa1", use="sig")]}))
    with (world.directory / "govern.yaml").open("a") as fh:
        fh.write(f"oidc:\n  issuer: '{ISSUER}'\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n"
                 "  attribute_claims: {clearance: clearance}\n")
    with make_client(world) as client:
        for sub, purpose in (("steward", "governance"), ("carol", "governance"), ("clinician", "treatment")):
            token = mint(keys.rsa, sub=sub, clearance="confidential")
            r = client.get("/v1/datasets/patients/rows", params={"format": "arrow", "limit": 1},
                           headers={"Authorization": f"Bearer {token}", "X-Purpose": purpose})
            assert r.status_code == 403, (sub, r.status_code)
            assert r.json()["type"] == "urn:govern:problem:purpose-not-entitled"
            assert r.json()["purposes"] == []


def test_a_steward_grants_a_role_to_an_oidc_subject(world, keys: Keys) -> None:
    """The way in: a `g` line naming the namespaced subject; `govern policy check` accepts it."""
    policies = world.directory / "policies"
    with (policies / "policy.csv").open("a") as fh:
        fh.write("g, oidc:frank, steward\n")
    check = CliRunner().invoke(main, ["policy", "check", str(policies)])
    assert check.exit_code == 0, check.output
    (world.directory / "jwks.json").write_text(json.dumps({"keys": [public_jwk(keys.rsa, "rsa1", use="sig")]}))
    with (world.directory / "govern.yaml").open("a") as fh:
        fh.write(f"oidc:\n  issuer: '{ISSUER}'\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n")
    with make_client(world) as client:
        frank = {"Authorization": f"Bearer {mint(keys.rsa, sub='frank')}", "X-Purpose": "governance"}
        r = client.get("/v1/datasets", headers=frank)
        assert r.status_code == 200, r.text
        assert {d["name"] for d in r.json()["datasets"]} == {"patients", "encounters"}
