"""Model lifecycle through the gateway: refit on a new data version, failed fits, tampered store."""

from __future__ import annotations

import os
import pickle
import time

import pyarrow.parquet as pq
from click.testing import CliRunner

from govern.cli import main
from tests.gateway import make_client
from tests.privacy.synthetic.conftest import (
    arrow,
    audit_records,
    grant,
    headers,
    real_patients,
    report_of,
)

URL = "/v1/datasets/patients/synthetic"


def _model_dir(world) -> os.PathLike:  # type: ignore[no-untyped-def]
    models = world.directory / "state" / "synthetic" / "models"
    (only,) = [p for p in models.iterdir() if not p.name.startswith(".")]
    return only


def test_a_new_data_version_is_fitted_in_the_background_then_served(world) -> None:
    path = world.directory / "data" / "patients.parquet"
    with make_client(world) as client:
        old = client.get(f"{URL}/status", headers=headers(world)).json()["model"]
        pq.write_table(real_patients(world).slice(0, 1000), path)  # a new version of the data
        r = client.post(URL, headers=headers(world), json={"rows": 10, "seed": 1})
        assert r.status_code == 202, r.text
        assert r.headers["location"] == "/v1/datasets/patients/synthetic/status"
        job = r.json()
        assert job["model"] != old and job["state"] in ("running", "ready")
        # asking again while it fits starts no second fit
        again = client.post(URL, headers=headers(world), json={"rows": 10, "seed": 1})
        assert again.status_code in (200, 202)
        deadline = time.monotonic() + 180
        status = job
        while status["state"] != "ready":
            assert status["state"] in ("running", "absent"), status
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
            status = client.get(f"{URL}/status", headers=headers(world)).json()
        assert status["model"] == job["model"] and status["rows"]["real"] == 1000
        table = arrow(client.post(URL, headers=headers(world), json={"rows": 10, "seed": 1}))
        assert report_of(table)["model"]["key"] == job["model"]
        records = [r for r in audit_records(client) if r.action == "read_synthetic"]
    pending = [r for r in records if r.status == 202]
    assert pending and all(r.outcome == "ok" and r.plan_hash for r in pending)


def test_a_failed_fit_is_reported_not_retried_blindly(world) -> None:
    # encounters with a generator Faker does not have: the fit fails, with govern's message
    catalog = world.directory / "policies" / "catalog.yaml"
    text = catalog.read_text()
    marker = "    description: One row per hospital encounter.\n"
    assert marker in text
    catalog.write_text(text.replace(marker, marker + "    synthesizer: {generate: {department: no_such_faker}}\n"))
    grant(world, "p, data-scientist, dataset:encounters, read_synthetic, research, allow")
    cli = CliRunner().invoke(main, ["synth", "fit", "encounters", "--config", str(world.config)])
    assert cli.exit_code == 1 and "Faker has no 'no_such_faker' generator" in cli.output
    with make_client(world) as client:
        r = client.post("/v1/datasets/encounters/synthetic", headers=headers(world), json={"rows": 5})
        assert r.status_code == 500
        assert r.json()["type"] == "urn:govern:problem:synthetic-unavailable"
        assert "no_such_faker" in r.json()["detail"]
        status = client.get("/v1/datasets/encounters/synthetic/status", headers=headers(world)).json()
        assert status["state"] == "failed" and "no_such_faker" in status["error"]
        assert audit_records(client)[-2].outcome == "error"


def test_a_tampered_model_is_never_unpickled(world) -> None:
    marker = world.directory / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    (_model_dir(world) / "model.pkl").write_bytes(pickle.dumps(Payload()))
    with make_client(world) as client:
        r = client.post(URL, headers=headers(world), json={"rows": 5})
        assert r.status_code == 500 and r.json()["type"] == "urn:govern:problem:synthetic-unavailable"
        assert "integrity" in r.json()["detail"]
        assert audit_records(client)[-1].outcome == "error"
    assert not marker.exists()


def test_an_edited_manifest_fails_the_check(world) -> None:
    manifest = _model_dir(world) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"exact_copies": 0', '"exact_copies": 0 '.strip() + "0", 1))
    text = manifest.read_text()
    manifest.write_text(text.replace('"type": "gaussian_copula"', '"type": "ctgan"', 1))
    with make_client(world) as client:
        r = client.post(URL, headers=headers(world), json={"rows": 5})
        assert r.status_code == 500 and "integrity" in r.json()["detail"]


def test_cli_fit_reuses_and_force_refits(world) -> None:
    reuse = CliRunner().invoke(main, ["synth", "fit", "patients", "--config", str(world.config)])
    assert reuse.exit_code == 0, reuse.output
    assert "quality" in reuse.output and "exact copies" in reuse.output
    before = (_model_dir(world) / "manifest.json").stat().st_mtime_ns
    forced = CliRunner().invoke(main, ["synth", "fit", "patients", "--force", "--config", str(world.config)])
    assert forced.exit_code == 0, forced.output
    assert (_model_dir(world) / "manifest.json").stat().st_mtime_ns != before
    status = CliRunner().invoke(main, ["synth", "status", "patients", "--config", str(world.config)])
    assert status.exit_code == 0 and '"state": "ready"' in status.output
    unknown = CliRunner().invoke(main, ["synth", "status", "nope", "--config", str(world.config)])
    assert unknown.exit_code == 2
