"""Identity test kit: local RSA/EC keys, a JWKS file, token minting, a stand-in policy.

Keys are generated once per session (RSA generation is the slow part). Tokens are signed with
PyJWT, except the forged ones, which are assembled by hand because PyJWT refuses to build them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from govern.identity import apikeys
from govern.identity.oidc_settings import OidcSettings
from govern.policy.model import ApiKeyEntry, PrincipalEntry

ISSUER = "https://idp.example.com/realms/govern"
AUDIENCE = "govern-gateway"


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa_other: rsa.RSAPrivateKey  # never published: an attacker's key
    rsa_weak: rsa.RSAPrivateKey  # 1024 bits
    ec256: ec.EllipticCurvePrivateKey
    ec384: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_weak=rsa.generate_private_key(public_exponent=65537, key_size=1024),
        ec256=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
    )


def public_jwk(private_key: Any, kid: str, **members: Any) -> dict[str, Any]:
    """The public JWK of ``private_key`` with ``kid`` and any extra members (alg, use, …)."""
    pub = private_key.public_key()
    algo = RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else ECAlgorithm
    jwk = algo.to_jwk(pub, as_dict=True)
    jwk.update(kid=kid, **members)
    return jwk


def standard_jwks(keys: Keys) -> dict[str, Any]:
    """The provider's published set: one RSA, one P-256 and one P-384 key, no ``alg`` members."""
    return {"keys": [
        public_jwk(keys.rsa, "rsa1", use="sig"),
        public_jwk(keys.ec256, "ec1"),
        public_jwk(keys.ec384, "ec384"),
    ]}


def write_jwks(path: Path, jwks: dict[str, Any]) -> Path:
    path.write_text(json.dumps(jwks))
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1",
        "iat": now, "nbf": now, "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()
DROP: Any = _DROP  # claims(exp=DROP) leaves the claim out


def mint(private_key: Any, *, alg: str = "RS256", kid: str | None = "rsa1",
         headers: dict[str, Any] | None = None, **claim_overrides: Any) -> str:
    hdrs = dict(headers or {})
    if kid is not None:
        hdrs["kid"] = kid
    return jwt.encode(claims(**claim_overrides), private_key, algorithm=alg, headers=hdrs)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (PyJWT will not produce forged tokens)."""
    h = b64url(json.dumps(header).encode())
    p = b64url(json.dumps(payload).encode())
    return f"{h}.{p}.{b64url(signature)}"


def hs256_with_public_pem(public_key: Any, kid: str = "rsa1") -> str:
    """The HS/RS confusion forgery: HMAC-SHA256 keyed with the provider's public key PEM."""
    pem = public_key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    p = b64url(json.dumps(claims(sub="admin")).encode())
    sig = hmac.new(pem, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(sig)}"


def oidc_settings(**overrides: Any) -> OidcSettings:
    values: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
    values.update(overrides)
    return OidcSettings(**values)


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    return write_jwks(tmp_path / "jwks.json", standard_jwks(keys))


# -- a stand-in for PolicySet: only .principals and .version are read -------------------------


@dataclass
class FakePolicy:
    principals: dict[str, PrincipalEntry] = field(default_factory=dict)
    version: str = "v1"


def principal_entry(name: str, attributes: dict[str, Any], *keys_: tuple[str, str]) -> PrincipalEntry:
    """A principals.yaml entry; each of ``keys_`` is (key id, full key)."""
    return PrincipalEntry(
        name=name, attributes=attributes, line=1,
        api_keys=tuple(ApiKeyEntry(id=i, hash=apikeys.hash_key(k), line=1) for i, k in keys_),
    )


def issue_key() -> tuple[str, str]:
    """A fresh random key: (key id, full key)."""
    key_id, key, _ = apikeys.new_key()
    return key_id, key


def fixed_key(key_id: str, seed: str) -> tuple[str, str]:
    """A deterministic key (stable test ids under pytest-xdist): (key id, full key)."""
    secret = b64url(hashlib.sha256(seed.encode()).digest())
    return key_id, f"{apikeys.PREFIX}{key_id}_{secret}"
