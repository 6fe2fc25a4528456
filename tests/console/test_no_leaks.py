"""No console page shows a raw value the signed-in steward's own plan would mask.

Every page is rendered as the demo steward (carol, ``governance``) after the console has
something to show — reads with raw values in their filters, profiles of two data versions,
drift, a dry run, an accepted suggestion, DP charges — and searched for the demo's raw names,
e-mails, SSNs, phone numbers and birth dates (tests/leaks.py). That is stricter than carol's
plan: she may read e-mails in the clear, and no page shows those either."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq

from govern.policy.model import local_principal
from tests.console.helpers import PAGES, sign_in
from tests.gateway import make_client
from tests.leaks import Leaks


def test_no_page_shows_a_raw_value(world) -> None:
    leaks = Leaks.from_world(world.directory)
    raw = pq.read_table(world.directory / "data" / "patients.parquet").to_pydict()
    with make_client(world) as client:
        gw = client.app.state.gateway
        carol_plan = gw.governor.plan(local_principal(gw.governor.state.policy, "carol"), "patients", "governance")
        masked = {c.name for c in carol_plan.columns if c.action != "keep"}
        assert {"name", "ssn"} <= masked  # what the steward's own plan hides
        alice = {**world.auth("alice"), "X-Purpose": "analytics"}
        bob = {**world.auth("bob"), "X-Purpose": "research"}
        # raw values in client filters and SQL: they land in audit records
        client.get("/v1/datasets/patients/rows", params={"filter": f"name = '{raw['name'][0]}'", "limit": 1},
                   headers=alice)
        client.get("/v1/datasets/patients/rows", params={"filter": f"ssn = '{raw['ssn'][1]}'"}, headers=bob)
        client.post("/v1/sql", json={"sql": f"select * from patients where email = '{raw['email'][2]}'"},
                    headers=alice)
        client.post("/v1/datasets/patients/dp", json={"aggregates": [{"function": "count"}], "epsilon": 0.1},
                    headers=bob)
        csrf = sign_in(client, world)
        assert client.post("/console/monitoring/profile", data={"dataset": "patients", "csrf": csrf}).status_code == 200
        path = world.directory / "data" / "patients.parquet"
        pq.write_table(pq.read_table(path).slice(0, 1500), path)  # a second data version
        assert client.post("/console/monitoring/profile", data={"dataset": "patients", "csrf": csrf}).status_code == 200
        assert client.post("/console/monitoring/profile", data={"dataset": "encounters", "csrf": csrf}).status_code == 200
        shutil.copytree(world.directory / "policies", world.directory / "proposed")
        texts = {name: client.get(f"/console/{name}").text for name in PAGES}
        texts["dry-run result"] = client.post("/console/dry-run", data={"folder": "proposed", "csrf": csrf}).text
        texts["monitoring encounters"] = client.get("/console/monitoring", params={"dataset": "encounters"}).text
        texts["access roles"] = client.get("/console/access", params={"kind": "roles"}).text
        texts["audit filtered"] = client.get("/console/audit", params={"principal": "alice"}).text
        client.post("/console/catalog/accept", data={"dataset": "patients", "column": "phone", "csrf": csrf})
        texts["catalog after accept"] = client.get("/console/catalog").text
        assert "<svg" in texts["monitoring"] and "Requests that would" in texts["dry-run result"]
        assert "alice" in texts["audit filtered"]
        for name, text in texts.items():
            assert leaks.found_in(text) == [], name
