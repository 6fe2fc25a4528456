"""The view cache: a second query over the same masked columns reads no file, returns the same
bytes, and no entry is ever served to another plan, another data version or a partial read."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.load import load_policy
from govern.sql import SqlEngine
from govern.sql.view_cache import ViewCache
from govern.storage import scan as storage_scan
from tests.conftest import edit
from tests.server.test_http import audit_records
from tests.sql.conftest import make_client, masked_reference, principal, rows

BY_ZIP = "SELECT zip, count(*) AS n, sum(charges) AS total FROM patients GROUP BY zip"


@pytest.fixture
def scans(monkeypatch) -> list[list[str]]:
    """The columns of every Parquet scan (storage.scan.scan is the only place files are read)."""
    seen: list[list[str]] = []
    real = storage_scan.scan

    def scan(dataset, columns, filter, batch_size, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(list(columns))
        return real(dataset, columns, filter, batch_size, **kwargs)

    monkeypatch.setattr(storage_scan, "scan", scan)
    return seen


def run(engine: SqlEngine, gov: Governor, who: str, purpose: str, sql: str) -> tuple[pa.Table, list[str]]:
    result = engine.run(principal(gov, who), purpose, sql)
    try:
        return result.reader.read_all(), result.cached
    finally:
        result.close()


# -- through the engine ------------------------------------------------------------------------

def test_the_second_query_reads_no_file_and_gets_the_same_answer(world, scans) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings, cache=ViewCache(64 * 2**20))
    first, cached_first = run(engine, gov, "bob", "model-training", BY_ZIP)
    assert len(scans) == 1 and cached_first == []
    second, cached_second = run(engine, gov, "bob", "model-training", BY_ZIP)
    assert len(scans) == 1 and cached_second == ["patients"]  # no second scan
    # the same columns in another query share the entry; other columns are another entry
    _, cached = run(engine, gov, "bob", "model-training", "SELECT max(charges) AS m, count(zip) AS z FROM patients")
    assert len(scans) == 1 and cached == ["patients"]
    run(engine, gov, "bob", "model-training", "SELECT count(DISTINCT region) AS n FROM patients")
    assert len(scans) == 2
    assert rows(first) == rows(second) == rows(masked_reference(gov, "bob", "model-training", BY_ZIP))


def test_another_principal_never_gets_the_entry(world, scans) -> None:
    """alice (EU rows only, other masks) and bob read the same columns: separate entries, and each
    sees exactly their own view, whatever ran first."""
    gov = Governor(load_settings(world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings, cache=ViewCache(64 * 2**20))
    run(engine, gov, "bob", "model-training", BY_ZIP)
    alice, cached = run(engine, gov, "alice", "analytics", BY_ZIP)
    assert cached == [] and len(scans) == 2
    assert rows(alice) == rows(masked_reference(gov, "alice", "analytics", BY_ZIP))
    # bob under a purpose whose plan differs is another plan too
    assert gov.plan(principal(gov, "bob"), "patients", "model-training").hash != \
        gov.plan(principal(gov, "alice"), "patients", "analytics").hash


def test_rewritten_data_is_read_again(world, scans) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings, cache=ViewCache(64 * 2**20))
    before, _ = run(engine, gov, "bob", "model-training", "SELECT count(*) AS n FROM patients")
    path = world.directory / "data" / "patients.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 7), path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a visibly newer file
    after, cached = run(engine, gov, "bob", "model-training", "SELECT count(*) AS n FROM patients")
    assert cached == [] and len(scans) == 2
    assert after["n"][0].as_py() == before["n"][0].as_py() - 7
    assert len(engine.cache) == 1  # the old version's entry was dropped


def test_a_policy_change_is_another_plan(world, scans) -> None:
    settings = load_settings(world.config, watch_policies=False)
    gov = Governor(settings)
    engine = SqlEngine(gov, settings, cache=ViewCache(64 * 2**20))
    sql = "SELECT count(*) AS n FROM patients"
    run(engine, gov, "alice", "analytics", sql)
    edit(world.directory / "policies" / "principals.yaml", "      regions:\n      - EU\n", "      regions:\n      - US\n")
    gov.swap_policy(load_policy(world.directory / "policies"))
    us, cached = run(engine, gov, "alice", "analytics", sql)
    assert cached == [] and len(scans) == 2
    assert rows(us) == rows(masked_reference(gov, "alice", "analytics", sql))


def test_filtered_early_stopped_and_oversized_reads_are_not_stored(world, scans) -> None:
    gov = Governor(load_settings(world.config, watch_policies=False))
    engine = SqlEngine(gov, gov.settings, cache=ViewCache(64 * 2**20))
    eu = "SELECT count(*) AS n FROM patients WHERE region = 'EU'"
    run(engine, gov, "bob", "model-training", eu)
    run(engine, gov, "bob", "model-training", eu)
    assert len(scans) == 2 and len(engine.cache) == 0  # a pushed-down filter: a partial view
    run(engine, gov, "bob", "model-training", "SELECT region FROM patients LIMIT 3")
    assert len(scans) == 3 and len(engine.cache) == 0  # stopped early
    # once the whole view is cached, a filtered query is served from it: DuckDB applies the filter
    everyone, _ = run(engine, gov, "bob", "model-training", "SELECT region, count(*) AS n FROM patients GROUP BY 1")
    got, cached = run(engine, gov, "bob", "model-training", eu)
    assert len(scans) == 4 and cached == ["patients"]
    assert got["n"][0].as_py() == {r["region"]: r["n"] for r in everyone.to_pylist()}["EU"]
    tiny = SqlEngine(gov, gov.settings, cache=ViewCache(4096))  # an entry may take a quarter: 1 KiB
    run(tiny, gov, "bob", "model-training", BY_ZIP)
    run(tiny, gov, "bob", "model-training", BY_ZIP)
    assert len(scans) == 6 and len(tiny.cache) == 0
    off = SqlEngine(gov, gov.settings, cache=ViewCache(0))
    assert off.cache is None


# -- the cache itself --------------------------------------------------------------------------

def _table(n: int) -> pa.Table:
    return pa.table({"x": pa.array(range(n), pa.int64())})


def test_lru_by_bytes_and_a_quarter_per_entry() -> None:
    cache = ViewCache(4 * 8_000)  # four 1,000-row int64 tables
    for i in range(5):
        assert cache.put(("plan", ("x",), i + 100, f"v{i}"), _table(1_000))
    assert len(cache) == 4 and cache.nbytes <= cache.max_bytes
    assert cache.get(("plan", ("x",), 100, "v0")) is None  # the least recently used went first
    assert not cache.put(("big",), _table(1_001))  # more than a quarter of the budget


def test_a_new_snapshot_drops_the_old_one() -> None:
    cache = ViewCache(10**6)
    cache.put(("plan", ("x",), "snap1"), _table(10))
    cache.put(("other", ("x",), "snap1"), _table(10))
    cache.put(("plan", ("x",), "snap2"), _table(20))
    assert cache.get(("plan", ("x",), "snap1")) is None
    assert cache.get(("other", ("x",), "snap1")) is not None
    assert cache.get(("plan", ("x",), "snap2")).num_rows == 20


def test_filling_stores_only_a_complete_read() -> None:
    cache = ViewCache(10**6)
    batches = [pa.record_batch({"x": pa.array([i, i + 1])}) for i in range(0, 10, 2)]
    schema = batches[0].schema

    reader = cache.filling(("k",), pa.RecordBatchReader.from_batches(schema, iter(batches)), max_rows=100)
    reader.read_next_batch()
    reader.close()  # the consumer stopped early (a LIMIT)
    assert cache.get(("k",)) is None

    def failing():  # type: ignore[no-untyped-def]
        yield batches[0]
        raise OSError("storage went away")

    reader = cache.filling(("k",), pa.RecordBatchReader.from_batches(schema, failing()), max_rows=100)
    with pytest.raises(OSError):
        reader.read_all()
    assert cache.get(("k",)) is None

    too_many = cache.filling(("k",), pa.RecordBatchReader.from_batches(schema, iter(batches)), max_rows=9)
    assert too_many.read_all().num_rows == 10 and cache.get(("k",)) is None

    whole = cache.filling(("k",), pa.RecordBatchReader.from_batches(schema, iter(batches)), max_rows=100)
    assert whole.read_all().num_rows == 10
    assert cache.get(("k",)).equals(pa.Table.from_batches(batches))


# -- over HTTP ---------------------------------------------------------------------------------

def test_over_http_the_bytes_are_the_same_and_the_audit_says_cached(world) -> None:
    with make_client(world) as client:
        headers = {**world.auth("bob"), "X-Purpose": "model-training"}
        body = {"sql": BY_ZIP + " ORDER BY zip", "format": "csv"}
        first = client.post("/v1/sql", json=body, headers=headers)
        time.sleep(0.05)
        second = client.post("/v1/sql", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    by_id = {r.request_id: r for r in audit_records(world)}
    assert "cached" not in by_id[first.headers["x-request-id"]].extra
    assert by_id[second.headers["x-request-id"]].extra["cached"] == ["patients"]
