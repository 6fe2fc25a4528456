"""Streamed reads: the Arrow encoding, the implicit row cap, and reads whose client leaves early.

The last two go through a real ``govern serve`` (uvicorn), since what they are about — a
stream cut without its end marker, a connection closed before the first byte — only exists on
a real socket.
"""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

import anyio
import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from govern.client import Client, StreamInterrupted
from govern.errors import LimitExceeded
from govern.server.streaming import CHUNK, encode
from tests.conftest import edit
from tests.gateway import shared_sql_service, start_server, stop_server
from tests.server.test_http import assert_problem, expected

# -- encoding --------------------------------------------------------------------------------


def _stream(fmt: str, table: pa.Table, batch_rows: int) -> tuple[list, list[tuple[int, int]]]:
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(batch_rows))
    done: list[tuple[int, int]] = []
    chunks = list(encode(fmt, reader, lambda rows, nbytes: done.append((rows, nbytes))))
    return chunks, done


def _writer_bytes(table: pa.Table, batch_rows: int) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(batch_rows):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


TABLE = pa.table({
    "id": pa.array(range(5000), pa.int64()),
    "name": pa.array([None if i % 7 == 0 else f"name-{i}-é" for i in range(5000)]),
    "tags": pa.array([[i, i + 1] if i % 3 else None for i in range(5000)], pa.list_(pa.int32())),
}).replace_schema_metadata({"origin": "test"})


def test_arrow_stream_is_the_writers_bytes_in_chunks_of_at_most_a_mebibyte() -> None:
    chunks, done = _stream("arrow", TABLE, 700)
    body = b"".join(bytes(c) for c in chunks)
    assert body == _writer_bytes(TABLE, 700)  # byte for byte what RecordBatchStreamWriter writes
    assert pa.ipc.open_stream(body).read_all().equals(TABLE)
    assert done == [(5000, len(body) - 8)]  # counted before the 8-byte end-of-stream marker
    assert all(len(c) <= CHUNK for c in chunks)
    big = pa.table({"blob": pa.array([b"x" * 1000] * 3000, pa.binary())})  # ~3 MB in one batch
    chunks, _ = _stream("arrow", big, 3000)
    assert max(len(c) for c in chunks) == CHUNK and len(chunks) > 3
    assert pa.ipc.open_stream(b"".join(bytes(c) for c in chunks)).read_all().equals(big)


def test_arrow_stream_with_dictionaries_and_without_rows() -> None:
    table = pa.table({"region": pa.array(["EU", "US", None, "EU"]).dictionary_encode(), "n": [1, 2, 3, 4]})
    chunks, done = _stream("arrow", table, 3)
    body = b"".join(bytes(c) for c in chunks)
    assert pa.ipc.open_stream(body).read_all().equals(table) and done == [(4, len(body) - 8)]
    empty = TABLE.slice(0, 0)
    chunks, done = _stream("arrow", empty, 10)
    reader = pa.ipc.open_stream(b"".join(bytes(c) for c in chunks))
    assert reader.schema.equals(TABLE.schema, check_metadata=True) and reader.read_all().num_rows == 0
    assert done[0][0] == 0


def test_other_formats_round_trip_and_count_their_bytes() -> None:
    chunks, done = _stream("csv", TABLE.select(["id", "name"]), 1000)
    body = b"".join(bytes(c) for c in chunks)
    assert pacsv.read_csv(io.BytesIO(body)).num_rows == 5000 and done == [(5000, len(body))]
    chunks, done = _stream("jsonl", TABLE.slice(0, 3), 2)
    lines = [json.loads(line) for line in b"".join(bytes(c) for c in chunks).decode().splitlines()]
    assert lines[0] == {"id": 0, "name": None, "tags": None} and len(lines) == 3


