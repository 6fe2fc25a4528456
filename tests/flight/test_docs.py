"""Every example in docs/flight.md runs, against a real Flight SQL server."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

DOC = Path(__file__).resolve().parents[2] / "docs" / "flight.md"


def blocks() -> list[str]:
    text = DOC.read_text()
    return [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]


def test_every_example_runs(flight_server) -> None:
    namespace: dict[str, object] = {"URI": flight_server.uri, "KEYS": flight_server.world.keys}
    examples = blocks()
    assert len(examples) == 5
    for code in examples:
        exec(compile(code, str(DOC), "exec"), namespace)
    table = namespace["table"]
    assert isinstance(table, pa.Table) and table.column("region").to_pylist() == ["EU"]
    assert "withheld under purpose 'analytics'" in str(namespace["refused"])
    assert "ssn" not in namespace["schema"].names or namespace["schema"].field("ssn").type == pa.string()
    assert namespace["rows"].num_rows == 5 and namespace["noisy"].num_rows >= 1
    catalogs = namespace["objects"].column("catalog_name").to_pylist()
    assert "model-training" in catalogs and "analytics" not in catalogs
    assert namespace["result"].schema.names == ["diagnosis", "n"]
