"""The unmodified ``delta-sharing`` client against a real ``govern serve``: listing, the table
version and metadata, ``load_as_pandas``, Arrow from the file URLs, HTTP Range on files, one
audit record per request, and no withheld column or raw value in any file a recipient gets."""

from __future__ import annotations

import json
import time

import delta_sharing
import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.model import local_principal
from tests.sharing.conftest import RECIPIENTS, problem, read_arrow, rows


def test_listing_shows_each_recipient_its_share_and_readable_tables(shared) -> None:
    client = delta_sharing.SharingClient(str(shared.profile("bob", "research")))
    assert [s.name for s in client.list_shares()] == ["research"]
    [share] = client.list_shares()
    assert [s.name for s in client.list_schemas(share)] == ["default"]
    tables = client.list_all_tables()
    assert sorted(t.name for t in tables) == ["encounters", "patients"]
    assert {(t.share, t.schema) for t in tables} == {("research", "default")}
    # eve has no grant: a profile cannot even be written for her purpose-less principal
    from tests.sharing.conftest import govern_cli

    done = govern_cli(shared.world, "sharing", "profile", "eve", "--purpose", "analytics", "-o", "eve.share")
    assert done.returncode != 0 and "purpose" in done.stderr


def test_load_as_pandas_and_arrow_equal_the_governed_read(shared, leaks) -> None:
    for who, purpose in RECIPIENTS:
        for table in ("patients", "encounters"):
            want = rows(shared.server, who, purpose, table)
            df = delta_sharing.load_as_pandas(shared.url(who, purpose, table))
            assert pa.Table.from_pandas(df, schema=want.schema, preserve_index=False).equals(want), (who, table)
            answer = shared.files(who, purpose, table)
            [action] = answer.add_files
            got = read_arrow(action.url)
            assert got.equals(want), (who, purpose, table)  # the Arrow path: identical, types included
            assert json.loads(action.stats) == {"numRecords": want.num_rows}
            assert action.size > 0
            assert answer.delta_table_version == delta_sharing.get_table_version(shared.url(who, purpose, table))


def test_metadata_is_the_masked_schema_with_a_version(shared) -> None:
    url = shared.url("alice", "analytics", "patients")
    meta = delta_sharing.get_table_metadata(url)
    fields = {f["name"]: f["type"] for f in json.loads(meta.schema_string)["fields"]}
    gov = Governor(load_settings(shared.world.config))
    plan = gov.plan(local_principal(gov.state.policy, "alice"), "patients", "analytics")
    assert list(fields) == plan.visible_names and "ssn" not in fields
    assert fields["charges"] == "double" and fields["birth_date"] == "date"
    assert meta.format.provider == "parquet" and meta.partition_columns == []
    assert delta_sharing.get_table_protocol(url).min_reader_version == 1
    # the same plan on the same data: the same version and the same file id, query after query
    first, second = shared.files("alice", "analytics", "patients"), shared.files("alice", "analytics", "patients")
    assert first.delta_table_version == second.delta_table_version
    assert first.add_files[0].id == second.add_files[0].id
    assert first.add_files[0].id != shared.files("bob", "research", "patients").add_files[0].id
    # the raw answer: the version header, one file with its expiry (the client does not parse it)
    token = json.loads(shared.profile("alice", "analytics").read_text())["bearerToken"]
    r = httpx.post(f"{shared.server.url}/delta-sharing/shares/analytics/schemas/default/tables/patients/query",
                   json={"limitHint": 5, "predicateHints": ["region = 'US'"]},
                   headers={"Authorization": f"Bearer {token}"})
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert int(r.headers["delta-table-version"]) == first.delta_table_version
    assert [next(iter(line)) for line in lines] == ["protocol", "metaData", "file"]
    expires = lines[2]["file"]["expirationTimestamp"] / 1000
    assert time.time() < expires <= time.time() + 900 + 5  # sharing_file_ttl
    assert lines[1]["metaData"]["numFiles"] == 1 and lines[1]["metaData"]["size"] == lines[2]["file"]["size"]


def test_files_answer_range_requests(shared) -> None:
    [action] = shared.files("bob", "research", "patients").add_files
    head = httpx.head(action.url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == action.size
    assert head.headers["accept-ranges"] == "bytes"
    first = httpx.get(action.url, headers={"Range": "bytes=0-3"})
    assert first.status_code == 206 and first.content == b"PAR1"
    assert first.headers["content-range"] == f"bytes 0-3/{action.size}"
    tail = httpx.get(action.url, headers={"Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == b"PAR1"
    middle = httpx.get(action.url, headers={"Range": "bytes=10-"})
    whole = httpx.get(action.url)
    assert whole.status_code == 200 and len(whole.content) == action.size and middle.content == whole.content[10:]
    outside = httpx.get(action.url, headers={"Range": f"bytes={action.size}-"})
    assert outside.status_code == 416 and problem(outside) == "range-not-satisfiable"


def test_every_request_and_every_file_fetch_leaves_one_record(shared) -> None:
    before = shared.records()[-1].seq
    url = shared.url("bob", "model-training", "encounters")
    delta_sharing.load_as_pandas(url)
    [action] = shared.files("bob", "model-training", "encounters").add_files
    r = httpx.get(action.url, headers={"Range": "bytes=0-3"})
    new = [rec for rec in shared.records() if rec.seq > before]
    ids = [rec.request_id for rec in new]
    assert len(ids) == len(set(ids))  # one record per request
    files = [rec for rec in new if rec.extra.get("route") == "sharing-file"]
    assert files and all((rec.principal, rec.purpose, rec.dataset, rec.action) ==
                         ("bob", "model-training", "encounters", "read") for rec in files)
    assert {rec.plan_hash for rec in files} == {action.id and files[0].plan_hash} and files[0].plan_hash
    [ranged] = [rec for rec in new if rec.request_id == r.headers["x-request-id"]]
    assert ranged.extra["range"] == [0, 3] and ranged.bytes == 4 and ranged.outcome == "ok"
    routes = {rec.extra.get("route") for rec in new}
    assert {"sharing-query", "sharing-metadata", "sharing-file"} <= routes


def test_no_file_a_recipient_can_fetch_holds_a_withheld_column_or_a_raw_value(shared, leaks) -> None:
    gov = Governor(load_settings(shared.world.config))
    for who, purpose in (("alice", "analytics"), ("bob", "research"), ("bob", "model-training")):
        for table in ("patients", "encounters"):
            plan = gov.plan(local_principal(gov.state.policy, who), table, purpose)
            withheld = [c.name for c in plan.columns if not c.visible]
            masked = [c.name for c in plan.columns if c.mask is not None]
            for action in shared.files(who, purpose, table).add_files:
                data = httpx.get(action.url).content
                leaks.assert_none(data.decode("latin-1"))  # the bytes themselves, footer included
                parquet = pq.read_table(pa.BufferReader(data))
                leaks.assert_none(str(parquet.to_pylist()))
                assert parquet.schema.names == plan.visible_names, (who, table)
                for name in withheld:
                    assert name.encode() not in data, (who, table, name)  # not even in the footer
                assert masked or table == "encounters"
