"""The pure cores: parameters, declared computations, plaintext preparation, tokens, limits."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from govern.errors import AccessDenied, InvalidRequest, RateLimited, ReleaseRefused, UnknownColumn
from govern.privacy.he.computation import Computation, ViewShape
from govern.privacy.he.params import (
    MAX_COEFF_BITS_128,
    PARAMETERS,
    check_security,
    load_client_context,
    new_secret_context,
    public_context_bytes,
)
from govern.privacy.he.prepare import ViewSpec, prepare
from govern.privacy.he.ratelimit import RateLimiter
from govern.privacy.he.token import ViewToken, sign, verify

SHAPE = ViewShape(("x", "y"), {"x": (0.0, 10.0), "y": (-2.0, 1.0)}, ("EU", "US"), rows=1000)


# -- parameters: 128-bit security per the HE standard --------------------------------------------
def test_default_parameters_are_within_the_standard() -> None:
    assert PARAMETERS.poly_modulus_degree >= 8192
    assert PARAMETERS.coeff_modulus_bits <= MAX_COEFF_BITS_128[PARAMETERS.poly_modulus_degree]
    assert PARAMETERS.slots == 4096


@pytest.mark.parametrize(("n", "bits"), [(4096, 109), (8192, 219), (16384, 439), (2048, 54)])
def test_parameters_outside_the_standard_are_refused(n: int, bits: int) -> None:
    with pytest.raises(InvalidRequest):
        check_security(n, bits)


def test_public_context_holds_no_secret_key_and_client_contexts_are_checked(secret_ctx) -> None:
    import tenseal as ts

    blob = public_context_bytes(secret_ctx)
    assert not ts.context_from(blob).has_secret_key()
    assert load_client_context(blob).is_public()
    with pytest.raises(InvalidRequest, match="secret key"):
        load_client_context(secret_ctx.serialize(save_secret_key=True))
    small = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20, 40])
    small.global_scale = 2 ** 20
    with pytest.raises(InvalidRequest, match="8192"):
        load_client_context(small.serialize())
    with pytest.raises(InvalidRequest):
        load_client_context(b"not a context")


# -- declared computations ------------------------------------------------------------------------
@pytest.mark.parametrize("declared", [
    {"op": "values", "column": "x"},          # a full column is not an aggregate
    {"op": "row", "column": "x"},             # nor is a single row
    {"op": "decrypt"},
])
def test_non_aggregates_cannot_be_declared(declared) -> None:
    with pytest.raises(ReleaseRefused):
        Computation.parse(declared)


@pytest.mark.parametrize(("declared", "message"), [
    ({"op": "dot", "columns": ["x"]}, "2 column"),
    ({"op": "sum", "column": "x", "weights": [1.0]}, "no weights"),
    ({"op": "linear", "columns": ["x", "y"], "weights": [1.0]}, "one weight per column"),
    ({"op": "linear", "columns": ["x"], "weights": [1e9]}, "at most"),
    ({"op": "dot", "columns": ["x", "y"], "by_group": True}, "cannot be grouped"),
    ({"op": "sum", "column": "x", "rows": [3]}, "unknown field"),
])
def test_malformed_declarations_are_refused(declared, message) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Computation.parse(declared)


def test_declarations_are_checked_against_the_view() -> None:
    with pytest.raises(UnknownColumn):
        Computation.parse({"op": "sum", "column": "z"}).check(SHAPE, max_slots=4)
    with pytest.raises(InvalidRequest, match="differ"):
        Computation.parse({"op": "sum", "column": "x", "bounds": {"x": [0, 99]}}).check(SHAPE, max_slots=4)
    Computation.parse({"op": "sum", "column": "x", "bounds": {"x": [0, 10]}}).check(SHAPE, max_slots=4)
    grouped = Computation.parse({"op": "mean", "column": "x", "by_group": True})
    grouped.check(SHAPE, max_slots=2)
    with pytest.raises(ReleaseRefused, match="at most 1"):  # more slots than allowed
        grouped.check(SHAPE, max_slots=1)


def test_sensitivities_follow_the_bounds() -> None:
    # one privacy unit, at most k rows, each clipped: add/remove neighbours
    assert Computation.parse({"op": "sum", "column": "x"}).sensitivity("sum", SHAPE, 1) == 10
    assert Computation.parse({"op": "sum", "column": "y"}).sensitivity("sum", SHAPE, 3) == 6
    assert Computation.parse({"op": "count"}).sensitivity("count", SHAPE, 2) == 2
    assert Computation.parse({"op": "dot", "columns": ["x", "y"]}).sensitivity("dot", SHAPE, 1) == 20
    lin = Computation.parse({"op": "linear", "columns": ["x", "y"], "weights": [0.5, -3], "intercept": 1})
    assert lin.sensitivity("linear", SHAPE, 1) == 0.5 * 10 + 3 * 2 + 1
    assert Computation.parse({"op": "mean", "column": "x"}).parts() == {"sum": 0.5, "count": 0.5}


# -- plaintext preparation ------------------------------------------------------------------------
def _table() -> pa.Table:
    return pa.table({
        "x": pa.array([1.0, 50.0, None, -3.0, 4.0, 6.0], pa.float64()),
        "n": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "region": ["EU", "US", "EU", "EU", "US", "EU"],
        "unit": ["a", "b", "c", "a", "a", "d"],
        "name": ["p", "q", "r", "s", "t", "u"],
    })


def test_prepare_clips_unselects_and_never_drops_rows() -> None:
    spec = ViewSpec("t", ("x", "n"), {"x": (0.0, 10.0), "n": (0.0, 4.0)}, filter="region = 'EU'",
                    group_by="region", groups=("EU", "US"))
    plain = prepare(_table(), spec, None, 1)
    assert plain.rows == 6  # the filter unselects, it does not drop
    # row 2 (null x) and the US rows are unselected; clipping: 50 -> 10, -3 -> 0, n 5,6 -> 4
    assert plain.selected.tolist() == [1, 0, 0, 1, 0, 1]
    assert plain.values["x"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 6.0]
    assert plain.values["n"].tolist() == [1.0, 0.0, 0.0, 4.0, 0.0, 4.0]
    assert plain.groups["EU"].tolist() == [1, 0, 0, 1, 0, 1] and plain.count("US") == 0


def test_each_privacy_unit_counts_at_most_k_rows() -> None:
    spec = ViewSpec("t", ("n",), {"n": (0.0, 10.0)})
    assert prepare(_table(), spec, "unit", 1).selected.tolist() == [1, 1, 1, 0, 0, 1]
    assert prepare(_table(), spec, "unit", 2).selected.tolist() == [1, 1, 1, 1, 0, 1]


def test_only_numeric_columns_can_be_encrypted() -> None:
    with pytest.raises(InvalidRequest, match="only numeric"):
        prepare(_table(), ViewSpec("t", ("name",), {"name": (0.0, 1.0)}), None, 1)


def test_the_digest_is_keyed_and_follows_the_data() -> None:
    spec = ViewSpec("t", ("x",), {"x": (0.0, 10.0)})
    a = prepare(_table(), spec, None, 1)
    changed = _table().set_column(0, "x", pa.array([2.0, 50.0, None, -3.0, 4.0, 6.0]))
    assert a.digest(b"k" * 32, spec) == prepare(_table(), spec, None, 1).digest(b"k" * 32, spec)
    assert a.digest(b"k" * 32, spec) != prepare(changed, spec, None, 1).digest(b"k" * 32, spec)
    assert a.digest(b"k" * 32, spec) != a.digest(b"j" * 32, spec)


# -- view tokens ----------------------------------------------------------------------------------
def test_tokens_verify_only_unaltered_unexpired_and_for_their_principal() -> None:
    key = b"t" * 32
    spec = ViewSpec("patients", ("charges",), {"charges": (0.0, 50000.0)})
    token = ViewToken.new("bob", "research", spec, "k1", 10, "d" * 64, "p" * 64, ttl=60)
    text = sign(token, key)
    assert verify(text, key, principal="bob") == token
    head, _, mac = text.split(".")
    forged = sign(ViewToken.new("bob", "research", ViewSpec("patients", ("charges",), {"charges": (0.0, 1e9)}),
                                "k1", 10, "d" * 64, "p" * 64, ttl=60), b"x" * 32)
    with pytest.raises(InvalidRequest, match="does not verify"):
        verify(f"{head}.{forged.split('.')[1]}.{mac}", key, principal="bob")
    with pytest.raises(InvalidRequest, match="does not verify"):
        verify(forged, key, principal="bob")
    with pytest.raises(AccessDenied):
        verify(text, key, principal="alice")
    with pytest.raises(InvalidRequest, match="expired"):
        verify(text, key, principal="bob", now=time.time() + 120)
    with pytest.raises(InvalidRequest):
        verify("garbage", key, principal="bob")


# -- rate limit -----------------------------------------------------------------------------------
def test_rate_limit_is_per_principal_and_slides() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 60.0, clock=lambda: now[0])
    limiter.take("bob")
    limiter.take("bob")
    limiter.take("alice")
    with pytest.raises(RateLimited) as err:
        limiter.take("bob")
    assert err.value.status == 429 and err.value.extra["retry_after"] == 60
    now[0] = 61.0
    limiter.take("bob")


def test_noise_floor_floods_the_ckks_error() -> None:
    from govern.privacy.he.noise import error_bound, noise_scale

    err = error_bound(100_000, 50_000.0, 1)
    assert err > 100_000 * 50_000 * 2.0 ** -22
    assert noise_scale(1.0, 1.0, err, 12) == err * 4096
    assert noise_scale(50_000.0, 0.5, error_bound(4096, 1.0, 0), 12) == 100_000.0


def test_a_fresh_secret_context_matches_the_parameters() -> None:
    ctx = new_secret_context()
    data = ctx.seal_context().data
    assert data.key_context_data().parms().poly_modulus_degree() == 8192
    assert data.key_context_data().total_coeff_modulus_bit_count() == 200
    assert ctx.global_scale == 2.0 ** 40 and np.isclose(ctx.global_scale, 2 ** 40)


def test_the_min_rows_threshold_is_noisy_and_scaled_to_one_person() -> None:
    from govern.privacy.he.noise import threshold

    # Laplace(1/epsilon = 1): a count 10 scales below or above the cut fails with p < 1e-4 each
    assert threshold([0.0, 1000.0, 0.0], 10, 1, 1.0) == [True, False, True]
    # at the cut, the answer is a coin with both sides seen: no exact bit
    seen = {tuple(threshold([10.0], 10, 1, 1.0)) for _ in range(60)}
    assert seen == {(True,), (False,)}
    with pytest.raises(ValueError):
        threshold([1.0], 10, 1, 0.0)
