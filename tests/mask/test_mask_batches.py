"""mask_batches: the engine function a Ray or Dask adapter builds on. Raw batches split any way
(as a framework's partitions would be) give exactly the gateway's rows, batch by batch."""

from __future__ import annotations

import pyarrow as pa
import pytest

from govern.errors import MaskError
from govern.mask.execute_arrow import mask_batches
from govern.policy.model import local_principal
from tests.mask.test_execute import DEMO_PLANS


def partitions(table: pa.Table, *sizes: int) -> list[list[pa.RecordBatch]]:
    """``table`` cut into partitions of ``sizes`` rows (the rest in the last), each a few batches."""
    out, start = [], 0
    for size in (*sizes, table.num_rows):
        part = table.slice(start, size)
        out.append(part.to_batches(max_chunksize=97))
        start += part.num_rows
    return out


@pytest.mark.parametrize("name,dataset,purpose", DEMO_PLANS)
def test_any_split_gives_the_gateways_rows(governor, name, dataset, purpose) -> None:
    principal = local_principal(governor.state.policy, name)
    plan = governor.plan(principal, dataset, purpose)
    expected = governor.read(principal, dataset, purpose).reader.read_all()
    raw = governor.dataset(dataset).to_table()
    masked = [b for part in partitions(raw, 333, 0, 501) for b in mask_batches(plan, part, governor.keys,
                                                                               schema=raw.schema)]
    got = pa.Table.from_batches(masked, schema=expected.schema)
    assert got.equals(expected), (name, dataset, purpose)


def test_empty_partitions_and_pruned_columns(governor) -> None:
    principal = local_principal(governor.state.policy, "bob")
    plan = governor.plan(principal, "patients", "model-training")
    raw = governor.dataset("patients").to_table()
    assert list(mask_batches(plan, [], governor.keys, schema=raw.schema)) == []
    with pytest.raises(ValueError, match="schema"):
        list(mask_batches(plan, [], governor.keys))
    [*out] = mask_batches(plan, raw.to_batches(), governor.keys, columns=["zip", "email"])
    assert out[0].schema.names == ["zip", "email"]


def test_a_batch_of_another_schema_fails_closed(governor) -> None:
    principal = local_principal(governor.state.policy, "alice")
    plan = governor.plan(principal, "patients", "analytics")
    raw = governor.dataset("patients").to_table()
    other = raw.drop_columns(["email"]).to_batches()[0]
    with pytest.raises(MaskError):
        list(mask_batches(plan, [raw.to_batches()[0], other], governor.keys))


def test_the_trusted_cluster_example_in_the_docs(tmp_path, monkeypatch) -> None:
    """docs/adapters.md: the Tier 2 start's shell commands, then the mask_batches example."""
    import contextlib
    import io
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"
    text = doc.read_text()

    def code(title: str, language: str) -> list[str]:
        part = re.split(r"\n##+ ", text.split(title, 1)[1], maxsplit=1)[0]
        return re.findall(rf"```{language}\n(.*?)```", part, re.S)

    (shell,) = code("### Five-minute start (Tier 2", "bash")
    (python,) = code("## Ray, and trusted clusters", "python")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=tmp_path, check=True, capture_output=True, env=env)
    monkeypatch.chdir(tmp_path / "demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python, str(doc), "exec"), {})
    rows, columns = out.getvalue().strip().split(" rows: ")
    assert int(rows) == 1000 and "'patient_id'" in columns and "'diagnosis'" not in columns
