"""Fragment tickets across the fleet: a Spark job's scan manifest comes from one gateway, and its
executors fetch fragments from whichever instance the load balancer picks. A ticket is sealed
under the shared key ring, so every instance redeems it, serves exactly the plan's rows, and
records the fetch in the one audit chain under the scan that issued it; a tampered ticket is
refused everywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import psycopg
import pyarrow as pa
import pytest

from tests.fleet.cluster import Cluster, Fleet
from tests.gateway import World

pytestmark = pytest.mark.xdist_group("fleet-tickets")  # one fleet for the module's tests

PREFIX = "tickets_"


@pytest.fixture(scope="module")
def fleet(fleet_world: World, cluster: Cluster) -> Iterator[Fleet]:
    f = Fleet.start(fleet_world, cluster.url, 2, prefix=PREFIX, extra=(("--no-watch",), ("--no-watch",)))
    yield f
    f.close()


def manifest(fleet: Fleet, world: World, body: dict) -> dict:
    r = httpx.post(f"{fleet.servers[0].url}/v1/datasets/patients/scan", json=body, timeout=60,
                   headers={**world.auth("bob"), "X-Purpose": "model-training"})
    assert r.status_code == 200, r.text
    return r.json()


def rows(fleet: Fleet, world: World, **params: str) -> pa.Table:
    r = httpx.get(f"{fleet.servers[0].url}/v1/datasets/patients/rows", params=params, timeout=60,
                  headers={**world.auth("bob"), "X-Purpose": "model-training"})
    assert r.status_code == 200, r.text
    return pa.ipc.open_stream(r.content).read_all()


def fetch(server_url: str, fragment: dict, ticket: str | None = None) -> httpx.Response:
    return httpx.get(server_url + fragment["url"], timeout=60,
                     headers={"Authorization": f"Bearer {ticket or fragment['ticket']}"})


@pytest.mark.parametrize("body", [{}, {"filters": ["region = 'EU'"]}], ids=["materialized", "filtered"])
def test_a_manifest_from_one_instance_is_served_by_another(fleet: Fleet, fleet_world: World, cluster: Cluster,
                                                           body: dict) -> None:
    m = manifest(fleet, fleet_world, body)
    other = fleet.servers[1].url
    responses = [fetch(other, f) for f in m["fragments"]]
    assert [r.status_code for r in responses] == [200] * len(m["fragments"])
    got = pa.concat_tables([pa.ipc.open_stream(r.content).read_all() for r in responses])
    want = rows(fleet, fleet_world, **({"filter": "region = 'EU'"} if body else {}))
    assert got.num_rows == want.num_rows > 0
    assert got.sort_by("patient_id").equals(want.sort_by("patient_id"))
    with psycopg.connect(cluster.url) as conn:
        records = conn.execute(f"SELECT request_id, action, outcome, principal, plan_hash, extra "
                               f"FROM {PREFIX}audit_log WHERE request_id = ANY(%s)",
                               ([r.headers["x-request-id"] for r in responses],)).fetchall()
    assert len(records) == len(responses)
    for _rid, _action, outcome, principal, plan_hash, extra in records:
        assert (outcome, principal, plan_hash) == ("ok", "bob", m["plan_hash"])
        assert json.loads(extra)["scan"] == m["scan_id"]  # the fetch is filed under its scan


def test_a_tampered_ticket_is_refused_by_every_instance(fleet: Fleet, fleet_world: World) -> None:
    m = manifest(fleet, fleet_world, {})
    ticket = m["fragments"][0]["ticket"]
    forged = ticket[:-2] + ("AA" if not ticket.endswith("AA") else "BB")
    for server in fleet.servers:
        r = fetch(server.url, m["fragments"][0], forged)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", r.text
        assert r.json()["detail"] == "invalid ticket"
