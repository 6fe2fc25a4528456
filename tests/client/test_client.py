"""The Python client's SQL (``Client.sql``, ``Client.sql_stream``) against a real ``govern serve``,
and the client's Arrow stream bookkeeping."""

from __future__ import annotations

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.client import EOS_MARKER, Client, ResponseReader, TransportFailed
from govern.errors import AuthenticationFailed, PurposeNotEntitled, PurposeRequired, SqlError
from tests.server.test_http import expected


def raw(server, dataset: str) -> pa.Table:
    return pq.read_table(server.world.directory / "data" / f"{dataset}.parquet")


def test_sql_returns_the_masked_answer_as_arrow(server) -> None:
    world = server.world
    with Client(server.url, token=world.keys["alice"], purpose="analytics") as c:
        df = c.sql("select region, count(*) from patients group by 1").to_pandas()  # the contract's line
        eu = sum(1 for r in raw(server, "patients").column("region").to_pylist() if r == "EU")
        assert df.to_dict("records") == [{"region": "EU", "count_star()": eu}]  # alice: EU rows only

        # the same values a dataset read gives her, masks and all
        table = c.sql("SELECT patient_id, name, zip FROM patients ORDER BY patient_id")
        want = expected(world, "alice", "patients", "analytics", columns=["patient_id", "name", "zip"])
        assert table.sort_by("patient_id").equals(want.sort_by("patient_id"))
        assert all(t.startswith("k1:") for t in table.column("name").to_pylist() if t)

        # parameters are bound as typed values, never spliced
        n = c.sql("SELECT count(*) AS n FROM patients WHERE region = $1", ["EU' OR '1'='1"])
        assert n.to_pylist() == [{"n": 0}]
        assert c.sql("SELECT ? + 1 AS x", [41]).to_pylist() == [{"x": 42}]

        # an empty answer keeps its schema; streaming yields the same rows batch by batch
        empty = c.sql("SELECT zip, charges FROM patients WHERE false")
        assert empty.num_rows == 0 and empty.schema.names == ["zip", "charges"]
        batches = list(c.sql_stream("SELECT encounter_id FROM encounters"))
        assert sum(b.num_rows for b in batches) == expected(world, "alice", "encounters", "analytics").num_rows


def test_sql_errors_are_typed(server) -> None:
    world = server.world
    with Client(server.url, token=world.keys["alice"], purpose="analytics") as c:
        with pytest.raises(SqlError) as info:
            c.sql("SELECT ssn FROM patients")  # withheld above her clearance: it does not exist
        assert info.value.status == 400 and info.value.extra["position"] == 7
        assert "ssn" in info.value.detail and info.value.request_id
        with pytest.raises(SqlError, match="is not allowed"):
            c.sql("SELECT * FROM read_parquet('data/patients.parquet')")
        with pytest.raises(PurposeNotEntitled) as denied:
            c.sql("SELECT 1", purpose="treatment")
        assert denied.value.extra["purposes"] == ["analytics", "quality-improvement"]
    with Client(server.url, token=world.keys["alice"]) as c, pytest.raises(PurposeRequired):
        c.sql("SELECT 1")
    with Client(server.url, token="gk_nobody_x", purpose="analytics") as c, pytest.raises(AuthenticationFailed):
        c.sql("SELECT 1")
    with Client(server.url, token=world.keys["carol"], purpose="governance") as c:
        records = c.audit(limit=1000, principal="alice")["records"]
    sql = [r for r in records if r["action"] == "sql"]
    # refused before any dataset was resolved, these records touch no dataset the steward
    # administers: they are listed, their text redacted (docs/api.md, "Who sees which records")
    assert len(sql) >= 3 and {r["extra"].get("sql") for r in sql} == {"[redacted]"}
    assert all(r["outcome"] == "denied" for r in sql)


def test_analysts_join_on_tokens_and_a_steward_reverses_them(server) -> None:
    """patient_id is tokenized in both datasets: the same id gives the same token, so an analyst's
    join matches exactly the rows the raw join would; only carol (reidentify) turns tokens back."""
    world = server.world
    with Client(server.url, token=world.keys["alice"], purpose="analytics") as c:
        joined = c.sql("SELECT p.patient_id, count(*) AS visits FROM patients p "
                       "JOIN encounters e ON p.patient_id = e.patient_id GROUP BY 1 ORDER BY 2 DESC, 1")
    con = duckdb.connect()
    con.register("p", raw(server, "patients"))
    con.register("e", raw(server, "encounters"))
    want = con.sql("SELECT p.patient_id, count(*) AS visits FROM p JOIN e ON p.patient_id = e.patient_id "
                   "WHERE p.region = 'EU' AND e.region = 'EU' GROUP BY 1").fetchall()
    con.close()
    assert joined.num_rows == len(want) > 0
    assert sum(joined.column("visits").to_pylist()) == sum(v for _, v in want)
    tokens = joined.column("patient_id").to_pylist()[:20]
    assert all(t.startswith("k1:") for t in tokens)
    url = f"{server.url}/v1/datasets/patients/reidentify"
    refused = httpx.post(url, json={"tokens": tokens}, headers={**world.auth("alice"), "X-Purpose": "analytics"})
    assert refused.status_code == 403
    back = httpx.post(url, json={"tokens": tokens}, headers={**world.auth("carol"), "X-Purpose": "governance"})
    assert back.status_code == 200, back.text
    visits = dict(want)
    assert [visits[int(v)] for v in back.json()["values"]] == joined.column("visits").to_pylist()[:20]


def test_sql_is_retried_like_a_read_when_the_gateway_is_unreachable() -> None:
    from tests.gateway import free_port

    with Client(f"http://127.0.0.1:{free_port()}", token="gk_x", purpose="p", retries=2, backoff=0.01) as c, \
            pytest.raises(TransportFailed):
        c.sql("SELECT 1")


def test_reader_tail_is_the_last_eight_bytes_handed_out_whatever_the_read_sizes() -> None:
    """``tail`` decides whether an Arrow stream ended with its end-of-stream marker: short reads
    (fewer than 8 bytes) must keep the earlier bytes of the tail."""
    body = b"\x01" * 21 + EOS_MARKER
    for chunk in (1, 3, 8, 64):
        for size in (1, 2, 5, 7, 9, 64, -1):
            chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)]
            reader = ResponseReader(httpx.Response(200, content=iter(chunks)))
            handed = b""
            while out := reader.read(size):
                handed += out
                assert reader.tail == handed[-8:]
            assert handed == body and reader.tail == EOS_MARKER
