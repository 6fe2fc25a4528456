"""Pushdown, observed where it happens: what the Parquet scan is handed, and what is masked.

``test_engine`` checks what the engine *asks* ``Governor.read`` for. These tests look one level
down, at the calls that do the work — ``storage.scan.scan`` (the only place data files are read)
and the executor's per-column masking — so a regression anywhere between SQL and the scan
(a column read "just in case", a filter applied after the fact) shows up.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.mask.execute_arrow import ArrowExecutor
from govern.sql import SqlEngine
from govern.storage import scan as storage_scan
from tests.sql.conftest import masked_reference, principal


class Observed:
    def __init__(self) -> None:
        self.scans: list[dict] = []
        self.masked: list[str] = []


@pytest.fixture
def observed(monkeypatch) -> Observed:
    seen = Observed()
    real_scan = storage_scan.scan
    real_mask = ArrowExecutor._mask_column

    def scan(dataset, columns, filter, batch_size, **kwargs):  # type: ignore[no-untyped-def]
        reader = real_scan(dataset, columns, filter, batch_size, **kwargs)
        groups = sum(f.num_row_groups for f in dataset.get_fragments() if isinstance(f, ds.ParquetFileFragment))
        seen.scans.append({"columns": list(reader.schema.names), "filter": filter, "row_groups": groups})
        return reader

    def mask_column(self, col, batch, kernel_threads, cache=None):  # type: ignore[no-untyped-def]
        # a mask or a cell rule to compute (not the empty batch that gives the output schema)
        if batch.num_rows and (col.mask is not None or self._cell_rules.get(col.name)):
            seen.masked.append(col.name)
        return real_mask(self, col, batch, kernel_threads, cache)

    monkeypatch.setattr(storage_scan, "scan", scan)
    monkeypatch.setattr(ArrowExecutor, "_mask_column", mask_column)
    return seen


@pytest.fixture
def sorted_world(world):  # the tests.server World fixture
    """The world with encounters in row groups of 500 rows, in encounter_id order (the same rows):
    statistics on encounter_id then tell the row groups apart."""
    path = world.directory / "data" / "encounters.parquet"
    table = pq.read_table(path).sort_by("encounter_id")
    pq.write_table(table, path, row_group_size=500)
    return world


def test_two_columns_are_scanned_and_masked_and_nothing_else(world, observed) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings)
    # bob: zip is generalized, email keeps its domain; both masks read only their own value
    sql = "SELECT zip, count(DISTINCT email) AS n FROM patients GROUP BY zip"
    got = engine.run(principal(gov, "bob"), "model-training", sql).reader.read_all()
    assert got.num_rows > 0
    (scan,) = observed.scans
    assert sorted(scan["columns"]) == ["email", "zip"]  # of the ten columns in the file
    assert set(observed.masked) == {"zip", "email"}
    assert sorted(map(str, got.to_pylist()), key=str) == sorted(
        map(str, masked_reference(gov, "bob", "model-training", sql).to_pylist()), key=str)


def test_a_filter_on_an_unmasked_column_reaches_the_parquet_scan(sorted_world, observed) -> None:
    gov = Governor(load_settings(sorted_world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings)
    total = pq.ParquetFile(sorted_world.directory / "data" / "encounters.parquet").num_row_groups
    sql = "SELECT department, sum(cost) AS total FROM encounters WHERE encounter_id <= 700 GROUP BY 1"
    got = engine.run(principal(gov, "bob"), "model-training", sql).reader.read_all()
    (scan,) = observed.scans
    # Statistics keep the 2 row groups that can hold encounter_id <= 700, out of all of them;
    # the scan reads only the filter's column and the two the query uses.
    assert total > 10 and scan["row_groups"] == 2
    assert sorted(scan["columns"]) == ["cost", "department", "encounter_id"]
    assert observed.masked == []  # bob sees these three columns as they are: nothing to mask
    want = masked_reference(gov, "bob", "model-training", sql)
    totals = {r["department"]: r["total"] for r in got.to_pylist()}
    assert totals == pytest.approx({r["department"]: r["total"] for r in want.to_pylist()})  # any sum order


def test_a_filter_on_a_masked_column_prunes_nothing(sorted_world, observed) -> None:
    """Statistics are about raw values; a filter on a masked column compares masked ones, so it
    must never prune: every row group is scanned, the filter applies after the masks."""
    gov = Governor(load_settings(sorted_world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings)
    total = pq.ParquetFile(sorted_world.directory / "data" / "encounters.parquet").num_row_groups
    sql = "SELECT count(*) AS n FROM encounters WHERE date <= DATE '2015-01-14'"
    got = engine.run(principal(gov, "bob"), "model-training", sql).reader.read_all()
    (scan,) = observed.scans
    assert scan["row_groups"] == total and scan["filter"] is None
    assert observed.masked and set(observed.masked) == {"date"}  # date_shift, keyed on patient_id
    assert got.equals(masked_reference(gov, "bob", "model-training", sql))


def test_row_filters_and_query_filters_combine_at_the_scan(sorted_world, observed) -> None:
    gov = Governor(load_settings(sorted_world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings)
    # alice: her row filter (region IN ('EU')) and the query's filter both reach the scan
    sql = "SELECT count(*) AS n, sum(cost) AS total FROM encounters WHERE encounter_id <= 700"
    got = engine.run(principal(gov, "alice"), "analytics", sql).reader.read_all()
    (scan,) = observed.scans
    assert scan["row_groups"] == 2
    assert sorted(scan["columns"]) == ["cost", "encounter_id", "region"]
    want = masked_reference(gov, "alice", "analytics", sql)
    assert got.to_pylist()[0]["n"] == want.to_pylist()[0]["n"] > 0
    assert got.column("total")[0].as_py() == pytest.approx(want.column("total")[0].as_py())


def test_dictionary_columns_arrive_in_duckdb_as_dictionaries(world, monkeypatch) -> None:
    """Low-cardinality strings stay dictionary-encoded from the Parquet page to DuckDB."""
    from govern.sql.sandbox import Sandbox

    types: dict[str, pa.DataType] = {}
    real = Sandbox.register_stream

    def register_stream(self, view, reader):  # type: ignore[no-untyped-def]
        types.update({f.name: f.type for f in reader.schema})
        return real(self, view, reader)

    monkeypatch.setattr(Sandbox, "register_stream", register_stream)
    gov = Governor(load_settings(world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings)
    engine.run(principal(gov, "alice"), "analytics",
               "SELECT department, region, count(*) FROM encounters GROUP BY ALL").reader.read_all()
    assert types == {"department": pa.dictionary(pa.int32(), pa.string()),
                     "region": pa.dictionary(pa.int32(), pa.string())}
