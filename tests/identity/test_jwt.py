"""JwtVerifier against a JWKS file: what is accepted, and every way a token is refused.

Each refusal asserts the exact ``detail`` and that the token never appears in the error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from govern.errors import AuthenticationFailed
from govern.identity.jwt import JwtVerifier

from .conftest import (
    AUDIENCE,
    DROP,
    ISSUER,
    Keys,
    b64url,
    claims,
    handmade,
    hs256_with_public_pem,
    mint,
    oidc_settings,
    public_jwk,
    standard_jwks,
    write_jwks,
)


def verifier(jwks_file: Path, **overrides: Any) -> JwtVerifier:
    return JwtVerifier(oidc_settings(jwks_file=jwks_file, **overrides))


def refused(v: JwtVerifier, token: str, detail: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        v.verify(token)
    err = info.value
    assert err.detail == detail
    assert err.status == 401
    # Neither the token nor any of its parts leak into the error.
    for text in (str(err), err.detail, repr(err.extra)):
        for part in [token, *token.split(".")]:
            assert len(part) < 4 or part not in text
    return err


# -- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg, key_name, kid", [
    ("RS256", "rsa", "rsa1"),
    ("RS384", "rsa", "rsa1"),   # the JWK has no "alg": the key is bound to the token's alg,
    ("RS512", "rsa", "rsa1"),   # not to PyJWK's RS256 default
    ("PS256", "rsa", "rsa1"),
    ("ES256", "ec256", "ec1"),
    ("ES384", "ec384", "ec384"),
])
def test_valid_tokens(keys: Keys, jwks_file: Path, alg: str, key_name: str, kid: str) -> None:
    v = verifier(jwks_file, algorithms=[alg])
    got = v.verify(mint(getattr(keys, key_name), alg=alg, kid=kid, sub="u-42"))
    assert (got["sub"], got["iss"], got["aud"]) == ("u-42", ISSUER, AUDIENCE)


def test_audience_lists_on_either_side(keys: Keys, jwks_file: Path) -> None:
    v = verifier(jwks_file, audience=["other-app", AUDIENCE])
    assert v.verify(mint(keys.rsa))["aud"] == AUDIENCE
    v = verifier(jwks_file)
    assert v.verify(mint(keys.rsa, aud=["account", AUDIENCE]))["aud"] == ["account", AUDIENCE]


def test_leeway_tolerates_small_clock_skew(keys: Keys, jwks_file: Path) -> None:
    now = int(time.time())
    v = verifier(jwks_file, leeway_seconds=30)
    v.verify(mint(keys.rsa, exp=now - 10))
    v.verify(mint(keys.rsa, nbf=now + 10, iat=now + 10))


def test_duplicate_kid_picks_the_key_for_the_tokens_alg(keys: Keys, tmp_path: Path) -> None:
    """PyJWT issue #1129: a kid shared by keys of different algorithms must match on alg too."""
    jwks = {"keys": [public_jwk(keys.rsa_other, "k", alg="RS384"), public_jwk(keys.rsa, "k", alg="RS256")]}
    v = verifier(write_jwks(tmp_path / "j.json", jwks), algorithms=["RS256", "RS384"])
    assert v.verify(mint(keys.rsa, kid="k"))["sub"] == "user-1"


def test_jwks_file_rotation_is_picked_up_without_restart(keys: Keys, tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "j.json", {"keys": [public_jwk(keys.rsa, "old")]})
    v = verifier(path)
    v.verify(mint(keys.rsa, kid="old"))
    write_jwks(path, {"keys": [public_jwk(keys.ec256, "new")]})
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    v.verify(mint(keys.ec256, alg="ES256", kid="new"))
    refused(v, mint(keys.rsa, kid="old"), "invalid token: unknown key id")


# -- refused: algorithm ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_alg_none_is_refused(jwks_file: Path, alg: str) -> None:
    token = handmade({"alg": alg, "typ": "JWT", "kid": "rsa1"}, claims(sub="admin"))
    refused(verifier(jwks_file), token, "invalid token: algorithm not allowed")


def test_missing_alg_is_refused(jwks_file: Path) -> None:
    token = handmade({"typ": "JWT", "kid": "rsa1"}, claims(), b"sig")
    refused(verifier(jwks_file), token, "invalid token: algorithm not allowed")


def test_hs256_signed_with_the_rsa_public_key_is_refused(keys: Keys, jwks_file: Path) -> None:
    """The HS/RS confusion: the forger knows the public key and uses its PEM as HMAC secret."""
    token = hs256_with_public_pem(keys.rsa.public_key())
    refused(verifier(jwks_file), token, "invalid token: algorithm not allowed")
    refused(verifier(jwks_file, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]),
            token, "invalid token: algorithm not allowed")


