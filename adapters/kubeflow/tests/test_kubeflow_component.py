"""The governed_dataset component, run by kfp.local (SubprocessRunner, no venv: nothing is
downloaded) against a real ``govern serve`` on loopback: reference and data mode, lineage in
the artifact metadata, a downstream step resolving a reference, and no raw value anywhere in
the local artifact root."""

# no `from __future__ import annotations`: kfp reads the component signatures as types

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from kfp import compiler, dsl, local
from kfp.dsl import Dataset, Input

import govern_kubeflow
from govern_kubeflow import reads
from govern_kubeflow.component import SECRET_NAME, governed_dataset, with_api_key

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # tests.gateway (a real govern serve) when run on their own
    sys.path.insert(0, str(ROOT))

from tests.gateway import Server, World, start_server, stop_server  # noqa: E402

pytestmark = pytest.mark.xdist_group("kubeflow")  # one gateway for the module


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Server]:
    from govern.demo import create_demo

    demo = create_demo(tmp_path_factory.mktemp("kfp-demo"), rows=500, seed=7)
    server = start_server(World(demo.directory, dict(demo.api_keys)), "--pg-port", "0", "--flight-port", "0")
    yield server
    stop_server(server)


@pytest.fixture
def kfp_local(tmp_path, monkeypatch, gateway) -> Path:
    """kfp.local with the subprocess runner in this interpreter; bob's key in the environment,
    as the fixed-name secret would put it in a pod."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv(reads.KEY_ENV, gateway.world.keys["bob"])
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def rows(server: Server, who: str, dataset: str, purpose: str) -> pa.Table:
    r = httpx.get(f"{server.url}/v1/datasets/{dataset}/rows", timeout=60,
                  headers={"Authorization": f"Bearer {server.world.keys[who]}", "X-Purpose": purpose})
    assert r.status_code == 200, r.text
    return pa.ipc.open_stream(r.content).read_all()


def raw_needles(server: Server) -> set[str]:
    raw = pq.read_table(server.world.directory / "data" / "patients.parquet").to_pydict()
    return {v for c in ("name", "email", "ssn", "phone") for v in raw[c] if v}


def audit(server: Server, request_id: str) -> list[dict]:
    r = httpx.get(f"{server.url}/v1/audit", params={"limit": 1000}, timeout=30,
                  headers={"Authorization": f"Bearer {server.world.keys['carol']}", "X-Purpose": "governance"})
    return [x for x in r.json()["records"] if x["request_id"] == request_id]


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def count_rows(data: Input[Dataset]) -> int:
    """A downstream step: resolves a reference through the gateway, or reads masked Parquet."""
    import pyarrow.parquet as pq

    from govern_kubeflow import reads

    if data.metadata["govern.mode"] == "reference":
        with open(data.path, encoding="utf-8") as fh:
            return reads.resolve(reads.Reference.from_json(fh.read())).num_rows
    return pq.read_table(data.path).num_rows


def test_reference_mode_writes_no_data_and_resolves_downstream(kfp_local, gateway) -> None:
    task = governed_dataset(gateway=gateway.url, dataset="patients", purpose="model-training")
    artifact = task.outputs["output"]
    meta = artifact.metadata
    text = Path(artifact.path).read_text()
    ref = reads.Reference.from_json(text)
    assert (ref.dataset, ref.purpose, meta["govern.mode"]) == ("patients", "model-training", "reference")
    assert meta["govern.plan_hash"] == ref.plan_hash and meta["govern.data_version"] == ref.data_version
    assert meta["govern.policy_version"] and meta["govern.purpose"] == "model-training"
    [record] = audit(gateway, meta["govern.audit_record_id"])
    assert (record["principal"], record["extra"]["route"], record["plan_hash"]) == ("bob", "scan", ref.plan_hash)
    assert set(json.loads(text)) == {"gateway", "dataset", "purpose", "plan_hash", "policy_version",
                                     "data_version", "scan_id", "columns"}  # no rows, no tickets
    expected = rows(gateway, "bob", "patients", "model-training").num_rows

    @dsl.pipeline(name="reference-then-resolve")
    def pipeline(url: str) -> int:
        made = governed_dataset(gateway=url, dataset="patients", purpose="model-training")
        return count_rows(data=made.outputs["output"]).output

    assert pipeline(url=gateway.url).output == expected


def test_data_mode_writes_only_masked_rows(kfp_local, gateway) -> None:
    task = governed_dataset(gateway=gateway.url, dataset="patients", purpose="model-training",
                                            mode="data")
    artifact = task.outputs["output"]
    got = pq.read_table(artifact.path)
    expected = rows(gateway, "bob", "patients", "model-training")
    assert got.equals(expected)
    assert artifact.metadata["govern.rows"] == expected.num_rows
    assert artifact.metadata["govern.plan_hash"] == httpx.get(
        f"{gateway.url}/v1/datasets/patients", timeout=30,
        headers={"Authorization": f"Bearer {gateway.world.keys['bob']}", "X-Purpose": "model-training"},
    ).json()["plan_hash"]


def test_no_raw_value_and_no_key_in_the_artifact_root(kfp_local, gateway) -> None:
    @dsl.pipeline(name="governed-training-data")
    def pipeline(url: str) -> None:
        ref = governed_dataset(gateway=url, dataset="patients", purpose="model-training")
        data = governed_dataset(gateway=url, dataset="patients", purpose="model-training",
                                                mode="data")
        count_rows(data=ref.outputs["output"])
        count_rows(data=data.outputs["output"])

    pipeline(url=gateway.url)
    needles = raw_needles(gateway) | {gateway.world.keys["bob"]}
    raw = pq.read_table(gateway.world.directory / "data" / "patients.parquet").to_pandas().to_csv().encode()
    assert [n for n in needles if n.encode() in raw]  # control: the search finds raw values where they are
    files = [p for p in kfp_local.rglob("*") if p.is_file()]
    assert any(p.suffix == "" or p.name == "output" for p in files) and len(files) >= 2
    for path in files:
        blob = path.read_bytes()
        if path.name == "output" and blob[:4] == b"PAR1":  # Parquet: search its decoded values
            blob = pq.read_table(path).to_pandas().to_csv().encode()
        found = [n for n in needles if n.encode() in blob]
        assert not found, (path, found[:3])


def test_a_reference_to_changed_data_is_refused(kfp_local, gateway) -> None:
    task = governed_dataset(gateway=gateway.url, dataset="encounters", purpose="model-training")
    ref = reads.Reference.from_json(Path(task.outputs["output"].path).read_text())
    path = gateway.world.directory / "data" / "encounters.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    try:
        with pytest.raises(govern_kubeflow.StaleReference, match="data"):
            govern_kubeflow.resolve(ref)
    finally:
        pq.write_table(table, path)


def test_the_compiled_pipeline_takes_the_key_from_the_fixed_name_secret(tmp_path) -> None:
    @dsl.pipeline(name="governed")
    def pipeline(url: str, dataset: str, purpose: str) -> None:
        with_api_key(governed_dataset(gateway=url, dataset=dataset, purpose=purpose))

    out = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    platform = next(d for d in docs if "platforms" in d)
    [executor] = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    [secret] = executor["secretAsEnv"]
    assert secret["secretName"] == SECRET_NAME
    assert secret["keyToEnv"] == [{"secretKey": "api-key", "envVar": "GOVERN_API_KEY"}]
    assert "gk_" not in out.read_text()
    shutil.rmtree(tmp_path, ignore_errors=True)
