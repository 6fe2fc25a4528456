"""Real `govern serve` processes: without SDV (501), and several workers sharing one model."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from tests.gateway import start_server, stop_server
from tests.privacy.synthetic.conftest import headers

URL = "/v1/datasets/patients/synthetic"


def _without_sdv(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import sdv` fails, as on a gateway installed without the extra."""
    site = tmp_path / "no-sdv"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['sdv'] = None\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def _audit(server, world) -> list[dict]:  # type: ignore[no-untyped-def]
    r = httpx.get(server.url + "/v1/audit", headers=headers(world, "carol", "governance"),
                  params={"dataset": "patients", "limit": 1000}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["records"] if isinstance(body, dict) else body


def test_without_the_synthetic_extra_the_gateway_answers_501(world, tmp_path: Path) -> None:
    server = start_server(world, "--pg-port", "0", env=_without_sdv(tmp_path))
    try:
        r = httpx.post(server.url + URL, headers=headers(world), json={"rows": 5}, timeout=60)
        assert r.status_code == 501, r.text
        problem = r.json()
        assert problem["type"] == "urn:govern:problem:not-implemented"
        assert "govern[synthetic]" in problem["detail"] and "SDV" in problem["detail"]
        status = httpx.get(server.url + URL + "/status", headers=headers(world), timeout=60)
        assert status.status_code == 501
        # a caller without the grant is refused as always, and learns nothing about the install
        denied = httpx.post(server.url + URL, headers=headers(world, "eve", "research"), json={"rows": 5}, timeout=60)
        assert denied.status_code == 403
        # the rest of the gateway works
        rows = httpx.get(server.url + "/v1/datasets/patients/rows", headers=headers(world),
                         params={"limit": 3}, timeout=60)
        assert rows.status_code == 200
        records = [r for r in _audit(server, world) if r["action"] == "read_synthetic"]
        assert [r["status"] for r in records] == [501, 501, 403]
        assert records[0]["outcome"] == "denied" and records[0]["principal"] == "bob"
    finally:
        stop_server(server)


@pytest.mark.slow
def test_parallel_workers_share_the_model_but_not_their_random_rows(world) -> None:
    servers = [start_server(world, "--pg-port", "0") for _ in range(2)]
    try:
        def fetch(server, body: dict) -> pa.Table:  # type: ignore[no-untyped-def]
            r = httpx.post(server.url + URL, headers=headers(world), json=body, timeout=120)
            assert r.status_code == 200, r.text
            return pa.ipc.open_stream(r.content).read_all().replace_schema_metadata()

        unseeded = [fetch(s, {"rows": 100}) for s in servers]
        assert not unseeded[0].equals(unseeded[1])
        seeded = [fetch(s, {"rows": 100, "seed": 99}) for s in servers]
        assert seeded[0].equals(seeded[1])
    finally:
        for s in servers:
            stop_server(s)


@pytest.mark.slow
def test_the_client_waits_for_a_background_fit_in_a_real_gateway(world) -> None:
    import pyarrow.parquet as pq

    from govern.client import Client
    from tests.privacy.synthetic.conftest import real_patients

    pq.write_table(real_patients(world).slice(0, 800), world.directory / "data" / "patients.parquet")
    server = start_server(world, "--pg-port", "0")
    try:
        with Client(server.url, token=world.keys["bob"], purpose="research") as client:
            assert client.synthetic_status("patients")["state"] == "absent"
            table = client.synthetic("patients", 50, seed=4, wait=240)
            assert table.num_rows == 50
            import json

            report = json.loads(table.schema.metadata[b"govern.synthetic.report"])
            assert report["model"]["rows"]["real"] == 800 and report["privacy"]["exact_copies"] == 0
            assert client.synthetic_status("patients")["state"] == "ready"
    finally:
        stop_server(server)
