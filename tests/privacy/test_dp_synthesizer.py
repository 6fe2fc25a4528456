"""The DP synthesizer (``synthesizer: {type: mst, steward: …, params: {epsilon: …}}``): fitted on
a small world under an (epsilon, delta) charged to the steward's budget before any data is read,
sampled through ``POST /v1/datasets/{name}/synthetic`` with the same quality and privacy report
as SDV's synthesizers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import BudgetExceeded, SyntheticError
from govern.policy.load import read_policy
from govern.privacy.synthetic.service import REPORT_METADATA_KEY, SyntheticService
from tests.gateway import World, make_client

DOCS = Path(__file__).resolve().parents[2] / "docs" / "synthetic.md"
# the example of docs/synthetic.md, with epsilon as a parameter
MST = (DOCS.read_text().split("<!-- mst-example -->\n```yaml\n", 1)[1].split("```", 1)[0]
       .split("  patients:\n", 1)[1].rstrip("\n").replace("epsilon: 2 ", "epsilon: %s "))
SDV = """    synthesizer:
      type: gaussian_copula
      generate: {zip: postcode}"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sdv")  # the reports are SDV's (sdmetrics), as for every synthesizer
    from govern.demo import create_demo

    return create_demo(tmp_path_factory.mktemp("dpsynth"), rows=300, seed=11).directory


def world_of(small: Path, tmp_path: Path, epsilon: float = 2) -> World:
    import shutil

    d = tmp_path / "world"
    shutil.copytree(small, d)
    catalog = d / "policies" / "catalog.yaml"
    text = catalog.read_text()
    assert SDV in text
    catalog.write_text(text.replace(SDV, MST % epsilon))
    return World(d, json.loads((d / "keys.json").read_text()))


def test_fit_charges_the_steward_then_samples_with_the_same_report(small: Path, tmp_path: Path) -> None:
    world = world_of(small, tmp_path)
    gov = Governor(load_settings(world.config, watch_policies=False))
    svc = SyntheticService(gov.settings, gov)
    manifest = svc.fit_now(svc.reference("patients"))
    dp = manifest["dp"]
    assert (dp["type"], dp["epsilon"], dp["steward"]) == ("mst", 2.0, "carol")
    assert dp["spent"]["epsilon"] == 2.0 and dp["spent"]["delta"] <= 1e-6
    varying = [c for c, d in dp["domains"].items() if d["size"] > 1]
    assert len(dp["tree"]) == len(varying) - 1 >= 2  # a spanning tree over the columns that vary
    assert dp["domains"]["charges"] == {"how": "bins", "size": 16}
    assert dp["domains"]["diagnosis"] == {"how": "public", "size": 6}  # declared in params.domains
    assert dp["domains"]["birth_date"] == {"how": "bins", "size": 86}  # 1925..2010
    assert manifest["reports"]["quality"]["score"] is not None
    with make_client(world) as c:
        [charge] = c.app.state.gateway.ledger.charges(principal="carol")
        assert (charge["dataset"], charge["epsilon"], charge["kind"]) == ("patients", 2.0, "synthetic")
        budget = c.get("/v1/budget", headers={**world.auth("carol"), "X-Purpose": "governance"}).json()
        assert {b["dataset"]: b["left"]["epsilon"] for b in budget["budgets"]}["patients"] == pytest.approx(3.0)
        r = c.post("/v1/datasets/patients/synthetic", json={"rows": 200, "seed": 5},
                   headers={**world.auth("bob"), "X-Purpose": "research"})
        assert r.status_code == 200, r.text
        table = pa.ipc.open_stream(r.content).read_all()
        again = pa.ipc.open_stream(c.post("/v1/datasets/patients/synthetic", json={"rows": 200, "seed": 5},
                                          headers={**world.auth("bob"), "X-Purpose": "research"}).content).read_all()
    assert table.num_rows == 200 and table.select(["region", "charges"]).equals(again.select(["region", "charges"]))
    report = json.loads(table.schema.metadata[REPORT_METADATA_KEY])
    assert report["model"]["synthesizer"]["type"] == "mst" and report["quality"]["score"] is not None
    assert report["privacy"]["dp"]["steward"] == "carol" and "differentially private fit" in report["privacy"]["method"]
    assert "dcr" in report["privacy"]["fit_reference"]
    real = pq.read_table(world.directory / "data" / "patients.parquet")
    assert set(table.column("region").to_pylist()) <= set(real.column("region").to_pylist())
    charges = [v for v in table.column("charges").to_pylist() if v is not None]
    # inside the catalog's bounds, give or take bob's mask (financial: noise, scale 100)
    assert charges and all(-1000 <= v <= 51000 for v in charges)


