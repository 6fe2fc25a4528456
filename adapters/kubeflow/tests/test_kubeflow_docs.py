"""docs/adapters.md's Kubeflow start runs as written: the Tier 1 start's shell commands and
``govern serve`` (on a free port), then the Kubeflow Python in that folder."""

# no `from __future__ import annotations`: kfp reads component signatures as types

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.gateway import doc_code, served_doc_commands  # noqa: E402

pytestmark = pytest.mark.xdist_group("kubeflow")

DOC = ROOT / "docs" / "adapters.md"


def test_kubeflow_in_five_minutes(tmp_path, monkeypatch) -> None:
    setup, serve = doc_code(DOC, "### Tier 1 in five minutes", "bash")
    (python,) = doc_code(DOC, "### Kubeflow in five minutes", "python")
    with served_doc_commands(setup, serve, tmp_path) as url:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("GOVERN_API_KEY", raising=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(python.replace("http://127.0.0.1:8000", url), str(DOC), "exec"), {})
    lines = out.getvalue().splitlines()
    mode = next(line for line in lines if line.startswith("reference "))
    assert re.fullmatch(r"reference [0-9a-f]{12} [0-9a-f]{32}", mode)
    reference, _end = json.JSONDecoder().raw_decode(out.getvalue().split(mode, 1)[1].strip())
    assert reference["dataset"] == "patients" and reference["purpose"] == "model-training"