def test_the_end_marker_waits_for_finish() -> None:
    reader = pa.RecordBatchReader.from_batches(TABLE.schema, TABLE.to_batches(1000))

    def refuse(rows: int, nbytes: int) -> None:
        raise RuntimeError("audit store down")

    chunks = []
    with pytest.raises(RuntimeError):
        for c in encode("arrow", reader, refuse):
            chunks.append(bytes(c))
    body = b"".join(chunks)
    assert body == _writer_bytes(TABLE, 1000)[:-8]  # every batch, but no end-of-stream marker


# -- the implicit row cap ------------------------------------------------------------------------


@pytest.fixture
def capped(world):
    edit(world.config, "data_root: data", "data_root: data\nmax_rows: 100")
    s = start_server(world, "--pg-port", "0")
    yield s
    stop_server(s)


def test_a_read_without_limit_is_refused_or_cut_at_max_rows_never_truncated(capped) -> None:
    world, url = capped.world, capped.url
    rows = f"{url}/v1/datasets/patients/rows"
    bob = {**world.auth("bob"), "X-Purpose": "model-training"}
    alice = {**world.auth("alice"), "X-Purpose": "analytics"}

    # bob has no row filter: the Parquet footers say 2,000 rows > 100, so refused before any data
    body = assert_problem(httpx.get(rows, headers=bob), 413, "limit-exceeded")
    assert body["limit"] == 100 and "2000 rows" in body["detail"] and "limit" in body["detail"]
    # a limit the client chose is a request, not a truncation
    r = httpx.get(rows, headers=bob, params={"limit": 100})
    assert r.status_code == 200 and pa.ipc.open_stream(r.content).read_all().num_rows == 100

    # alice's plain read is served from her plan's masked materialization, whose row count is
    # known: refused before any byte, exactly like bob's
    assert expected(world, "alice", "patients", "analytics").num_rows > 100
    body = assert_problem(httpx.get(rows, headers=alice), 413, "limit-exceeded")
    assert body["limit"] == 100
    # a client filter hides the count (it runs on the masked view as it streams): the cap is
    # found on the way; before the first byte has left (the first MiB is held back), that is
    # the same 413 (a stream cut under way: test_a_read_cut_at_max_rows_under_way_is_a_broken_stream)
    every = "region IS NOT NULL OR region IS NULL"
    assert expected(world, "alice", "patients", "analytics", filter=every).num_rows > 100
    body = assert_problem(httpx.get(rows, headers=alice, params={"filter": every}), 413, "limit-exceeded")
    assert body["limit"] == 100
    with Client(url, token=world.keys["alice"], purpose="analytics", retries=0) as c:
        with pytest.raises(LimitExceeded):
            c.read("patients", filter=every)
        with pytest.raises(LimitExceeded):
            list(c.stream("patients", filter=every))
        with Client(url, token=world.keys["bob"], purpose="model-training", retries=0) as b, \
                pytest.raises(LimitExceeded):
            b.read("patients")
        # at most max_rows rows: complete, whoever filters
        small = "region = 'EU' AND zip = '021'"
        want = expected(world, "alice", "patients", "analytics", filter=small)
        assert 0 < want.num_rows <= 100
        assert c.read("patients", filter=small).equals(want)

    carol = {**world.auth("carol"), "X-Purpose": "governance"}
    records = httpx.get(f"{url}/v1/audit", headers=carol, params={"limit": 1000}).json()["records"]
    reads = [r for r in records if r["action"] == "read" and r["dataset"] == "patients"]
    # every 413 here was sent before any byte of data: a refusal, recorded as one
    capped_reads = [r for r in reads if r["status"] == 413]
    assert len(capped_reads) >= 5 and {r["outcome"] for r in capped_reads} == {"denied"}
    assert all("limit-exceeded" in r["detail"] for r in capped_reads)


# -- clients that leave before the first byte --------------------------------------------------