def test_hs256_with_a_published_symmetric_key_is_refused(tmp_path: Path) -> None:
    """A JWKS that (wrongly) publishes an ``oct`` key still cannot be used as an HMAC secret."""
    secret = b"published-by-mistake"
    jwks = {"keys": [{"kty": "oct", "kid": "sym", "k": b64url(secret)}]}
    path = write_jwks(tmp_path / "j.json", jwks)
    header, payload = b64url(b'{"alg":"HS256","kid":"sym"}'), b64url(json.dumps(claims()).encode())
    sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    refused(verifier(path), f"{header}.{payload}.{b64url(sig)}", "invalid token: algorithm not allowed")


def test_algorithm_outside_the_configured_list(keys: Keys, jwks_file: Path) -> None:
    refused(verifier(jwks_file, algorithms=["ES256"]), mint(keys.rsa),
            "invalid token: algorithm not allowed")
    refused(verifier(jwks_file), mint(keys.rsa, alg="RS512"), "invalid token: algorithm not allowed")


# -- refused: key selection --------------------------------------------------------------------


def test_unknown_and_missing_kid(keys: Keys, jwks_file: Path) -> None:
    v = verifier(jwks_file)
    refused(v, mint(keys.rsa, kid="nope"), "invalid token: unknown key id")
    refused(v, mint(keys.rsa, kid=None), "invalid token: missing key id")
    refused(v, handmade({"alg": "RS256", "kid": ""}, claims(), b"x"), "invalid token: missing key id")
    refused(v, handmade({"alg": "RS256", "kid": 7}, claims(), b"x"), "invalid token: malformed")


def test_signed_by_an_unpublished_key_under_a_published_kid(keys: Keys, jwks_file: Path) -> None:
    refused(verifier(jwks_file), mint(keys.rsa_other, kid="rsa1"), "invalid token: bad signature")


@pytest.mark.parametrize("header_key", ["jwk", "jku", "x5u"])
def test_keys_named_by_the_token_itself_are_ignored(keys: Keys, jwks_file: Path, header_key: str) -> None:
    """Only ``kid`` selects a key, and only among configured keys (no embedded or remote keys)."""
    pointer: Any = public_jwk(keys.rsa_other, "rsa1") if header_key == "jwk" else "https://evil.example/k"
    token = mint(keys.rsa_other, kid="rsa1", headers={header_key: pointer})
    refused(verifier(jwks_file), token, "invalid token: bad signature")


@pytest.mark.parametrize("jwk_members, alg, kid_key, detail", [
    # kty must match the algorithm family
    ({}, "ES256", "rsa", "invalid token: key type does not match algorithm"),
    ({}, "RS256", "ec256", "invalid token: key type does not match algorithm"),
    # EC curve must match the algorithm
    ({}, "ES256", "ec384", "invalid token: curve does not match algorithm"),
    # a JWK's own alg wins over anything the token claims
    ({"alg": "RS384"}, "RS256", "rsa", "invalid token: key algorithm does not match"),
    ({"alg": "RS256"}, "PS256", "rsa", "invalid token: key algorithm does not match"),
    # encryption keys and keys without verify permission are not signature keys
    ({"use": "enc"}, "RS256", "rsa", "invalid token: key is not a signature key"),
    ({"key_ops": ["encrypt"]}, "RS256", "rsa", "invalid token: key is not a verification key"),
])
def test_jwks_key_must_fit_the_tokens_alg(keys: Keys, tmp_path: Path, jwk_members: dict[str, Any],
                                          alg: str, kid_key: str, detail: str) -> None:
    jwks = {"keys": [public_jwk(getattr(keys, kid_key), "k", **jwk_members)]}
    v = verifier(write_jwks(tmp_path / "j.json", jwks), algorithms=["RS256", "PS256", "ES256"])
    signer = keys.ec256 if alg.startswith("ES") else keys.rsa
    refused(v, mint(signer, alg=alg, kid="k"), detail)


def test_jwks_entry_with_private_material_is_never_used(keys: Keys, tmp_path: Path) -> None:
    from jwt.algorithms import RSAAlgorithm

    private_jwk = RSAAlgorithm.to_jwk(keys.rsa, as_dict=True) | {"kid": "k"}
    v = verifier(write_jwks(tmp_path / "j.json", {"keys": [private_jwk]}))
    refused(v, mint(keys.rsa, kid="k"), "invalid token: unusable signing key")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # from signing
def test_rsa_key_under_2048_bits_is_refused(keys: Keys, tmp_path: Path) -> None:
    v = verifier(write_jwks(tmp_path / "j.json", {"keys": [public_jwk(keys.rsa_weak, "weak")]}))
    refused(v, mint(keys.rsa_weak, kid="weak"), "invalid token: unusable signing key")


def test_missing_or_broken_jwks_file(keys: Keys, tmp_path: Path) -> None:
    refused(verifier(tmp_path / "absent.json"), mint(keys.rsa), "invalid token: signing keys unavailable")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    refused(verifier(broken), mint(keys.rsa), "invalid token: signing keys unavailable")


# -- refused: claims ---------------------------------------------------------------------------


