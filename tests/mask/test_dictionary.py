"""Dictionary-encoded input: same values as plain input, whatever the mask or predicate.

The SQL engine reads string columns that Parquet stores dictionary-encoded as Arrow
dictionaries (govern.storage.dictionary); value-only masks then run once per distinct value and
single-column predicates are evaluated on the dictionary. Only the encoding may differ.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from govern.mask import function, registry
from govern.mask.execute_arrow import ArrowExecutor, resolve_request
from govern.mask.predicate_arrow import evaluate
from govern.plan.model import MaskSpec
from govern.plan.predicates import compile_client_filter
from govern.storage.dictionary import dictionary_columns, prune, with_dictionaries
from tests.mask.engines import FIXED_KEYS
from tests.mask.samples import PARAMS

VALUES = ["EU", "US", None, "EU", "", "Zoë 😀", "a@b.org", "US", None, "APAC"]


def plain_and_dictionary() -> tuple[pa.RecordBatch, pa.RecordBatch]:
    plain = pa.record_batch({"x": pa.array(VALUES), "u": pa.array([str(i % 3) for i in range(len(VALUES))])})
    encoded = pa.record_batch({"x": plain.column(0).dictionary_encode(), "u": plain.column(1)})
    return plain, encoded


def decoded(batch: pa.RecordBatch) -> pa.Table:
    return pa.table({n: (c.dictionary_decode() if pa.types.is_dictionary(c.type) else c)
                     for n, c in zip(batch.schema.names, batch.columns, strict=True)})


def plan_for(governor, mask: str, params: dict, unit: str | None):  # type: ignore[no-untyped-def]
    """A plan over columns x (masked) and u, from alice's demo plan with its rules cleared."""
    import dataclasses

    from govern.policy.model import local_principal

    base = governor.plan(local_principal(governor.state.policy, "alice"), "patients", "analytics")
    x = dataclasses.replace(base.columns[0], name="x", mask=MaskSpec.of(mask, params), action=f"mask:{mask}")
    u = dataclasses.replace(base.columns[0], name="u", mask=None, action="keep")
    return dataclasses.replace(base, columns=(x, u), cell_rules=(), row_filters=(), privacy_unit=unit)


STRING_MASKS = sorted(n for n in PARAMS if function.STRING in registry.get(n).accepts or
                      function.ANY in registry.get(n).accepts)


@pytest.mark.parametrize("unit", [None, "u"], ids=["value-only", "keyed-on-unit"])
@pytest.mark.parametrize("mask", STRING_MASKS)
def test_masks_give_the_same_values_on_dictionaries(governor, mask, unit) -> None:
    plan = plan_for(governor, mask, PARAMS[mask], unit)
    request = resolve_request(plan, ["x", "u"], None, None)
    plain, encoded = plain_and_dictionary()
    want = ArrowExecutor(plan, request, FIXED_KEYS, row_filter_applied=True).transform(plain)
    got = ArrowExecutor(plan, request, FIXED_KEYS, row_filter_applied=True).transform(encoded)
    assert decoded(got).equals(decoded(want)), mask
    if not registry.get(mask).inputs(PARAMS[mask], unit) and mask != "null":
        assert pa.types.is_dictionary(got.column(0).type)  # computed once per distinct value


PREDICATES = [
    "x = 'EU'", "x <> 'EU'", "x IN ('EU', 'APAC')", "x IS NULL", "x IS NOT NULL", "NOT (x = 'US')",
    "x = 'EU' OR x IS NULL", "coalesce(x, 'none') = 'none'", "x LIKE '%@%'", "length(x) > 2",
    "x = 'EU' AND u = '0'", "(x = 'US' OR u = '1') AND x IS NOT NULL", "lower(x) = 'eu' AND u <> '2'",
    "lower(x) = 'eu' OR x LIKE 'a%' OR u = '1'", "coalesce(x, u) = '0'", "length(x) + 1 > 3 OR x IS NULL",
    "x IN ('EU') AND NOT (u IN ('1', '2'))", "1 = 1", "x = x",
]


@pytest.mark.parametrize("predicate", PREDICATES)
def test_predicates_give_the_same_answer_on_dictionaries(predicate) -> None:
    sql = compile_client_filter(predicate).sql
    plain, encoded = plain_and_dictionary()
    assert evaluate(sql, encoded).equals(evaluate(sql, plain)), predicate
    for start in (3, 5):  # slices: indices with an offset, with and without nulls
        assert evaluate(sql, encoded.slice(start, 3)).equals(evaluate(sql, plain.slice(start, 3))), predicate


def test_dictionary_variant_of_a_parquet_dataset(tmp_path) -> None:
    import pyarrow.dataset as ds

    table = pa.table({"id": list(range(1000)), "region": ["EU", "US"] * 500,
                      "email": [f"p{i}@example.org" for i in range(1000)]})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=100, use_dictionary=["region"])
    plain = ds.dataset(path)
    assert dictionary_columns(plain) == ["region"]
    variant = with_dictionaries(plain)
    assert variant.schema.field("region").type == pa.dictionary(pa.int32(), pa.string())
    assert variant.schema.field("email").type == pa.string()
    got = variant.to_table()
    assert got.column("region").type.value_type == pa.string()
    assert got.cast(table.schema).equals(table)
    # statistics prune row groups; the scan then filters exactly
    kept = prune(variant, pc.field("id") < 150)
    assert sum(f.num_row_groups for f in kept.get_fragments()) == 2
    assert prune(variant, pc.field("id") > 5000).to_table().num_rows == 0


def test_predicate_answers_are_remembered_by_value_not_by_position() -> None:
    """Row groups repeat a dictionary in another order: a remembered answer must follow values."""
    sql = compile_client_filter("x IN ('EU', 'APAC') OR x IS NULL").sql
    memo: dict = {}
    first = pa.record_batch({"x": pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 2]),
                                                                 pa.array(["EU", "US", "APAC"]))})
    second = pa.record_batch({"x": pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, None]),
                                                                  pa.array(["US", "APAC", "EU"]))})
    assert evaluate(sql, first, memo).to_pylist() == [True, False, True, True]
    assert evaluate(sql, second, memo).to_pylist() == [False, True, True, True]
    assert evaluate(sql, first, memo).to_pylist() == [True, False, True, True]
