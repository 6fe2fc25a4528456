"""Finding: token scope. ``reidentify`` granted on dataset A reversed tokens taken from dataset B.

Tokens were bound to nothing but the key: every ``tokenize`` token of the deployment decrypted
and verified under the same subkeys, and ``reidentify`` checked only the grant on the dataset
named in the URL. A steward allowed to reverse ``encounters`` tokens could post tokens copied
from ``patients`` (another column, another grant) to ``/v1/datasets/encounters/reidentify`` and
read the values behind them.

Attack: tokenize ``patients.name`` (a column of B), give the steward ``reidentify`` on
``encounters`` (A) only, read names as tokens from B and post them to A's reidentify route.
Tokens must carry their *domain* (by default ``dataset.column``; stewards may share one domain
across columns that must join) in the SIV MAC, and reidentify on A accepts only tokens whose
domain a tokenized column of A uses in the caller's plan.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import AccessDenied, InvalidRequest
from govern.policy.model import local_principal
from tests.conftest import edit
from tests.gateway import make_client


@pytest.fixture
def scoped(world):
    """names tokenized; the steward may reverse tokens of encounters only."""
    policies = world.directory / "policies"
    edit(policies / "masking.yaml", "  direct_identifier: {mask: hash}", "  direct_identifier: {mask: tokenize}")
    edit(policies / "policy.csv", "p, steward, dataset:patients, reidentify, governance, allow",
         "p, steward, dataset:encounters, reidentify, governance, allow")
    return world


def names_as_tokens(client, world, n: int = 5) -> tuple[list[str], list[str]]:
    carol = {**world.auth("carol"), "X-Purpose": "governance"}
    r = client.get("/v1/datasets/patients/rows", headers=carol,
                   params={"columns": "patient_id,name", "limit": n, "format": "arrow"})
    assert r.status_code == 200, r.text
    table = pa.ipc.open_stream(r.content).read_all()
    return table["name"].to_pylist(), table["patient_id"].to_pylist()


def test_tokens_of_another_dataset_do_not_reverse(scoped) -> None:
    world = scoped
    raw_names = pq.read_table(world.directory / "data" / "patients.parquet", columns=["name"])["name"].to_pylist()
    with make_client(world) as client:
        names, _ = names_as_tokens(client, world)
        assert all(t.startswith("k1:") for t in names) and not set(names) & set(raw_names)
        carol = {**world.auth("carol"), "X-Purpose": "governance"}
        r = client.post("/v1/datasets/encounters/reidentify", headers=carol, json={"tokens": names})
        assert r.status_code != 200, f"patients.name tokens reversed through encounters: {r.text[:300]}"
        assert not any(name in r.text for name in raw_names[:5])
        # one foreign token among good ones refuses the whole request
        r = client.get("/v1/datasets/encounters/rows", headers=carol,
                       params={"columns": "patient_id", "limit": 3, "format": "arrow"})
        own = pa.ipc.open_stream(r.content).read_all()["patient_id"].to_pylist()
        mixed = client.post("/v1/datasets/encounters/reidentify", headers=carol, json={"tokens": [*own, names[0]]})
        assert mixed.status_code == 400 and raw_names[0] not in mixed.text
        [record] = client.app.state.gateway.audit.records(request_id=mixed.headers["x-request-id"])
        assert (record.outcome, record.status, record.dataset) == ("denied", 400, "encounters")
        ok = client.post("/v1/datasets/encounters/reidentify", headers=carol, json={"tokens": own})
        assert ok.status_code == 200, ok.text
        assert ok.json()["domains"] == ["patient"] * 3
        [record] = client.app.state.gateway.audit.records(request_id=ok.headers["x-request-id"])
        assert record.extra["origins"] == [{"domain": "patient", "columns": ["encounters.patient_id"], "tokens": 3}]


def test_the_governor_refuses_foreign_tokens_and_names_the_origin(scoped) -> None:
    world = scoped
    governor = Governor(load_settings(world.config, watch_policies=False))
    carol = local_principal(governor.state.policy, "carol")
    with make_client(world) as client:
        names, patient_ids = names_as_tokens(client, world)
    with pytest.raises(InvalidRequest, match="encounters"):
        governor.reidentify(carol, "encounters", "governance", names)
    # patient_id shares the steward's domain `patient` across both datasets (masking.yaml), so a
    # patient_id token read from patients reverses on encounters, and says where it belongs
    back = governor.reidentify(carol, "encounters", "governance", patient_ids)
    raw_ids = pq.read_table(world.directory / "data" / "patients.parquet", columns=["patient_id"])
    assert back.values == [str(v) for v in raw_ids["patient_id"].to_pylist()[:5]]
    assert back.domains == ["patient"] * 5
    assert back.columns == {"patient": ("patient_id",)}
    assert back.origins() == [{"domain": "patient", "columns": ["encounters.patient_id"], "tokens": 5}]


def test_no_tokenized_column_in_the_callers_view_means_nothing_to_reverse(world) -> None:
    """dave (treatment) sees patient_id in the clear: a reidentify grant gives him no token scope."""
    with (world.directory / "policies" / "policy.csv").open("a") as fh:
        fh.write("p, clinician, dataset:patients, reidentify, treatment, allow\n")
    governor = Governor(load_settings(world.config, watch_policies=False))
    carol, dave = (local_principal(governor.state.policy, n) for n in ("carol", "dave"))
    tokens = governor.read(carol, "patients", "governance", columns=["patient_id"], limit=2).reader.read_all()
    with pytest.raises(AccessDenied, match="no column of dataset 'patients' is tokenized"):
        governor.reidentify(dave, "patients", "treatment", tokens["patient_id"].to_pylist())
