"""Finding: read up through identity claims.

A principal's ``clearance`` that is not exactly a declared level (``""``, ``"zzz"``,
``"Restricted"``, ``"restricted\\u200b"``) ranked *above* ``restricted``: the compiler used one
ranking for columns and principals, and an unknown level ranked highest in it. An identity
provider user whose token carried ``clearance: zzz`` therefore saw the restricted ``ssn`` column.

Attack: mint real JWTs (signed, verified against a JWKS file) whose ``clearance`` claim is each of
those strings, hold the data-scientist role (which sees ``ssn`` as its last four digits when
cleared for ``restricted``), and ask for the plan of ``patients``; then the same through the HTTP
gateway, and through an API-key principal whose ``principals.yaml`` entry carries such a value.
Unknown levels of a principal must rank lowest (below ``public``); unknown levels of a column
keep ranking highest.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pytest

from govern.errors import AccessDenied
from govern.identity.authenticate import Authenticator
from govern.policy.load import read_policy
from tests.conftest import edit
from tests.gateway import make_client
from tests.identity.conftest import AUDIENCE, ISSUER, Keys, mint, oidc_settings, public_jwk

UNKNOWN = ["", "zzz", "Restricted", "restricted\u200b", " restricted", "RESTRICTED", "secret"]


def authenticator(governor, jwks_file: Path) -> Authenticator:
    settings = oidc_settings(jwks_file=jwks_file, attribute_claims={"clearance": "clearance"})
    return Authenticator(lambda: governor.state.policy, settings)


@pytest.mark.parametrize("clearance", UNKNOWN, ids=repr)
def test_an_undeclared_clearance_claim_ranks_below_public(governor, keys: Keys, jwks_file: Path,
                                                          clearance: str) -> None:
    token = mint(keys.rsa, sub="mallory", roles=["data-scientist"], clearance=clearance)
    mallory = authenticator(governor, jwks_file).authenticate(f"Bearer {token}")
    assert mallory.attributes["clearance"] == clearance  # the claim arrived as sent
    # Every column of patients is `internal` or above: below public, nothing is visible at all.
    with pytest.raises(AccessDenied, match="no column of dataset 'patients' is visible"):
        governor.plan(mallory, "patients", "model-training")


def test_the_declared_level_still_reads_what_it_is_cleared_for(governor, keys: Keys, jwks_file: Path) -> None:
    """The control: the exact level `restricted` shows ssn (masked to its last four digits)."""
    token = mint(keys.rsa, sub="mallory", roles=["data-scientist"], clearance="restricted")
    cleared = authenticator(governor, jwks_file).authenticate(f"Bearer {token}")
    plan = governor.plan(cleared, "patients", "model-training")
    assert plan.column("ssn").action == "mask"


def test_through_the_gateway_no_column_leaves(world, keys: Keys) -> None:
    (world.directory / "jwks.json").write_text(json.dumps({"keys": [public_jwk(keys.rsa, "rsa1", use="sig")]}))
    with (world.directory / "govern.yaml").open("a") as fh:
        fh.write(f"oidc:\n  issuer: '{ISSUER}'\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n"
                 "  attribute_claims: {clearance: clearance}\n")
    with make_client(world) as client:
        for clearance in ("zzz", "Restricted", "restricted\u200b"):
            token = mint(keys.rsa, sub="mallory", roles=["data-scientist"], clearance=clearance)
            r = client.get("/v1/datasets/patients/rows", params={"format": "arrow", "columns": "ssn"},
                           headers={"Authorization": f"Bearer {token}", "X-Purpose": "research"})
            assert r.status_code == 403, (clearance, r.status_code, r.text[:200])
            assert r.headers["content-type"] == "application/problem+json"
        token = mint(keys.rsa, sub="mallory", roles=["data-scientist"], clearance="restricted")
        r = client.get("/v1/datasets/patients/rows", params={"format": "arrow", "columns": "ssn", "limit": 3},
                       headers={"Authorization": f"Bearer {token}", "X-Purpose": "research"})
        assert r.status_code == 200, r.text
        assert all(v.startswith("*****") for v in pa.ipc.open_stream(r.content).read_all()["ssn"].to_pylist())


@pytest.mark.parametrize("clearance", ["zzz", "Restricted", "restricted\u200b", ""], ids=repr)
def test_principals_yaml_refuses_an_undeclared_clearance(policy_dir: Path, clearance: str) -> None:
    edit(policy_dir / "principals.yaml", "attributes: {clearance: restricted}",
         "attributes: {clearance: " + json.dumps(clearance) + "}")
    policy, problems = read_policy(policy_dir)
    assert policy is None
    assert any(p.file == "principals.yaml" and "unknown clearance" in p.message for p in problems), problems


@pytest.mark.parametrize("clearance", ["zzz", "Restricted", "restricted\u200b", "", ["restricted"], 3])
def test_an_api_key_principal_with_an_undeclared_clearance_reads_nothing(world, clearance) -> None:
    """Defence in depth: should an undeclared value ever reach a local principal (a loader gap,
    an edited policy object), its API key still reads nothing above public."""
    with make_client(world) as client:
        policy = client.app.state.gateway.governor.state.policy
        bob = policy.principals["bob"]
        policy.principals["bob"] = dataclasses.replace(bob, attributes={**bob.attributes, "clearance": clearance})
        r = client.get("/v1/datasets/patients/rows", params={"format": "arrow", "columns": "ssn"},
                       headers={**world.auth("bob"), "X-Purpose": "research"})
        assert r.status_code == 403, (clearance, r.status_code, r.text[:200])

