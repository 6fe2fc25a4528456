"""Scan manifests and fragment tickets (POST /v1/datasets/{name}/scan, GET /v1/fragments/{id}).

The fragments of a manifest, fetched with their tickets only, give exactly what /rows gives;
the job is audited as one scan plus one record per fragment carrying the scan id; a ticket
replayed by someone else, for another fragment, after a policy or data change, or after expiry
is refused and audited; filters on masked columns are refused."""

from __future__ import annotations

import base64
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.identity.principal import Principal
from govern.identity.tickets import Ticket, issue
from govern.policy.load import load_policy
from tests.conftest import edit
from tests.gateway import World, make_client


@pytest.fixture
def split_world(world: World) -> World:
    """The world's patients file rewritten with 300-row row groups: several fragments."""
    path = world.directory / "data" / "patients.parquet"
    pq.write_table(pq.read_table(path), path, row_group_size=300)
    return world


@pytest.fixture
def gw(split_world: World):
    """Fragments of the dataset's own files (the materialization store off)."""
    with make_client(split_world, fragment_rows=500, materialize_max_bytes=0) as c:
        yield c


@pytest.fixture
def gw_materialized(split_world: World):
    """Fragments of the plan's masked materialization (one file, 300-row row groups rewritten
    by the store as it likes)."""
    with make_client(split_world, fragment_rows=1) as c:
        yield c


def headers(world: World, who: str, purpose: str) -> dict[str, str]:
    return {**world.auth(who), "X-Purpose": purpose}


def manifest(c, world: World, who: str = "alice", purpose: str = "analytics", **body) -> dict:
    r = c.post("/v1/datasets/patients/scan", headers=headers(world, who, purpose), json=body)
    assert r.status_code == 200, r.text
    return r.json()


def fetch(c, frag: dict, ticket: str | None = None):
    return c.get(frag["url"], headers={"Authorization": f"Bearer {ticket or frag['ticket']}"})


def table_of(responses) -> pa.Table:
    batches = []
    schema = None
    for r in responses:
        assert r.status_code == 200, r.text
        reader = pa.ipc.open_stream(r.content)
        schema = reader.schema
        batches += list(reader)
    return pa.Table.from_batches(batches, schema=schema)


def rows(c, world: World, who: str, purpose: str, **params) -> pa.Table:
    r = c.get("/v1/datasets/patients/rows", headers=headers(world, who, purpose), params=params)
    assert r.status_code == 200, r.text
    return pa.ipc.open_stream(r.content).read_all()


def records(c, **filters) -> list:
    return c.app.state.gateway.audit.records(limit=1000, **filters)


@pytest.mark.parametrize(("who", "purpose"), [("alice", "analytics"), ("bob", "research"),
                                              ("carol", "governance"), ("dave", "treatment")])
def test_fragments_give_exactly_the_rows(gw, split_world, who, purpose) -> None:
    m = manifest(gw, split_world, who, purpose)
    assert len(m["fragments"]) == 4  # 2,000 rows in 300-row groups, cut at >= 500 rows
    got = table_of(fetch(gw, f) for f in m["fragments"])
    expected = rows(gw, split_world, who, purpose)
    assert got.schema.equals(expected.schema) and got.equals(expected)
    assert pa.ipc.read_schema(pa.py_buffer(base64.b64decode(m["schema"]))).equals(expected.schema)


def test_one_scan_record_and_one_per_fragment(gw, split_world) -> None:
    m = manifest(gw, split_world, columns=["zip", "region"])
    responses = [fetch(gw, f) for f in m["fragments"]]
    [scan] = records(gw, request_id=m["scan_id"])
    assert (scan.action, scan.outcome, scan.principal, scan.purpose) == ("read", "ok", "alice", "analytics")
    assert scan.extra["fragments"] == len(m["fragments"]) and scan.plan_hash == m["plan_hash"]
    for r in responses:
        [rec] = records(gw, request_id=r.headers["x-request-id"])
        assert (rec.outcome, rec.principal, rec.dataset, rec.extra["scan"]) == ("ok", "alice", "patients",
                                                                                 m["scan_id"])
        assert rec.plan_hash == m["plan_hash"] and rec.rows == pa.ipc.open_stream(r.content).read_all().num_rows
    assert table_of(responses).column_names == ["zip", "region"]


def test_an_api_key_or_nothing_opens_no_fragment(gw, split_world) -> None:
    m = manifest(gw, split_world)
    for h in ({}, split_world.auth("alice"), {"Authorization": "Bearer gt1.k1.x.y"}):
        r = gw.get(m["fragments"][0]["url"], headers=h)
        assert r.status_code == 401, r.text
        [rec] = records(gw, request_id=r.headers["x-request-id"])
        assert rec.outcome == "denied"


def test_a_ticket_opens_only_its_own_fragment(gw, split_world) -> None:
    m = manifest(gw, split_world)
    r = fetch(gw, m["fragments"][1], m["fragments"][0]["ticket"])
    assert r.status_code == 401 and r.json()["detail"] == "invalid ticket"
    [rec] = records(gw, request_id=r.headers["x-request-id"])
    assert rec.outcome == "denied" and rec.extra["ticket"]["subject"] == "0"