def test_a_fit_the_budget_cannot_pay_for_reads_nothing(small: Path, tmp_path: Path) -> None:
    world = world_of(small, tmp_path, epsilon=6)  # carol has 5 per month on patients
    gov = Governor(load_settings(world.config, watch_policies=False))
    svc = SyntheticService(gov.settings, gov)
    ref = svc.reference("patients")
    with pytest.raises(BudgetExceeded):
        svc.fit_now(ref)
    assert svc.store.manifest(ref.key) is None


def test_a_number_without_bounds_is_refused_before_the_charge(small: Path, tmp_path: Path) -> None:
    world = world_of(small, tmp_path)
    catalog = world.directory / "policies" / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("charges: {tags: [financial], bounds: [0, 50000]}",
                                                   "charges: {tags: [financial]}"))
    gov = Governor(load_settings(world.config, watch_policies=False))
    svc = SyntheticService(gov.settings, gov)
    with pytest.raises(SyntheticError, match="needs bounds for the number column 'charges'"):
        svc.fit_now(svc.reference("patients"))
    with make_client(world) as c:
        assert c.app.state.gateway.ledger.charges(principal="carol") == []


def test_the_catalog_checks_a_dp_synthesizer(small: Path, tmp_path: Path) -> None:
    world = world_of(small, tmp_path)
    catalog = world.directory / "policies" / "catalog.yaml"
    text = catalog.read_text()
    catalog.write_text(text.replace("      steward: carol ", "     ").replace("epsilon: 2 ", "# no epsilon ")
                     .replace("bins: 16", "bins: 1"))
    _, problems = read_policy(world.directory / "policies")
    messages = " | ".join(p.message for p in problems)
    assert "mst needs params.epsilon" in messages and "bins must be an integer in [2, 256]" in messages
    assert "mst needs a steward" in messages
    catalog.write_text(text.replace("steward: carol", "steward: mallory"))
    _, problems = read_policy(world.directory / "policies")
    assert [p.message for p in problems] == [
        "synthesizer of 'patients': steward 'mallory' is not a principal of principals.yaml"]


def test_values_rarer_than_the_threshold_are_never_released() -> None:
    """A column without a public domain: its values go through OpenDP's Laplace threshold; one
    person's value (a category of one row) never comes out, common ones do."""
    import pandas as pd

    from govern.privacy.synthetic.mst import MstSynthesizer, domains_for

    frame = pd.DataFrame({"diagnosis": ["Asthma"] * 400 + ["Influenza"] * 300 + ["Kuru"],
                          "charges": [1000.0] * 400 + [9000.0] * 301})
    for _ in range(5):
        model = MstSynthesizer(1.0, 1e-6, 8, domains_for({"diagnosis": "categorical", "charges": "numerical"},
                                                          {"charges": (0, 10000)}, set(), {}))
        model.fit_frame(frame)
        assert model.describe()["domains"]["diagnosis"]["how"] == "released"
        assert set(model.sample_frame(2000, 1)["diagnosis"]) == {"Asthma", "Influenza"}
        assert 0 < model.spent["delta"] <= 1e-6