def test_a_read_cut_at_max_rows_under_way_is_a_broken_stream(world) -> None:
    """Once bytes have left, a read that reaches max_rows is cut without its end marker, exactly
    like a storage failure midway: the client can tell it from a complete answer."""
    data = world.directory / "data"
    (data / "big").mkdir()
    table = pa.concat_tables([pq.read_table(data / "patients.parquet")] * 8)  # 16,000 rows
    for i in range(5):  # 80,000 rows, about 28,000 in alice's region: megabytes before the cut
        pq.write_table(table, data / "big" / f"part-{i}.parquet")
    edit(world.directory / "policies" / "catalog.yaml", "location: patients.parquet", "location: big")
    edit(world.config, "data_root: data", "data_root: data\nmax_rows: 20000\nmaterialize_on_read: false")
    s = start_server(world, "--pg-port", "0")
    try:
        every = "region IS NOT NULL OR region IS NULL"  # hides the count from the footers
        alice = {**world.auth("alice"), "X-Purpose": "analytics"}
        with httpx.stream("GET", f"{s.url}/v1/datasets/patients/rows", headers=alice,
                          params={"filter": every, "format": "jsonl"}) as r:
            assert r.status_code == 200 and "content-length" not in r.headers
            got = 0
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in r.iter_raw():
                    got += len(chunk)
            assert got > 1 << 20
        rid = r.headers["x-request-id"]
        with Client(s.url, token=world.keys["alice"], purpose="analytics", retries=0) as c, \
                pytest.raises(StreamInterrupted):
            c.read("patients", filter=every)
        # bytes had left: the record says the stream was aborted, at the cap
        carol = {**world.auth("carol"), "X-Purpose": "governance"}
        records = httpx.get(f"{s.url}/v1/audit", headers=carol, params={"limit": 1000}).json()["records"]
        [cut] = [x for x in records if x["request_id"] == rid]
        assert (cut["outcome"], cut["status"]) == ("aborted", 413) and "limit-exceeded" in cut["detail"]
    finally:
        stop_server(s)


def test_a_small_read_commits_one_record_and_a_large_one_reserves_before_its_first_byte(world) -> None:
    """/rows defers its audit reservation (admit(defer_reserve=True)): a body held back whole
    commits its ok record before it leaves, so it needs no pending row; a body that streams on
    has its pending row committed before the first byte leaves, there while it streams."""
    import sqlite3

    data = world.directory / "data"
    # 160,000 rows, ~37 MB of JSON lines: far more than loopback socket buffers hold, so the
    # gateway is still sending (not yet recorded) when the client has its first chunk
    pq.write_table(pa.concat_tables([pq.read_table(data / "patients.parquet")] * 80), data / "patients.parquet")
    s = start_server(world, "--pg-port", "0")
    db = world.directory / "state" / "audit.db"

    def pending(rid: str) -> int:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM audit_pending WHERE request_id = ?", (rid,)).fetchone()[0]

    def recorded(rid: str) -> list[tuple]:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT outcome, status FROM audit_log WHERE request_id = ?", (rid,)).fetchall()

    def reservations(rid: str) -> int:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM reserved WHERE request_id = ?", (rid,)).fetchone()[0]

    try:
        # every reservation the gateway commits, kept after the request's append clears it (the
        # tables exist once the gateway has written its first record)
        bob = {**world.auth("bob"), "X-Purpose": "research"}
        assert httpx.get(f"{s.url}/v1/datasets", headers=bob).status_code == 200
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE reserved (request_id TEXT)")
            con.execute("CREATE TRIGGER keep_reserved AFTER INSERT ON audit_pending "
                        "BEGIN INSERT INTO reserved VALUES (NEW.request_id); END")
        small = httpx.get(f"{s.url}/v1/datasets/patients/rows", headers=bob, params={"limit": 20, "format": "jsonl"})
        assert small.status_code == 200 and small.text.count("\n") == 20
        rid = small.headers["x-request-id"]
        assert recorded(rid) == [("ok", 200)] and reservations(rid) == 0  # one commit: its record
        with httpx.stream("GET", f"{s.url}/v1/datasets/patients/rows", headers=bob,
                          params={"format": "jsonl"}) as r:
            assert r.status_code == 200 and "content-length" not in r.headers
            rid = r.headers["x-request-id"]
            chunks = r.iter_raw()
            first = next(chunks)
            assert first and pending(rid) == 1 and recorded(rid) == []  # reserved, still streaming
            rest = b"".join(chunks)
        assert (first + rest).count(b"\n") == 160_000
        assert recorded(rid) == [("ok", 200)] and pending(rid) == 0 and reservations(rid) == 1
        # the store refuses the reservation: the large read fails before its first byte
        with sqlite3.connect(db) as con:
            con.execute("DROP TABLE audit_pending")
        refused = httpx.get(f"{s.url}/v1/datasets/patients/rows", headers=bob, params={"format": "jsonl"})
        assert refused.status_code == 503 and refused.json()["type"] == "urn:govern:problem:audit-unavailable"
        assert "k1:" not in refused.text and "EU" not in refused.text
    finally:
        stop_server(s)