def test_a_ticket_rewritten_for_another_principal_is_refused(gw, split_world) -> None:
    """mallory (or alice) edits alice's ticket to name carol, who sees more: the seal breaks."""
    m = manifest(gw, split_world)
    text = m["fragments"][0]["ticket"]
    prefix, key_id, body, mac = text.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["p"]["n"] = "carol"
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    r = fetch(gw, m["fragments"][0], f"{prefix}.{key_id}.{forged_body}.{mac}")
    assert r.status_code == 401
    [rec] = records(gw, request_id=r.headers["x-request-id"])
    assert rec.outcome == "denied" and rec.extra["ticket"] == "bad seal"


def test_a_ticket_is_stale_after_a_policy_change(gw, split_world) -> None:
    m = manifest(gw, split_world)
    edit(split_world.directory / "policies" / "catalog.yaml", "region: {public_values: true}",
         "region: {public_values: true, tags: [quasi_identifier]}")
    gw.app.state.gateway.governor.swap_policy(load_policy(split_world.directory / "policies"))
    r = fetch(gw, m["fragments"][0])
    assert r.status_code == 403 and r.json()["type"].endswith("ticket-stale"), r.text
    [rec] = records(gw, request_id=r.headers["x-request-id"])
    assert rec.outcome == "denied" and rec.principal == "alice"


def test_a_ticket_is_refused_once_its_grant_is_revoked(gw, split_world) -> None:
    m = manifest(gw, split_world)
    edit(split_world.directory / "policies" / "policy.csv", "p, analyst, group:clinical, read, analytics, allow",
         "p, analyst, group:clinical, read, analytics, deny")
    gw.app.state.gateway.governor.swap_policy(load_policy(split_world.directory / "policies"))
    r = fetch(gw, m["fragments"][0])
    assert r.status_code == 403, r.text
    [rec] = records(gw, request_id=r.headers["x-request-id"])
    assert rec.outcome == "denied"


def test_a_ticket_is_stale_after_a_data_change(gw, split_world) -> None:
    m = manifest(gw, split_world)
    path = split_world.directory / "data" / "patients.parquet"
    time.sleep(0.01)
    pq.write_table(pq.read_table(path).slice(0, 1500), path, row_group_size=300)
    r = fetch(gw, m["fragments"][0])
    assert r.status_code == 403 and "data changed" in r.json()["detail"], r.text
    [rec] = records(gw, request_id=r.headers["x-request-id"])
    assert rec.outcome == "denied"


def test_an_expired_ticket_is_refused(gw, split_world) -> None:
    m = manifest(gw, split_world)
    gov = gw.app.state.gateway.governor
    principal = gw.app.state.gateway.authenticator.current(Principal("alice", source="api-key"))
    old = Ticket("fragment", principal, "analytics", "patients", m["plan_hash"], m["data_version"], "0",
                 int(time.time()) - 1, {"scan": "x", "fragment": {"file": "patients.parquet", "row_groups": [0, 2]},
                                        "columns": ["zip"], "filter": None})
    r = fetch(gw, m["fragments"][0], issue(old, gov.keys))
    assert r.status_code == 401 and r.json()["type"].endswith("ticket-expired"), r.text
    [rec] = records(gw, request_id=r.headers["x-request-id"])
    assert rec.outcome == "denied" and rec.extra["ticket"] == "expired"


def test_filters_only_on_unmasked_columns(gw, split_world) -> None:
    # alice: region kept; zip generalized, email reduced to its domain, charges noised
    for column, predicate in (("zip", "zip = '10001'"), ("email", "email LIKE 'a%'"),
                              ("charges", "charges > 100")):
        r = gw.post("/v1/datasets/patients/scan", headers=headers(split_world, "alice", "analytics"),
                    json={"filters": [predicate]})
        assert r.status_code == 400 and repr(column) in r.json()["detail"], r.text
        [rec] = records(gw, request_id=r.headers["x-request-id"])
        assert rec.outcome == "denied"
    m = manifest(gw, split_world, who="carol", purpose="governance", filters=["region = 'EU'"])
    got = table_of(fetch(gw, f) for f in m["fragments"])
    assert got.equals(rows(gw, split_world, "carol", "governance", filter="region = 'EU'"))
    assert 0 < got.num_rows < rows(gw, split_world, "carol", "governance").num_rows


