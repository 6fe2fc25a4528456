"""Synthetic-view fixtures: a demo world whose patients model is fitted once per session.

Fitting is the slow part (SDV import, fit, reports), so one model is fitted per test session
(per xdist worker) into a private copy of the demo world; each test copies that world,
model store included, so a test may edit policies, data or the store freely.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.privacy.synthetic.service import REPORT_METADATA_KEY, SyntheticService
from tests.gateway import World, make_client

LEARNED = ["birth_date", "region", "diagnosis", "charges"]
GENERATED = ["patient_id", "name", "email", "ssn", "zip"]


@pytest.fixture(scope="session")
def fitted_world(demo_world, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The session demo world (2,000 patients) with its patients model fitted in-process."""
    pytest.importorskip("sdv")
    d = tmp_path_factory.mktemp("synthetic") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    gov = Governor(load_settings(d / "govern.yaml"))
    svc = SyntheticService(gov.settings, gov)
    svc.fit_now(svc.reference("patients"))
    return World(d, json.loads((d / "keys.json").read_text()))


@pytest.fixture
def world(fitted_world: World, tmp_path: Path) -> World:
    """A private, editable copy of the fitted world (policies, data, model store)."""
    d = tmp_path / "world"
    shutil.copytree(fitted_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    return World(d, dict(fitted_world.keys))


@pytest.fixture
def client(world: World) -> Iterator:
    with make_client(world) as c:
        yield c


def headers(world: World, who: str = "bob", purpose: str = "research") -> dict[str, str]:
    return {**world.auth(who), "X-Purpose": purpose}


def arrow(response) -> pa.Table:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(response.content).read_all()


def report_of(table: pa.Table) -> dict:
    return json.loads(table.schema.metadata[REPORT_METADATA_KEY])


def real_patients(world: World) -> pa.Table:
    return pq.read_table(world.directory / "data" / "patients.parquet")


def audit_records(client) -> list:  # type: ignore[no-untyped-def]
    """Every audit record the client's gateway has written, in order."""
    return client.app.state.gateway.audit.records(limit=1000)


def grant(world: World, *lines: str) -> None:
    """Append rules to the world's policy.csv."""
    path = world.directory / "policies" / "policy.csv"
    path.write_text(path.read_text().rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def revoke(world: World, line: str) -> None:
    path = world.directory / "policies" / "policy.csv"
    text = path.read_text()
    assert line in text, line
    path.write_text(text.replace(line + "\n", ""))


def unmask_everything_for_bob(world: World) -> None:
    """bob then receives the synthetic rows exactly as sampled (no masks, nothing withheld)."""
    revoke(world, "p, data-scientist, tag:phi, read, research, deny")
    grant(world, *(f"p, data-scientist, tag:{t}, unmask, research, allow"
                   for t in ("pii", "identifier", "quasi_identifier", "phi", "financial")),
          "p, data-scientist, column:patients.charges, unmask, research, allow")
