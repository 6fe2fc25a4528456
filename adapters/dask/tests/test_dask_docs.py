"""docs/adapters.md's Dask start and the adapter README's example run as written: the Tier 1
start's shell commands and ``govern serve`` (on a free port), then the Python in that folder."""

from __future__ import annotations

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

pytestmark = pytest.mark.xdist_group("dask")

DOC = ROOT / "docs" / "adapters.md"
README = ROOT / "adapters" / "dask" / "README.md"


def _run(code: str, source: Path, url: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("http://127.0.0.1:8000", url), str(source), "exec"), {})
    return out.getvalue()


def test_dask_in_five_minutes_and_the_readme(tmp_path, monkeypatch) -> None:
    setup, serve = doc_code(DOC, "### Tier 1 in five minutes", "bash")
    (python,) = doc_code(DOC, "### Dask in five minutes", "python")
    readme = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(readme) == 1
    with served_doc_commands(setup, serve, tmp_path) as url:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("GOVERN_API_KEY", raising=False)
        out = _run(python, DOC, url)
        monkeypatch.setenv("GOVERN_API_KEY", json.loads((tmp_path / "demo" / "keys.json").read_text())["bob"])
        readme_out = _run(readme[0], README, url)
    first = re.search(r"^(\d+) partitions; (\d+) EU rows$", out, re.M)
    assert first and int(first[1]) >= 1 and 0 < int(first[2]) < 1000, out
    assert re.search(r"^region\nEU\s+\d+\.\d+\nName: charges", out, re.M), out  # the EU group only
    emails = re.findall(r"\S+@\S+", out)
    assert emails and all(e.startswith("*@") for e in emails), out  # bob sees e-mail domains only
    assert re.findall(r"\*{7}\d{4}", out), out  # and the last four SSN digits
    assert re.search(r"^region\nEU\s+\d+\.\d+\nName: charges", readme_out, re.M), readme_out
