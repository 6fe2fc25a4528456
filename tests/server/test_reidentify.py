"""Tokens are reversible only with the key and the `reidentify` action."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from govern.cli import main
from tests.gateway import make_client


def test_tokens_reverse_only_for_reidentify(world) -> None:
    # the demo policy tokenizes identifiers (masking.yaml: `identifier: {mask: tokenize}`)
    with make_client(world) as client:
        bob = {**world.auth("bob"), "X-Purpose": "research"}
        r = client.get("/v1/datasets/patients/rows", headers=bob, params={"columns": "patient_id", "limit": 5})
        tokens = pa.ipc.open_stream(r.content).read_all().column("patient_id").to_pylist()
        assert all(t.startswith("k1:") for t in tokens)
        assert client.post("/v1/datasets/patients/reidentify", headers=bob, json={"tokens": tokens}).status_code == 403
        carol = {**world.auth("carol"), "X-Purpose": "governance"}
        back = client.post("/v1/datasets/patients/reidentify", headers=carol, json={"tokens": tokens})
        assert back.status_code == 200, back.text
        raw_ids = pq.read_table(world.directory / "data" / "patients.parquet", columns=["patient_id"])
        assert back.json()["values"] == [str(v) for v in raw_ids.column(0).to_pylist()[:5]]
        tampered = tokens[0][:-2] + ("00" if not tokens[0].endswith("00") else "11")
        bad = client.post("/v1/datasets/patients/reidentify", headers=carol, json={"tokens": [tampered]})
        assert bad.status_code == 400 and bad.json()["type"] == "urn:govern:problem:invalid-request"
        assert tampered not in bad.text or "k1:" not in bad.json()["detail"]
    cli = CliRunner().invoke(main, ["reidentify", "carol", "patients", tokens[0], "--purpose", "governance",
                                    "--config", str(world.config)])
    assert cli.exit_code == 0, cli.output
    assert cli.output.split("\t")[1].strip() == back.json()["values"][0]
    denied = CliRunner().invoke(main, ["reidentify", "bob", "patients", tokens[0], "--purpose", "research",
                                       "--config", str(world.config)])
    assert denied.exit_code == 2 and "reidentify" in denied.output
