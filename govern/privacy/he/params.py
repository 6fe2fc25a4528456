"""CKKS parameters, and the checks a context must pass before the gateway uses it.

One parameter set for every flow: poly modulus degree N = 8192 (4096 slots per ciphertext),
coefficient modulus [60, 40, 40, 60] bits (200 bits in all; the HomomorphicEncryption.org
standard allows at most 218 bits at N = 8192 for 128-bit classical security with a ternary
secret), scale 2^40. That leaves two rescalings: enough for every declared computation
(multiplicative depth at most 1) with headroom.

A context from a client (flow 3) is checked against the same table: N at least 8192, total
coefficient modulus within the standard's bound, parameters accepted by SEAL, and *no secret
key* — the gateway refuses to hold one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from govern.errors import InvalidRequest, Unsupported

# HomomorphicEncryption.org security standard (2018), table 1: largest log2(q) for 128-bit
# classical security, uniform ternary secret, error sigma 3.2.
MAX_COEFF_BITS_128: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class CkksParameters:
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def coeff_modulus_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": "CKKS", "poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes), "scale_bits": self.scale_bits,
                "slots": self.slots, "security_bits": 128}


PARAMETERS = CkksParameters()


def check_security(poly_modulus_degree: int, coeff_modulus_bits: int) -> None:
    """Raise InvalidRequest unless (N, log2 q) gives 128-bit security and N >= 8192."""
    bound = MAX_COEFF_BITS_128.get(poly_modulus_degree)
    if bound is None or poly_modulus_degree < 8192:
        raise InvalidRequest(f"poly modulus degree must be one of 8192, 16384, 32768 (got {poly_modulus_degree})")
    if coeff_modulus_bits > bound:
        raise InvalidRequest(f"a coefficient modulus of {coeff_modulus_bits} bits exceeds the HE standard's "
                             f"{bound}-bit bound for 128-bit security at N={poly_modulus_degree}")


check_security(PARAMETERS.poly_modulus_degree, PARAMETERS.coeff_modulus_bits)  # the defaults hold


def tenseal() -> Any:
    """The tenseal module, or Unsupported when the ``he`` extra is not installed."""
    try:
        import tenseal as ts
    except ImportError:  # pragma: no cover - the he extra is installed in CI
        raise Unsupported("encrypted views need TenSEAL: pip install 'govern[he]'") from None
    return ts


def new_secret_context(params: CkksParameters = PARAMETERS) -> Any:
    """A fresh CKKS context holding a secret key (gateway side, or the client in flow 3)."""
    ts = tenseal()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    ctx.global_scale = 2.0 ** params.scale_bits
    return ctx


def public_context_bytes(ctx: Any, *, galois: bool = False, relin: bool = True) -> bytes:
    """Serialize ``ctx`` *without* its secret key, and prove it by loading it back."""
    ts = tenseal()
    if galois and not ctx.has_galois_keys():
        ctx.generate_galois_keys()
    blob = ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=galois,
                         save_relin_keys=relin)
    if ts.context_from(blob).has_secret_key():  # pragma: no cover - defence in depth
        raise RuntimeError("a public context must not hold a secret key")
    return blob


def load_client_context(blob: bytes) -> Any:
    """Load a client's context (flow 3) and check it: public, 128-bit, CKKS, with a public key.

    A context that holds a secret key is refused (and dropped at once): the gateway must never
    be able to decrypt what a client-held key encrypts.
    """
    ts = tenseal()
    try:
        ctx = ts.context_from(blob)
    except Exception:
        raise InvalidRequest("the context could not be read as a serialized TenSEAL context") from None
    if ctx.has_secret_key() or not ctx.is_public():
        del ctx
        raise InvalidRequest("the context holds a secret key: send a public context "
                             "(ctx.serialize(save_secret_key=False)); keep the secret key yourself")
    if not ctx.has_public_key():
        raise InvalidRequest("the context has no public key")
    data = ctx.seal_context().data
    if not data.parameters_set():
        raise InvalidRequest("the context's encryption parameters are not valid")
    key = data.key_context_data()
    check_security(key.parms().poly_modulus_degree(), _data_modulus_bits(data))
    if data.first_context_data().chain_index() < 1:
        raise InvalidRequest("the context needs at least one rescaling level (three or more primes)")
    return ctx


def _data_modulus_bits(data: Any) -> int:
    # The security bound is on the whole modulus, special prime included.
    return int(data.key_context_data().total_coeff_modulus_bit_count())
