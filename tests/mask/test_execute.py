"""Executing plans: the Arrow engine and the DuckDB engine agree on every demo plan; filters
see masked values only; row filters reach the scan; everything fails closed."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from govern.errors import MaskError, PredicateError, UnknownColumn
from govern.identity.principal import Principal
from govern.mask.execute_arrow import (
    ArrowExecutor,
    execute,
    pushdown_filter,
    resolve_request,
    scan_columns,
)
from govern.mask.execute_sql import execute_duckdb, plan_sql
from govern.plan.model import MaskSpec
from govern.plan.predicates import compile_client_filter
from govern.policy.model import local_principal

DEMO_PLANS = [
    ("alice", "patients", "analytics"),
    ("alice", "encounters", "analytics"),
    ("bob", "patients", "model-training"),
    ("bob", "encounters", "research"),
    ("carol", "patients", "governance"),
    ("dave", "patients", "treatment"),
    ("dave", "encounters", "treatment"),
]


def raw_table(governor, dataset: str) -> pa.Table:
    return governor.dataset(dataset).to_table()


def who(governor, name: str) -> Principal:
    return local_principal(governor.state.policy, name)


@pytest.mark.parametrize("name,dataset,purpose", DEMO_PLANS)
def test_arrow_and_duckdb_engines_give_identical_results(governor, name, dataset, purpose) -> None:
    plan = governor.plan(who(governor, name), dataset, purpose)
    raw = raw_table(governor, dataset)
    via_arrow = execute(plan, pa.RecordBatchReader.from_batches(raw.schema, raw.to_batches(max_chunksize=333)),
                        governor.keys, threads=2).read_all()
    via_duckdb = execute_duckdb(plan, raw, governor.keys, threads=1)
    assert via_arrow.num_rows > 0
    assert via_arrow.schema.names == via_duckdb.schema.names == plan.visible_names
    assert via_arrow.equals(via_duckdb.cast(via_arrow.schema)), f"{name}/{dataset} differs"


def test_sql_form_carries_no_key_material(governor) -> None:
    plan = governor.plan(who(governor, "alice"), "patients", "analytics")
    q = plan_sql(plan, "raw", governor.keys)
    assert "$gk_" in q.sql  # keys are bound as parameters
    for value in q.parameters.values():
        text = value.hex() if isinstance(value, bytes) else str(value)
        assert text not in q.sql


def test_governed_read_matches_the_plan(governor) -> None:
    alice = who(governor, "alice")
    table = governor.read(alice, "patients", "analytics").reader.read_all()
    raw = raw_table(governor, "patients")
    assert set(table.column("region").to_pylist()) == {"EU"}
    assert table.num_rows == pc.sum(pc.equal(raw.column("region"), "EU")).as_py()
    assert "ssn" not in table.column_names and "phone" not in table.column_names
    assert all(v.startswith("k1:") for v in table.column("patient_id").to_pylist())
    raw_emails = set(raw.column("email").to_pylist())
    assert not raw_emails & set(table.column("email").to_pylist())


def test_cell_rule_masks_only_matching_rows(governor) -> None:
    bob = who(governor, "bob")
    raw = raw_table(governor, "patients")
    read = governor.read(bob, "patients", "model-training", columns=["charges"]).reader.read_all()
    sensitive = pc.equal(raw.column("region"), "APAC")  # the example rule `apac-charges`
    charges = read.column("charges")
    assert pc.all(pc.is_null(pc.filter(charges, sensitive))).as_py()
    assert pc.all(pc.is_valid(pc.filter(charges, pc.invert(sensitive)))).as_py()
    assert pc.sum(sensitive).as_py() > 0


def test_client_filter_applies_to_masked_values(governor) -> None:
    alice = who(governor, "alice")
    raw = raw_table(governor, "patients")
    eu = raw.filter(pc.equal(raw.column("region"), "EU"))
    real_email = eu.column("email")[0].as_py()
    # the raw value behind the mask matches nothing
    hits = governor.read(alice, "patients", "analytics", filter=f"email = '{real_email}'").reader.read_all()
    assert hits.num_rows == 0
    # the masked value does
    domain = "*@" + real_email.rsplit("@", 1)[1]
    hits = governor.read(alice, "patients", "analytics", filter=f"email = '{domain}'").reader.read_all()
    assert hits.num_rows > 0 and set(hits.column("email").to_pylist()) == {domain}
    # birth dates are generalized to January 1st: a filter on a real birthday finds nothing
    real_birthday = next(d for d in eu.column("birth_date").to_pylist() if (d.month, d.day) != (1, 1))
    hits = governor.read(alice, "patients", "analytics",
                         filter=f"birth_date = DATE '{real_birthday.isoformat()}'").reader.read_all()
    assert hits.num_rows == 0


def test_filter_on_withheld_column_is_refused(governor) -> None:
    alice = who(governor, "alice")
    with pytest.raises(UnknownColumn) as info:
        governor.read(alice, "patients", "analytics", filter="ssn LIKE '123%'")
    assert info.value.extra["columns"] == ["ssn"]
    with pytest.raises(UnknownColumn):
        governor.read(alice, "patients", "analytics", columns=["phone"])


def test_bad_filter_is_a_predicate_error(governor) -> None:
    with pytest.raises(PredicateError):
        governor.read(who(governor, "alice"), "patients", "analytics", filter="region IN (SELECT 1)")


def test_projection_and_pushdown(governor) -> None:
    plan = governor.plan(who(governor, "alice"), "patients", "analytics")
    request = resolve_request(plan, ["zip"], compile_client_filter("region = 'EU'"), None)
    # only the requested column, the filter's column and the row filter's column are scanned
    assert scan_columns(plan, request) == ["zip", "region"]
    pushed = pushdown_filter(plan, request)
    assert str(pushed) == str(pc.and_kleene(
        pc.if_else(pc.is_null(pc.field("region")), pa.scalar(None, pa.bool_()),
                   pc.is_in(pc.field("region"), value_set=pa.array(["EU"]))),
        pc.equal(pc.field("region"), "EU")))
    # a filter on a masked column is NOT pushed to the raw scan
    request = resolve_request(plan, None, compile_client_filter("zip = '123'"), None)
    assert "zip" not in str(pushdown_filter(plan, request))


def test_row_filter_prunes_parquet_row_groups(governor, tmp_path) -> None:
    from govern.storage import scan as storage_scan

    raw = raw_table(governor, "patients").sort_by("region")
    path = tmp_path / "sorted.parquet"
    pq.write_table(raw, path, row_group_size=200)
    ds = storage_scan.open_dataset(str(path), "parquet", governor.settings.model_copy(update={"data_root": tmp_path}))
    plan = governor.plan(who(governor, "alice"), "patients", "analytics")
    request = resolve_request(plan, ["region"], None, None)
    fragments = list(ds.get_fragments(filter=pushdown_filter(plan, request)))
    groups = [rg for f in fragments for rg in f.split_by_row_group(filter=pushdown_filter(plan, request))]
    total = pq.ParquetFile(path).num_row_groups
    assert 0 < len(groups) < total


def test_injection_in_attributes_yields_no_rows(governor) -> None:
    mallory = Principal("alice", {"regions": ["EU' OR 1=1 --"], "clearance": "confidential"})
    table = governor.read(mallory, "patients", "analytics").reader.read_all()
    assert table.num_rows == 0


def test_limit_and_empty_results(governor) -> None:
    alice = who(governor, "alice")
    assert governor.read(alice, "patients", "analytics", limit=5).reader.read_all().num_rows == 5
    empty = governor.read(alice, "patients", "analytics", limit=0).reader.read_all()
    assert empty.num_rows == 0 and "patient_id" in empty.column_names


def test_mask_failure_fails_closed(governor) -> None:
    plan = governor.plan(who(governor, "alice"), "patients", "analytics")
    broken = dataclasses.replace(plan, columns=tuple(
        dataclasses.replace(c, mask=MaskSpec.of("show_last", {"n": 2})) if c.name == "charges" else c
        for c in plan.columns))
    raw = raw_table(governor, "patients")
    request = resolve_request(broken, None, None, None)
    with pytest.raises(MaskError):
        ArrowExecutor(broken, request, governor.keys).reader(
            pa.RecordBatchReader.from_batches(raw.schema, raw.to_batches())).read_all()


@pytest.mark.parametrize("name,dataset,purpose", DEMO_PLANS)
@pytest.mark.parametrize("row_filter_applied", [True, False])
@pytest.mark.parametrize("limit", [1, 7, 40, 10_000])
def test_a_limit_gives_the_first_rows_of_the_full_answer(governor, name, dataset, purpose,
                                                         row_filter_applied, limit) -> None:
    """A limit may cut the input before the masks run (every mask is row-local), but only where
    no filter in the executor drops rows: the answer is always the head of the unlimited one,
    and batches past the limit are never pulled from the scan."""
    plan = governor.plan(who(governor, name), dataset, purpose)
    raw = raw_table(governor, dataset)
    if row_filter_applied:  # what the scan would deliver: rows past the row filters only
        keep = governor.read(who(governor, name), dataset, purpose).reader.read_all().num_rows
        raw = raw if not plan.row_filters else raw.filter(
            pc.field("region").isin(list(who(governor, name).attributes.get("regions", []))))
        assert raw.num_rows == keep
    batches = raw.to_batches(max_chunksize=5)
    pulled = []

    def source():
        for b in batches:
            pulled.append(b.num_rows)
            yield b

    reader = pa.RecordBatchReader.from_batches(raw.schema, source())
    full = execute(plan, pa.RecordBatchReader.from_batches(raw.schema, iter(batches)), governor.keys,
                   row_filter_applied=row_filter_applied).read_all()
    head = execute(plan, reader, governor.keys, limit=limit, row_filter_applied=row_filter_applied).read_all()
    assert head.equals(full.slice(0, limit))
    if (row_filter_applied or not plan.row_filters) and limit < raw.num_rows:
        assert sum(pulled) < limit + 5  # rows in = rows out: the scan stops at the limit's batch


def test_a_limit_with_a_masked_filter_still_filters_before_it_cuts(governor) -> None:
    alice = who(governor, "alice")
    full = governor.read(alice, "patients", "analytics", filter="zip LIKE '1%'").reader.read_all()
    head = governor.read(alice, "patients", "analytics", filter="zip LIKE '1%'", limit=3).reader.read_all()
    assert full.num_rows > 3 and head.equals(full.slice(0, 3))