def test_issuer_audience_and_time_claims(keys: Keys, jwks_file: Path) -> None:
    now = int(time.time())
    v = verifier(jwks_file, leeway_seconds=30)
    cases = [
        # issuer: exact match only (PyJWT 2.10.0 accepted substrings, CVE-2024-53861)
        (mint(keys.rsa, iss="https://evil.example.com"), "invalid token: wrong issuer"),
        (mint(keys.rsa, iss="https://idp.example.com"), "invalid token: wrong issuer"),
        (mint(keys.rsa, iss=ISSUER + "/"), "invalid token: wrong issuer"),
        (mint(keys.rsa, iss="h"), "invalid token: wrong issuer"),
        # audience
        (mint(keys.rsa, aud="another-service"), "invalid token: wrong audience"),
        (mint(keys.rsa, aud=["a", "b"]), "invalid token: wrong audience"),
        # expired beyond the leeway, not yet valid beyond the leeway
        (mint(keys.rsa, exp=now - 31), "invalid token: expired"),
        (mint(keys.rsa, nbf=now + 120), "invalid token: not yet valid"),
        (mint(keys.rsa, iat=now + 120), "invalid token: not yet valid"),
        # time claims must be JSON numbers (PyJWT would int() a string)
        (mint(keys.rsa, exp=str(now + 300)), "invalid token: malformed claims"),
        (mint(keys.rsa, exp="soon"), "invalid token: malformed"),
        (mint(keys.rsa, iat="yesterday"), "invalid token: malformed claims"),
    ]
    for token, detail in cases:
        refused(v, token, detail)


@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub"])
def test_required_claims(keys: Keys, jwks_file: Path, claim: str) -> None:
    refused(verifier(jwks_file), mint(keys.rsa, **{claim: DROP}), f"invalid token: missing claim '{claim}'")


def test_sub_and_jti_must_be_strings(keys: Keys, jwks_file: Path) -> None:
    refused(verifier(jwks_file), mint(keys.rsa, sub=42), "invalid token: malformed claims")
    refused(verifier(jwks_file), mint(keys.rsa, jti=7), "invalid token: malformed claims")


# -- refused: shape ----------------------------------------------------------------------------


def _tamper(token: str) -> str:
    h, _, s = token.split(".")
    return ".".join([h, b64url(json.dumps(claims(sub="admin")).encode()), s])


@pytest.mark.parametrize("make_token, detail", [
    (lambda k: "", "invalid token: malformed"),
    (lambda k: "not-a-jwt", "invalid token: malformed"),
    (lambda k: "a.b", "invalid token: malformed"),
    (lambda k: "a.b.c", "invalid token: malformed"),
    (lambda k: "x" * 20_000, "invalid token: too large"),
    (lambda k: b64url(b"[1,2]") + "." + b64url(b"{}") + ".", "invalid token: malformed"),
    (lambda k: handmade({"alg": "RS256", "kid": "rsa1"}, claims())[:-1] + "!!!", "invalid token: malformed"),
    (lambda k: b64url(b'{"alg":"RS256","kid":"rsa1"}') + "." + b64url(b"[]") + "." + b64url(b"s"),
     "invalid token: bad signature"),  # the signature is checked before the payload is trusted
    (lambda k: _tamper(mint(k.rsa)), "invalid token: bad signature"),
    (lambda k: mint(k.rsa)[:-4] + "AAAA", "invalid token: bad signature"),
    # unknown critical extensions, detached (b64=false) payloads
    (lambda k: mint(k.rsa, headers={"crit": ["exp-ext"], "exp-ext": 1}), "invalid token: malformed"),
    (lambda k: mint(k.rsa, headers={"b64": False}).split(".")[0] + ".." + mint(k.rsa).split(".")[2],
     "invalid token: malformed"),
])
def test_malformed_tokens(keys: Keys, jwks_file: Path, make_token: Any, detail: str) -> None:
    refused(verifier(jwks_file), make_token(keys), detail)


def test_the_fixture_jwks_is_what_the_tests_assume(keys: Keys) -> None:
    kids = [k["kid"] for k in standard_jwks(keys)["keys"]]
    assert kids == ["rsa1", "ec1", "ec384"] and all("alg" not in k for k in standard_jwks(keys)["keys"])


def test_issuer_is_rechecked_even_if_pyjwt_matched_loosely(
        keys: Keys, jwks_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate PyJWT 2.10.0 (CVE-2024-53861: ``"iss" in issuer`` substring match)."""
    import govern.identity.jwt as module

    real_decode = module.jwt.decode

    def loose_decode(token: str, **kwargs: Any) -> dict[str, Any]:
        kwargs["issuer"] = None  # the library no longer guards the issuer
        kwargs["options"] = {**kwargs["options"], "verify_iss": False}
        return real_decode(token, **kwargs)

    monkeypatch.setattr(module.jwt, "decode", loose_decode)
    v = verifier(jwks_file)
    v.verify(mint(keys.rsa))
    refused(v, mint(keys.rsa, iss="https://idp.example.com"), "invalid token: wrong issuer")
