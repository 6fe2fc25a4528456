"""Policy across the fleet: every instance says which version it serves (``/readyz``,
``/metrics``, the fleet table the console's Fleet page reads), and a reload noticed by one
instance reaches the others through PostgreSQL ``LISTEN/NOTIFY`` — here the other two do not
watch the policy folder at all (``--no-watch``, as on storage without file events) and re-read
it only every 120 s on their own, so converging within the bound proves the notification path.
Every audit record names the version it was decided under.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from govern.config import Settings
from govern.deliver.fleet import converged, fleet_status
from tests.fleet.cluster import Cluster, Fleet, wait_until
from tests.gateway import World

pytestmark = pytest.mark.xdist_group("fleet-policy")  # one fleet for the module's tests

BOUND = 5.0  # seconds from the edit to every instance serving the new version


@pytest.fixture(scope="module")
def fleet(fleet_world: World, cluster: Cluster) -> Iterator[Fleet]:
    f = Fleet.start(fleet_world, cluster.url, 3, prefix="policy_",
                    extra=((), ("--no-watch",), ("--no-watch",)), env={"GOVERN_FLEET_RECHECK": "120"})
    yield f
    f.close()


def versions(fleet: Fleet) -> list[str]:
    return [fleet.readyz(i)["policy_version"] for i in range(3)]


def test_a_reload_on_one_instance_converges_on_all_within_the_bound(fleet: Fleet, cluster: Cluster,
                                                                    fleet_world: World) -> None:
    before = versions(fleet)
    assert len(set(before)) == 1
    listed = wait_until(lambda: len(fleet_status(cluster.url, "policy_")) == 3 and fleet_status(cluster.url,
                                                                                                 "policy_"), 10)
    assert listed and converged(listed) == before[0]
    assert len({i.instance_id for i in listed}) == 3

    catalog = fleet_world.directory / "policies" / "catalog.yaml"
    started = time.monotonic()
    catalog.write_text(catalog.read_text() + "\n# a steward's edit\n")
    new = wait_until(lambda: (v := versions(fleet)) and len(set(v)) == 1 and v[0] != before[0] and v[0], BOUND)
    took = time.monotonic() - started
    print(f"converged on {new} in {took:.2f}s")
    assert new, f"instances did not converge within {BOUND}s: {versions(fleet)}"

    for i, server in enumerate(fleet.servers):
        ready = fleet.readyz(i)
        assert ready["instance"] and ready["policy_since"] > 0
        metrics = httpx.get(server.url + "/metrics", timeout=5).text
        assert f'govern_policy_version_info{{version="{new}"}}' in metrics
        assert f'version="{before[0]}"' not in metrics
    status = wait_until(lambda: (s := fleet_status(cluster.url, "policy_")) and converged(s) == new and s, 5)
    assert status and all(i.since.timestamp() > 0 for i in status)

    # every record names its version; each instance recorded its own reload
    with psycopg.connect(cluster.url) as conn:
        rows = conn.execute("SELECT action, policy_version, outcome FROM policy_audit_log").fetchall()
    assert rows and all(v for _, v, _ in rows)
    reloads = [r for r in rows if r[0] == "policy_reload"]
    assert [(v, o) for _, v, o in reloads] == [(new, "ok")] * 3


def test_a_request_is_decided_under_the_version_its_record_names(fleet: Fleet, fleet_world: World,
                                                                 cluster: Cluster) -> None:
    served = versions(fleet)[0]
    r = httpx.get(fleet.servers[1].url + "/v1/datasets/patients?limit=5",
                  headers={**fleet_world.auth("alice"), "X-Purpose": "analytics"}, timeout=30)
    assert r.status_code == 200, r.text
    with psycopg.connect(cluster.url) as conn:
        [(version,)] = conn.execute("SELECT policy_version FROM policy_audit_log WHERE request_id = %s",
                                    (r.headers["x-request-id"],)).fetchall()
    assert version == served


DEPLOYMENT = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def test_the_deployment_docs_examples_match_what_runs(fleet: Fleet) -> None:
    text = DEPLOYMENT.read_text()
    yaml_block = re.search(r"```yaml\n(.*?)```", text, re.S)
    json_block = re.search(r"```json\n(.*?)```", text, re.S)
    assert yaml_block and json_block
    import yaml

    settings = Settings(**yaml.safe_load(yaml_block.group(1)))  # every key is a real setting
    assert settings.audit_url == settings.ledger_url and settings.audit_url.startswith("postgresql://")
    documented = json.loads(json_block.group(1))
    live = fleet.readyz(0)
    assert set(documented) == set(live)
    # the serve command the docs show is the one the fleet runs (config, port, wire ports)
    for flag in ("--config", "--port", "--pg-port", "--flight-port"):
        assert flag in text