def _abandon(url: str, request: bytes) -> None:
    """Send ``request`` and close the connection without reading a byte of the answer. Corked,
    so the request and the close leave together: a client descheduled between the two would
    otherwise close after the gateway has sent the answer, which is not an abandoned read."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        s.sendall(request)


def _http(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _handled(url: str, route: str) -> float:
    """How many requests to ``route`` the gateway has finished (its own metrics)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("govern_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.1)


def test_a_client_gone_before_the_first_byte_gives_back_its_read_slot(world) -> None:
    """Regression: the read slot was taken before the response started and given back by the
    body generator, which never runs when the client has already left."""
    edit(world.config, "data_root: data", "data_root: data\nmax_concurrent_reads: 2\nqueue_timeout: 1")
    s = start_server(world, "--pg-port", "0")
    try:
        bob = {**world.auth("bob"), "X-Purpose": "model-training"}
        rows_path = "/v1/datasets/patients/rows"
        ids = [f"abandoned-read-{i}" for i in range(3)]  # more than the two slots
        for n, rid in enumerate(ids, 1):
            _abandon(s.url, _http("GET", rows_path, {**bob, "X-Request-Id": rid}))
            _wait(lambda n=n: _handled(s.url, "/v1/datasets/{name}/rows") >= n, f"abandoned read {n} handled")

        # both slots are free: two reads at once stream, neither is refused for lack of a slot
        with ExitStack() as stack:
            streams = [stack.enter_context(httpx.stream("GET", s.url + rows_path, headers=bob, timeout=30))
                       for _ in range(2)]
            assert [r.status_code for r in streams] == [200, 200]
            tables = [pa.ipc.open_stream(r.read()).read_all() for r in streams]
        assert [t.num_rows for t in tables] == [2000, 2000]

        # and each abandoned read has its one audit record
        carol = {**world.auth("carol"), "X-Purpose": "governance"}

        def audited() -> dict[str, dict]:
            records = httpx.get(f"{s.url}/v1/audit", headers=carol, params={"limit": 1000}).json()["records"]
            return {r["extra"].get("client_request_id"): r for r in records
                    if r["extra"].get("client_request_id") in ids}

        _wait(lambda: len(audited()) == len(ids), "an audit record for every abandoned read")
        assert {(r["outcome"], r["status"]) for r in audited().values()} == {("aborted", 499)}
    finally:
        stop_server(s)


@pytest.mark.parametrize(("path", "request_body"), [
    ("/v1/sql", {"sql": "select region, count(*) as n from patients group by 1", "format": "arrow"}),
    pytest.param("/v1/datasets/patients/encrypted", {"columns": ["charges"], "limit": 100},
                 marks=pytest.mark.skipif(importlib.util.find_spec("tenseal") is None, reason="needs tenseal")),
])
def test_a_stream_whose_client_left_before_the_first_byte_gives_back_its_read_slot(world, path: str,
                                                                                   request_body: dict) -> None:
    """The same for the POST routes that stream (audited_stream), at the ASGI level: uvicorn
    drops a request body that arrives together with the client's FIN, so over a socket the
    request would never start. Here the app gets the whole body, and then the disconnect,
    before its response starts."""
    from govern.config import load_settings
    from govern.server.app import create_app

    settings = load_settings(world.config, watch_policies=False, max_concurrent_reads=1, queue_timeout=1)
    app = create_app(settings, sql_service=shared_sql_service(settings))
    body = json.dumps(request_body).encode()
    headers = [(b"host", b"test"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"authorization", world.auth("bob")["Authorization"].encode()), (b"x-purpose", b"model-training")]

    async def call(request_id: str, leave: bool) -> list[dict]:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 8000), "headers": [*headers, (b"x-request-id", request_id.encode())]}
        sent: list[dict] = []
        delivered = anyio.Event()

        async def receive() -> dict:
            if not delivered.is_set():
                delivered.set()
                return {"type": "http.request", "body": body, "more_body": False}
            if not leave:
                await anyio.sleep_forever()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent

    for i in range(3):
        sent = anyio.run(call, f"abandoned-read-{i}", True)
        assert not any(m["type"] == "http.response.body" and m.get("body") for m in sent)  # nothing went out
    sent = anyio.run(call, "kept-read", False)  # the one slot is free
    assert sent[0]["status"] == 200
    data = b"".join(bytes(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")
    assert pa.ipc.open_stream(data).read_all().num_rows > 0
    records = app.state.gateway.audit.records(limit=1000)
    outcome = {r.extra.get("client_request_id"): (r.outcome, r.status) for r in records}
    assert [outcome.get(f"abandoned-read-{i}") for i in range(3)] == [("aborted", 499)] * 3
    assert outcome["kept-read"] == ("ok", 200)


# -- JSON lines: one encoder for the stream, the same text as json.dumps per row ------------------


_VALUES = {
    pa.string(): st.text(max_size=6),
    pa.binary(): st.binary(max_size=6),
    pa.int64(): st.integers(-(2**63), 2**63 - 1),
    pa.float64(): st.floats(allow_nan=True, allow_infinity=True),
    pa.date32(): st.dates(),
    pa.timestamp("us", tz="UTC"): st.datetimes(timezones=st.just(__import__("datetime").timezone.utc)),
    pa.list_(pa.binary()): st.lists(st.binary(max_size=3), max_size=2),
}


@st.composite
def _tables(draw) -> pa.Table:
    types = draw(st.lists(st.sampled_from(list(_VALUES)), min_size=1, max_size=4))
    n = draw(st.integers(0, 5))
    columns = {}
    for i, t in enumerate(types):
        values = draw(st.lists(st.none() | _VALUES[t], min_size=n, max_size=n))
        array = pa.array(values, t)
        if t in (pa.string(), pa.binary()) and draw(st.booleans()):
            array = array.dictionary_encode()
        columns[f"c{i}"] = array
    return pa.table(columns)


@hsettings(max_examples=80, deadline=None)
@given(_tables())
def test_json_lines_are_json_dumps_of_each_row(table: pa.Table) -> None:
    """Property: the stream's text is, row by row, ``json.dumps(row, default=str,
    ensure_ascii=False)`` with top-level bytes as hex (nested bytes through ``str``, as ever)."""
    def reference(row: dict) -> str:
        return json.dumps({k: v.hex() if isinstance(v, bytes) else v for k, v in row.items()},
                          default=str, ensure_ascii=False)

    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))
    got = b"".join(bytes(c) for c in encode("jsonl", reader, lambda rows, size: None)).decode()
    assert got == "".join(reference(r) + "\n" for r in table.to_pylist())
