"""``govern_dask.read_dataset`` through a real ``govern serve`` on loopback.

For every demo principal and purpose the DataFrame computes to exactly what the gateway's
/rows returns (schema and values), over several partitions, with Dask's threaded and
process schedulers; columns and filters reach the gateway and are audited with the scan; a
filter on a masked column, a refused purpose and a missing key raise at ``read_dataset``; the
graph a scheduler ships holds tickets only (no API key, masking key or raw value); a ticket
gone stale fails its partition with the gateway's refusal; a body cut short never computes."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests.gateway (a real govern serve) when run on their own
    sys.path.insert(0, str(ROOT))

from govern_dask import Fragment, GatewayError, read_dataset, read_fragment  # noqa: E402

from govern.config import load_settings  # noqa: E402
from tests.gateway import Server, World, new_data_version, start_server, stop_server  # noqa: E402
from tests.leaks import Leaks  # noqa: E402
from tests.rawhttp import RawServer, arrow_stream, chunked, head  # noqa: E402

pytestmark = pytest.mark.xdist_group("dask")  # one gateway for the module; the stale-ticket test edits it

WHO = {"alice": "analytics", "bob": "model-training", "carol": "governance", "dave": "treatment"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Server]:
    """A real gateway over a demo world whose files hold 200-row row groups, cut into 300-row
    fragments (several partitions per dataset)."""
    from govern.demo import create_demo

    demo = create_demo(tmp_path_factory.mktemp("dask-demo"), rows=1_000, seed=7)
    for name in ("patients", "encounters"):
        path = demo.directory / "data" / f"{name}.parquet"
        pq.write_table(pq.read_table(path), path, row_group_size=200)
    with (demo.directory / "govern.yaml").open("a") as fh:
        fh.write("fragment_rows: 300\nmaterialize_max_bytes: 0\n")
    server = start_server(World(demo.directory, dict(demo.api_keys)), "--pg-port", "0", "--flight-port", "0")
    yield server
    stop_server(server)


def rows(server: Server, who: str, dataset: str, purpose: str, **params: str) -> pa.Table:
    r = httpx.get(f"{server.url}/v1/datasets/{dataset}/rows", params=params, timeout=60,
                  headers={"Authorization": f"Bearer {server.world.keys[who]}", "X-Purpose": purpose})
    assert r.status_code == 200, r.text
    return pa.ipc.open_stream(r.content).read_all()


def arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)


def audit(server: Server, who: str) -> list[dict]:
    r = httpx.get(f"{server.url}/v1/audit", params={"principal": who, "limit": 1000}, timeout=30,
                  headers={"Authorization": f"Bearer {server.world.keys['carol']}", "X-Purpose": "governance"})
    assert r.status_code == 200, r.text
    return r.json()["records"]


@pytest.mark.parametrize("dataset", ["patients", "encounters"])
def test_every_demo_principal_computes_exactly_what_rows_returns(gateway, dataset) -> None:
    for who, purpose in WHO.items():
        ddf = read_dataset(gateway.url, dataset, purpose, api_key=gateway.world.keys[who])
        assert ddf.npartitions > 1, who
        expected = rows(gateway, who, dataset, purpose)
        got = arrow(ddf.compute())
        assert got.schema == expected.schema, who
        assert got.equals(expected), who


def test_partitions_run_in_other_processes_with_the_same_result(gateway) -> None:
    """The process scheduler pickles each task and runs it in a fresh process: what a worker
    of a cluster gets is the task alone."""
    ddf = read_dataset(gateway.url, "patients", "model-training", api_key=gateway.world.keys["bob"])
    assert arrow(ddf.compute(scheduler="processes")).equals(rows(gateway, "bob", "patients", "model-training"))


def test_columns_and_filters_reach_the_gateway_and_its_audit(gateway) -> None:
    ddf = read_dataset(gateway.url, "patients", "governance", api_key=gateway.world.keys["carol"],
                       columns=["patient_id", "region", "email"], filters=["region = 'EU'"])
    expected = rows(gateway, "carol", "patients", "governance", columns="patient_id,region,email",
                    filter="region = 'EU'")
    assert 0 < expected.num_rows < rows(gateway, "carol", "patients", "governance").num_rows
    assert arrow(ddf.compute()).equals(expected)
    [scan] = [r for r in audit(gateway, "carol") if r["extra"].get("route") == "scan"][-1:]
    assert scan["extra"]["columns"] == ["patient_id", "region", "email"]
    assert scan["extra"]["filters"] == ["region = 'EU'"]
    fragments = [r for r in audit(gateway, "carol")
                 if r["extra"].get("route") == "fragment" and r["extra"].get("scan") == scan["request_id"]]
    assert len(fragments) == scan["extra"]["fragments"] == ddf.npartitions
    assert all(r["outcome"] == "ok" for r in fragments)


def test_refusals_raise_at_read_not_at_compute(gateway, monkeypatch) -> None:
    keys = gateway.world.keys
    with pytest.raises(GatewayError, match=r"400 .*masked"):  # bob's ssn is masked: no filter on it
        read_dataset(gateway.url, "patients", "model-training", api_key=keys["bob"], filters=["ssn = '1'"])
    with pytest.raises(GatewayError, match=r"403 "):  # alice holds no grant for treatment
        read_dataset(gateway.url, "patients", "treatment", api_key=keys["alice"])
    with pytest.raises(GatewayError, match=r"401 "):
        read_dataset(gateway.url, "patients", "analytics", api_key="gk_not-a-key")
    monkeypatch.delenv("GOVERN_API_KEY", raising=False)
    with pytest.raises(GatewayError, match="GOVERN_API_KEY"):
        read_dataset(gateway.url, "patients", "analytics")
    monkeypatch.setenv("GOVERN_API_KEY", keys["alice"])
    assert read_dataset(gateway.url, "patients", "analytics").npartitions > 1


def test_the_graph_holds_tickets_only(gateway) -> None:
    """What a scheduler ships to workers, prints and shows in its dashboard: the pickled graph
    and its tasks' reprs carry no API key, masking key or raw value; only fragment tickets."""
    world = gateway.world
    ddf = read_dataset(gateway.url, "patients", "model-training", api_key=world.keys["bob"])
    graph = dict(ddf.__dask_graph__())
    shipped = pickle.dumps(graph)
    key_file = load_settings(world.config).masking_key_file
    assert key_file is not None and key_file.exists()
    secrets = [k.encode() for k in world.keys.values()] + [key_file.read_bytes().strip()]
    assert not [s for s in secrets if s in shipped]
    Leaks.from_world(world.directory).assert_none(shipped.decode("latin-1"), repr(graph))
    fragments = [a for task in graph.values() for a in task.args if isinstance(a, Fragment)]
    assert len(fragments) == ddf.npartitions
    assert all(f.ticket.encode() in shipped and f.ticket not in repr(graph) for f in fragments)


