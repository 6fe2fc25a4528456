"""JWT bearer tokens through the gateway: claims become principal, roles and attributes."""

from __future__ import annotations

import json
import time

import jwt
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.gateway import make_client
from tests.identity.conftest import public_jwk

ISSUER = "https://idp.example.test/"
AUDIENCE = "govern"


def token(key, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "frank", "iat": now, "nbf": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k-1"})


def test_jwt_principal_with_mapped_roles_and_attributes(world) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (world.directory / "jwks.json").write_text(json.dumps({"keys": [public_jwk(key, "k-1", use="sig")]}))
    with (world.directory / "govern.yaml").open("a") as fh:
        fh.write(f"oidc:\n  issuer: '{ISSUER}'\n  audience: {AUDIENCE}\n  jwks_file: jwks.json\n"
                 "  roles_claim: groups\n  attribute_claims: {regions: regions, clearance: clearance}\n")
    with make_client(world) as client:
        good = token(key, groups=["analyst"], regions=["US"], clearance="internal")
        r = client.get("/v1/datasets/patients/rows", params={"format": "arrow"},
                       headers={"Authorization": f"Bearer {good}", "X-Purpose": "analytics"})
        assert r.status_code == 200, r.text
        table = pa.ipc.open_stream(r.content).read_all()
        assert set(table.column("region").to_pylist()) == {"US"}  # the row filter bound the claim
        assert "email" not in table.column_names  # confidential column above the 'internal' claim
        expired = token(key, groups=["analyst"], exp=int(time.time()) - 3600)
        r = client.get("/v1/datasets", headers={"Authorization": f"Bearer {expired}", "X-Purpose": "analytics"})
        assert r.status_code == 401 and r.json()["detail"] == "invalid token: expired"
        assert expired not in r.text
        no_roles = token(key)
        r = client.get("/v1/datasets", headers={"Authorization": f"Bearer {no_roles}", "X-Purpose": "analytics"})
        assert r.status_code == 403 and r.json()["purposes"] == []