@pytest.mark.parametrize(("who", "purpose"), [("alice", "analytics"), ("bob", "research")])
def test_fragments_of_the_masked_materialization(gw_materialized, split_world, who, purpose) -> None:
    gw = gw_materialized
    m = manifest(gw, split_world, who, purpose, columns=["zip", "region", "email"])
    [scan] = records(gw, request_id=m["scan_id"])
    assert scan.extra["materialization"]["file_id"]
    responses = [fetch(gw, f) for f in m["fragments"]]
    got = table_of(responses)
    expected = rows(gw, split_world, who, purpose, columns="zip,region,email")
    assert got.schema.equals(expected.schema) and got.equals(expected)
    for r in responses:
        [rec] = records(gw, request_id=r.headers["x-request-id"])
        assert rec.extra["materialization"]["file_id"] == scan.extra["materialization"]["file_id"]
        assert rec.extra["scan"] == m["scan_id"] and rec.plan_hash == m["plan_hash"]
    # a data change makes the materialized fragments' tickets stale as well
    path = split_world.directory / "data" / "patients.parquet"
    pq.write_table(pq.read_table(path).slice(0, 1000), path, row_group_size=300)
    r = fetch(gw, m["fragments"][0])
    assert r.status_code == 403 and "data changed" in r.json()["detail"]


PARQUET_FRAGMENT = "application/vnd.govern.parquet-fragment"


def stored_rows(r) -> pa.Table:
    """A stored-Parquet fragment decoded from what it claims to be: the body's first part at the
    byte span, the rest as the file's tail, every other byte garbage."""
    size = int(r.headers["x-govern-file-size"])
    begin, end = (int(v) for v in r.headers["x-govern-byte-span"].split("-"))
    first, stop = (int(v) for v in r.headers["x-govern-row-groups"].split("-"))
    body = r.content
    sparse = bytearray(b"\xa5" * size)
    sparse[:4] = b"PAR1"
    sparse[begin:end] = body[:end - begin]
    sparse[size - (len(body) - (end - begin)):] = body[end - begin:]
    return pq.ParquetFile(pa.BufferReader(bytes(sparse))).read_row_groups(list(range(first, stop)))


@pytest.mark.parametrize(("who", "purpose"), [("alice", "analytics"), ("bob", "research"), ("dave", "treatment")])
def test_fragments_as_stored_parquet_give_the_same_rows(gw_materialized, split_world, who, purpose) -> None:
    """A client that accepts the stored form gets each fragment's row groups of the masked
    materialization as stored (nothing decoded in the gateway) and the file's footer, with its
    Content-Length; decoded, they are the Arrow fragment's rows, and the record says what was
    sent."""
    gw = gw_materialized
    m = manifest(gw, split_world, who, purpose)
    arrow = table_of(fetch(gw, f) for f in m["fragments"])
    parts = []
    for f in m["fragments"]:
        r = gw.get(f["url"], headers={"Authorization": f"Bearer {f['ticket']}",
                                      "Accept": f"{PARQUET_FRAGMENT}, application/vnd.apache.arrow.stream"})
        assert r.status_code == 200 and r.headers["content-type"] == PARQUET_FRAGMENT, r.text
        # its size is known before a byte is read: told, so a client reads it in one piece and a
        # body cut short is seen as such
        assert r.headers["content-length"] == str(len(r.content)) and "transfer-encoding" not in r.headers
        parts.append(stored_rows(r))
        [rec] = records(gw, request_id=r.headers["x-request-id"])
        assert rec.outcome == "ok" and rec.extra["format"] == "parquet-fragment"
        assert rec.rows == parts[-1].num_rows and rec.bytes == len(r.content)
        assert rec.plan_hash == m["plan_hash"]
    assert pa.concat_tables(parts).equals(arrow, check_metadata=False)
    assert arrow.equals(rows(gw, split_world, who, purpose))


def test_a_fragment_of_some_columns_or_without_the_accept_header_is_arrow(gw_materialized, split_world) -> None:
    gw = gw_materialized
    accept = {"Accept": PARQUET_FRAGMENT}
    some = manifest(gw, split_world, "alice", "analytics", columns=["zip", "region"])["fragments"][0]
    r = gw.get(some["url"], headers={"Authorization": f"Bearer {some['ticket']}", **accept})
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"  # the file holds more columns
    assert pa.ipc.open_stream(r.content).read_all().column_names == ["zip", "region"]
    every = manifest(gw, split_world, "alice", "analytics")["fragments"][0]
    assert fetch(gw, every).headers["content-type"] == "application/vnd.apache.arrow.stream"


def test_a_stored_fragment_larger_than_a_chunk_tells_its_length(gw_materialized, split_world, monkeypatch) -> None:
    """A body of many chunks still says its size up front (it is the sum of stored ranges), so
    the client reads it in one piece and sees a body cut short as such."""
    monkeypatch.setattr("govern.server.streaming.CHUNK", 1024)  # a body above this streams
    f = manifest(gw_materialized, split_world, "bob", "research")["fragments"][0]
    r = gw_materialized.get(f["url"], headers={"Authorization": f"Bearer {f['ticket']}", "Accept": PARQUET_FRAGMENT})
    assert r.status_code == 200 and r.headers["content-type"] == PARQUET_FRAGMENT, r.text
    assert len(r.content) > 1024
    assert r.headers["content-length"] == str(len(r.content))
    assert stored_rows(r).num_rows == f["rows"]
    arrow = gw_materialized.get(f["url"], headers={"Authorization": f"Bearer {f['ticket']}"})
    assert "content-length" not in arrow.headers  # encoded as it goes: its size is not known
