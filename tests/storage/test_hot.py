"""Small local datasets kept decoded (govern.storage.hot): the same rows as a scan, never stale,
within their budget, and only what they promise to keep."""

from __future__ import annotations

import gc
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from govern.config import Settings
from govern.deliver.governor import Governor
from govern.demo import create_demo
from govern.errors import StorageError
from govern.identity.principal import Principal
from govern.storage.hot import HotTable, HotTables
from govern.storage.scan import open_dataset, scan
from tests.storage.test_scan import _corrupt_row_group, _table

BUDGET = 64 << 20


@pytest.fixture
def small(data_root: Path) -> Path:
    path = data_root / "t.parquet"
    pq.write_table(_table(3_000), path, row_group_size=1_000)
    return path


@pytest.mark.parametrize("columns", [["id", "region", "amount", "name"], ["name", "id"], ["amount"]])
@pytest.mark.parametrize("where", [None, pc.field("region") == "EU", (pc.field("amount") > 700) & (pc.field("id") < 2_900),
                                   pc.field("name").isin(["name-3", "name-4"]), pc.field("id") < 0])
def test_the_kept_table_gives_the_rows_the_scan_gives(settings: Settings, small: Path, columns, where) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    table = HotTables(BUDGET).table(dataset)
    assert table is not None
    for batch_size in (7, 1_000, 32_768):
        scanned = scan(dataset, columns, where, batch_size)
        kept = scan(dataset, columns, where, batch_size, table=table)
        assert kept.schema == scanned.schema
        batches = list(kept)
        assert all(b.num_rows <= batch_size for b in batches)
        assert pa.Table.from_batches(batches, kept.schema).equals(scanned.read_all())


def test_a_filter_that_does_not_bind_is_refused_as_the_scan_refuses_it(settings: Settings, small: Path) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    table = HotTables(BUDGET).table(dataset)
    with pytest.raises(StorageError, match="stored column types differ") as err:
        scan(dataset, ["id"], pc.field("id") == pc.scalar("not a number"), 100, table=table)
    assert "not a number" not in str(err.value)


def test_kept_per_dataset_object_and_dropped_with_it(settings: Settings, small: Path) -> None:
    hot = HotTables(BUDGET)
    dataset = open_dataset("t.parquet", "parquet", settings)
    first = hot.table(dataset)
    assert first is not None and hot.table(dataset) is first  # decoded once
    assert hot.nbytes() == 2 * first.table.nbytes  # its rows, and room for its selections
    del dataset, first
    gc.collect()
    assert hot.nbytes() == 0


