"""Exact semantics of each mask on small, readable inputs (Arrow form; the SQL form is held
equal to it by test_equivalence), plus parameter validation and the restrictiveness order."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pytest

from govern.mask import registry
from govern.mask.function import MaskContext
from tests.mask.engines import FIXED_KEYS as KEYS


def mask(name: str, values: pa.Array, unit: pa.Array | None = None, **params) -> list:
    fn = registry.get(name)
    fn.check_type(values.type, params)
    inputs = {c: unit for c in fn.inputs(params, "u")} if unit is not None else {}
    ctx = MaskContext(keys=KEYS, inputs=inputs, privacy_unit="u" if unit is not None else None)
    return fn.arrow(values, params, ctx).to_pylist()


def test_null_and_redact() -> None:
    assert registry.get("null").arrow(pa.array([1, 2]), {}, MaskContext(KEYS)).type == pa.int64()
    assert mask("null", pa.array([1, None])) == [None, None]
    assert mask("redact", pa.array([1.5, None])) == ["REDACTED", None]
    assert mask("redact", pa.array(["a"]), value="x") == ["x"]


def test_hash_is_hmac_of_the_canonical_text() -> None:
    def expected(text: str) -> str:
        return "k1:" + hmac.new(KEYS.subkey("hash"), text.encode(), hashlib.sha256).hexdigest()[:32]

    assert mask("hash", pa.array(["Zoë", None])) == [expected("Zoë"), None]
    assert mask("hash", pa.array([-42])) == [expected("-42")]
    assert mask("hash", pa.array([dt.date(2020, 1, 2)])) == [expected("2020-01-02")]
    # an integer and its text are the same value, so they get the same pseudonym (joins work)
    assert mask("hash", pa.array([7], pa.int8())) == mask("hash", pa.array(["7"]))


@pytest.mark.parametrize(("name", "params", "values", "expected"), [
    ("show_first", {"n": 2}, ["héllo", "a", "", None], ["hé***", "a", "", None]),
    ("show_first", {}, ["abcdefgh"], ["abcd****"]),
    ("show_first", {"n": 0, "mask_char": "#"}, ["abc", ""], ["###", ""]),
    ("show_last", {"n": 4}, ["4111111111111111", "😀😀😀😀😀"], ["************1111", "*😀😀😀😀"]),
    ("show_last", {"n": 2}, [12345], ["***45"]),
    ("email_domain", {}, ["a@b.com", "x@y@z.org", "nope", "", "@", None], ["*@b.com", "*@z.org", "*", "*", "*@", None]),
    ("regex_replace", {"pattern": r"(\w+)@(\w+)", "replacement": r"\2:\1"}, ["jo@ex.com"], ["ex:jo.com"]),
    ("regex_replace", {"pattern": r"\d"}, ["a1b22", None], ["ab", None]),
])
def test_partial_masks(name: str, params: dict, values: list, expected: list) -> None:
    assert mask(name, pa.array(values), **params) == expected


def test_generalize() -> None:
    dates = pa.array([dt.date(2021, 7, 19), None])
    assert mask("generalize", dates, date="year") == [dt.date(2021, 1, 1), None]
    assert mask("generalize", dates, date="month") == [dt.date(2021, 7, 1), None]
    assert mask("generalize", pa.array([-7, 7, 10, None], pa.int16()), bucket=5) == [-10, 5, 10, None]
    assert mask("generalize", pa.array([-0.3, 2.6]), bucket=0.5) == [-0.5, 2.5]
    d = pa.array([decimal.Decimal("-1.23"), decimal.Decimal("9.99")], pa.decimal128(5, 2))
    assert mask("generalize", d, bucket=0.25) == [decimal.Decimal("-1.25"), decimal.Decimal("9.75")]
    assert mask("generalize", pa.array(["Zoë Smith", None]), prefix=3) == ["Zoë", None]


def test_noise_is_bounded_deterministic_and_keyed_per_subject() -> None:
    x = pa.array([100.0] * 2000)
    units = pa.array([f"p{i}" for i in range(2000)])
    a = np.array(mask("noise", x, units, scale=10))
    assert np.all(np.abs(a - 100) <= 10) and a.std() > 4  # uniform on ±10: sd ≈ 5.8
    assert np.array_equal(a, mask("noise", x, units, scale=10))  # same reads, same noise
    same_subject = mask("noise", x, pa.array(["p1"] * 2000), scale=10)
    assert len(set(same_subject)) == 1  # averaging repeated rows of one subject gains nothing
    ints = mask("noise", pa.array([5] * 500, pa.int32()), units.slice(0, 500), scale=2)
    assert set(ints) <= {3, 4, 5, 6, 7} and len(set(ints)) > 2
    assert mask("noise", pa.array([1, None]), scale=1)[1] is None


def test_date_shift_is_consistent_per_subject() -> None:
    d = pa.array([dt.date(2020, 1, 1), dt.date(2020, 3, 1), dt.date(2021, 1, 1), None])
    units = pa.array(["a", "a", "b", "b"])
    out = mask("date_shift", d, units, max_days=30)
    assert (out[1] - out[0]) == (d[1].as_py() - d[0].as_py())  # one subject: intervals survive
    assert all(abs((o - i).days) <= 30 for o, i in zip(out[:3], d.to_pylist()[:3], strict=True))
    assert out[3] is None
    by = mask("date_shift", d, pa.array(["z"] * 4), max_days=30, by="u")
    assert len({(o - i).days for o, i in zip(by[:3], d.to_pylist()[:3], strict=True)}) == 1
    assert mask("date_shift", d, units, max_days=0) == d.to_pylist()


def test_randomized_response() -> None:
    values = pa.array(["yes"] * 4000 + [None])
    units = pa.array([str(i) for i in range(4001)])
    out = mask("randomized_response", values, units, p=0.25, categories=["yes", "no", "maybe"])
    kept_or_drawn = np.array(out[:-1])
    assert out[-1] is None and set(kept_or_drawn) == {"yes", "no", "maybe"}
    # P(yes) = p + (1 - p) / 3 = 0.5
    assert abs((kept_or_drawn == "yes").mean() - 0.5) < 0.04
    assert mask("randomized_response", values, units, p=1.0, categories=["yes", "no"])[:3] == ["yes"] * 3
    # a value that is not a category is always replaced, even at p = 1
    assert mask("randomized_response", values, units, p=1.0, categories=["no"])[:3] == ["no"] * 3


@pytest.mark.parametrize(("name", "params", "problem"), [
    ("show_first", {"n": -1}, "n must be a non-negative integer"),
    ("show_first", {"n": 2.5}, "n must be a non-negative integer"),
    ("show_last", {"mask_char": "**"}, "mask_char must be exactly one character"),
    ("regex_replace", {"pattern": "(a"}, "invalid regular expression"),
    ("regex_replace", {"pattern": "(a)", "replacement": r"\2"}, "invalid regular expression"),
    ("regex_replace", {}, "pattern must be a non-empty string"),
    ("generalize", {}, "give at least one of"),
    ("generalize", {"date": "week"}, "date must be 'year' or 'month'"),
    ("generalize", {"bucket": 0}, "bucket must be a positive number"),
    ("noise", {"scale": -1}, "scale must be a positive number"),
    ("noise", {}, "scale is required"),
    ("date_shift", {"max_days": -3}, "max_days must be between 0 and"),
    ("randomized_response", {"p": 0, "categories": ["a"]}, "p must be a number in (0, 1]"),
    ("randomized_response", {"p": 0.5, "categories": []}, "categories must be a non-empty list"),
    ("redact", {"value": 3}, "value must be a string"),
    ("hash", {"salt": "x"}, "unknown parameter(s): salt"),
])
def test_validation_problems(name: str, params: dict, problem: str) -> None:
    assert problem in " | ".join(registry.get(name).validate(params))


def test_restrictiveness_order_is_the_documented_one() -> None:
    import govern.mask.functions as functions

    order = [f.name for f in registry.all_functions()]
    assert order == ["null", "redact", "hash", "tokenize", "generalize", "randomized_response", "noise",
                     "date_shift", "email_domain", "show_first", "show_last", "regex_replace"]
    for f in registry.all_functions():  # the module docstring lists every rank
        assert f"{f.rank:>2}  " in functions.__doc__ and f.name in functions.__doc__
    show = registry.get("show_first")
    assert show.order_key({"n": 2}) < show.order_key({"n": 4})
    noise = registry.get("noise")
    assert noise.order_key({"scale": 100}) < noise.order_key({"scale": 1})