def test_a_stale_ticket_fails_its_partition_with_the_gateways_refusal(gateway) -> None:
    ddf = read_dataset(gateway.url, "encounters", "analytics", api_key=gateway.world.keys["alice"])
    with (new_data_version(gateway.world.directory / "data" / "encounters.parquet", row_group_size=200),
          pytest.raises(GatewayError, match=r"403.*ticket-stale.*data changed")):
        ddf.compute()
    refused = [r for r in audit(gateway, "alice") if r["extra"].get("route") == "fragment" and r["outcome"] == "denied"]
    assert refused and refused[-1]["status"] == 403


def test_a_body_cut_short_never_computes() -> None:
    """A gateway whose answer ends early, at an Arrow message boundary (where the stream format
    cannot tell), with a Content-Length or chunked framing: the partition raises."""
    table = pa.table({"id": list(range(30)), "name": [f"n{i}" for i in range(30)]})
    body, boundary = arrow_stream(table, 10)
    stream = "application/vnd.apache.arrow.stream"
    server = RawServer()
    try:
        fragment = Fragment(server.url + "/v1/fragments/0", "gt1.ticket", timeout=10)
        server.answer = head("200 OK", stream, content_length=str(len(body))) + body
        assert pa.Table.from_pandas(read_fragment(fragment), preserve_index=False).to_pylist() == table.to_pylist()
        server.answer = head("200 OK", stream, content_length=str(len(body))) + body[:boundary]
        with pytest.raises(GatewayError, match="cut short"):
            read_fragment(fragment)
        server.answer = head("200 OK", stream, transfer_encoding="chunked") + chunked(body[:boundary], last=False)
        with pytest.raises(GatewayError, match="cut short"):
            read_fragment(fragment)
    finally:
        server.close()


def test_importing_the_adapter_loads_nothing_of_govern() -> None:
    """A Dask worker installs this package and its dependencies, not govern."""
    code = "import sys, govern_dask; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert "dask.dataframe" in loaded
    assert [m for m in loaded if m == "govern" or m.startswith(("govern.", "fastapi", "uvicorn", "opendp"))] == []


def test_a_manifest_without_fragments_computes_to_an_empty_frame_of_its_schema() -> None:
    """A dataset with no files (an empty partitioned folder) has no fragments; Dask has no
    partition-less frame, so the adapter gives one empty partition of the manifest's schema."""
    schema = pa.schema([("id", pa.int64()), ("region", pa.string())])
    manifest = json.dumps({"scan_id": "s1", "fragments": [],
                           "schema": base64.b64encode(schema.serialize().to_pybytes()).decode()}).encode()
    server = RawServer()
    try:
        server.answer = head("200 OK", "application/json", content_length=str(len(manifest))) + manifest
        ddf = read_dataset(server.url, "d", "p", api_key="gk_k")
        got = arrow(ddf.compute())
    finally:
        server.close()
    assert got.num_rows == 0 and got.schema == schema