def test_least_recently_used_tables_go_first_within_the_budget(settings: Settings, data_root: Path) -> None:
    for name in ("a", "b", "c"):
        pq.write_table(_table(3_000), data_root / f"{name}.parquet")
    sets = {n: open_dataset(f"{n}.parquet", "parquet", settings) for n in ("a", "b", "c")}
    one = HotTables(BUDGET).table(sets["a"]).nbytes  # twice the rows (HotTable.nbytes)
    hot = HotTables(2 * one + one // 2)  # room for two
    hot.limit = 10 * one  # each one fits alone (the per-table share, not the budget, is what is tested here)
    a = hot.table(sets["a"])
    assert a is not None and hot.table(sets["b"]) is not None
    assert hot.table(sets["a"]) is a  # a is now the most recent
    hot.table(sets["c"])  # b goes
    assert hot.nbytes() == 2 * one
    assert hot.table(sets["a"]) is a
    assert hot.table(sets["b"]) is not None  # decoded again, and c goes
    assert hot.nbytes() == 2 * one


def test_what_is_not_kept(settings: Settings, data_root: Path, small: Path) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    assert HotTables(0).table(dataset) is None  # off
    tiny = HotTables(4 * 1_000)  # a quarter of the budget per table: less than the file
    assert tiny.table(dataset) is None and tiny.nbytes() == 0
    pcsv.write_csv(_table(10), data_root / "t.csv")  # CSV: no footer to size it by
    assert HotTables(BUDGET).table(open_dataset("t.csv", "csv", settings)) is None


def test_a_dataset_that_decodes_larger_than_its_share_is_not_kept(settings: Settings, data_root: Path) -> None:
    path = data_root / "dict.parquet"
    pq.write_table(pa.table({"s": ["x" * 1_000] * 5_000}), path)  # a few KB on disk, 5 MB decoded
    dataset = open_dataset("dict.parquet", "parquet", settings)
    hot = HotTables(8 << 20)  # 2 MB per table
    assert path.stat().st_size < hot.limit // 4
    assert hot.table(dataset) is None and hot.nbytes() == 0


def test_a_corrupt_file_is_not_kept_and_the_scan_reports_it(settings: Settings, small: Path) -> None:
    _corrupt_row_group(small, 2)
    dataset = open_dataset("t.parquet", "parquet", settings)
    hot = HotTables(BUDGET)
    assert hot.table(dataset) is None
    reader = scan(dataset, ["id", "name"], None, 500, location="t.parquet")
    with pytest.raises(StorageError):
        reader.read_all()


def test_s3_datasets_stream_from_the_store(moto_s3, tmp_path: Path) -> None:
    pq.write_table(_table(100), tmp_path / "t.parquet")
    uri = moto_s3.upload(tmp_path / "t.parquet", "hot-bucket", "t.parquet")
    dataset = open_dataset(uri, "parquet", Settings(data_root=tmp_path, s3=moto_s3.settings_s3))
    assert dataset.count_rows() == 100
    assert HotTables(BUDGET).table(dataset) is None


def test_a_governed_read_keeps_the_table_and_sees_a_rewritten_file(tmp_path: Path) -> None:
    info = create_demo(tmp_path / "demo", rows=300, seed=3)
    settings = Settings(policy_dir=info.directory / "policies", data_root=info.directory / "data",
                        state_dir=info.directory / "state", masking_key_file=info.directory / "state" / "masking.key")
    governor = Governor(settings)
    bob = Principal("bob", attributes=dict(governor.state.policy.principals["bob"].attributes))

    def regions() -> list[str]:
        return governor.read(bob, "patients", "research", columns=["region"]).reader.read_all()["region"].to_pylist()

    before = regions()
    assert governor.hot.nbytes() > 0  # served from the kept table
    assert regions() == before
    path = info.directory / "data" / "patients.parquet"
    stored = pq.read_table(path)
    changed = stored.set_column(stored.schema.get_field_index("region"), "region",
                                pa.array(["ZZ"] * stored.num_rows))
    pq.write_table(changed, path)
    after = regions()
    assert after == ["ZZ"] * len(before)  # the new file, not the kept table


# -- a filter's selection, remembered -------------------------------------------------------------

_KEPT = HotTable(_table(500))
_LITERALS = {"id": st.integers(-5, 505), "amount": st.floats(-1, 260, allow_nan=False),
             "region": st.sampled_from(["EU", "US", "APAC", "eu", ""]), "name": st.sampled_from(["name-1", "name-499", "x"])}
_OPS = ["==", "!=", "<", ">=", "isin"]


@st.composite
def _filters(draw) -> pc.Expression:
    """Comparisons of one column with a literal (int32, int64 or float literals for numbers, so
    that filters printing alike differ in type), combined with AND / OR / NOT."""
    column = draw(st.sampled_from(sorted(_LITERALS)))
    value = draw(_LITERALS[column])
    if column == "id":
        value = pa.scalar(value, draw(st.sampled_from([pa.int32(), pa.int64(), pa.float64()])))
    op = draw(st.sampled_from(_OPS))
    field = pc.field(column)
    one = field.isin([value.as_py() if isinstance(value, pa.Scalar) else value]) if op == "isin" else {
        "==": field == value, "!=": field != value, "<": field < value, ">=": field >= value}[op]
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return one
    other = draw(_filters()) if draw(st.booleans()) else pc.field("id") < 250
    return {1: one & other, 2: one | other, 3: ~one}[shape]


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_filters(), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_remembered_selections_give_arrows_filter_for_every_filter_in_any_order(filters, rng) -> None:
    """Property: whatever filters come, in whatever order and however often, each read gives
    exactly what Arrow's own filter gives on the rows (a selection is never another filter's)."""
    asked = filters * 2
    rng.shuffle(asked)
    for where in asked:
        got = _KEPT.rows(where, ["id", "name"])
        assert got.equals(_KEPT.table.filter(where).select(["id", "name"])), str(where)


def test_selections_are_bounded_in_number_and_bytes() -> None:
    kept = HotTable(_table(3_000))
    for i in range(HotTable.KEPT + 8):
        assert kept.rows(pc.field("id") >= i, ["id"]).num_rows == 3_000 - i
    held = list(kept._kept.values())
    assert len(held) <= HotTable.KEPT
    assert sum(size for _, _, size in held) <= kept.table.nbytes
    assert kept.rows(pc.field("id") >= 0, ["id"]).num_rows == 3_000  # an evicted one, selected again


def test_a_selection_larger_than_the_rows_is_not_kept() -> None:
    kept = HotTable(pa.table({"b": pa.array([True] * 1_000)}))  # 1,000 bits of rows, 4,000 bytes of positions
    assert kept.rows(pc.field("b"), ["b"]).num_rows == 1_000
    assert not kept._kept


def test_a_filter_that_does_not_bind_is_refused_every_time(settings: Settings, small: Path) -> None:
    dataset = open_dataset("t.parquet", "parquet", settings)
    table = HotTables(BUDGET).table(dataset)
    for _ in range(2):
        with pytest.raises(StorageError, match="stored column types differ"):
            scan(dataset, ["id"], pc.field("id") == pc.scalar("not a number"), 100, table=table)


# -- tables derived from the kept rows -------------------------------------------------------------

def test_a_derived_table_is_built_once_per_key_and_owner() -> None:
    kept = HotTable(_table(1_000))
    builds: list[str] = []

    def build(tag: str):
        def go() -> pa.Table:
            builds.append(tag)
            return kept.table.slice(0, 10)
        return go

    owner, other = object(), object()
    first = kept.derived("k", owner, build("a"))
    assert kept.derived("k", owner, build("b")) is first and builds == ["a"]
    assert kept.derived("k", other, build("c")) is not None and builds == ["a", "c"]  # another owner: built again
    assert kept.derived("j", other, build("d")) is not None and builds == ["a", "c", "d"]


def test_a_derived_table_that_fails_to_build_is_none_and_not_tried_again() -> None:
    kept = HotTable(_table(100))
    calls = []

    def broken() -> pa.Table:
        calls.append(1)
        raise pa.ArrowInvalid("no")

    owner = object()
    assert kept.derived("k", owner, broken) is None
    assert kept.derived("k", owner, broken) is None and len(calls) == 1


def test_derived_tables_and_selections_share_one_bound() -> None:
    kept = HotTable(_table(1_000))
    owner = object()
    assert kept.derived("big", owner, lambda: pa.concat_tables([kept.table, kept.table])) is not None
    assert not kept._kept  # larger than the rows: served, not kept
    for i in range(3):  # each about half the rows' bytes: at most two fit
        kept.derived(i, owner, lambda: kept.table.slice(0, 500))
    assert sum(size for _, _, size in kept._kept.values()) <= kept.table.nbytes
    assert list(k for k in kept._kept) == [("derived", 1), ("derived", 2)]
