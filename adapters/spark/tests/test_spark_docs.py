"""The five-minute start in docs/adapters.md runs as written: its shell commands in a fresh
folder, then its Python in the demo folder they made."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway import doc_code, served_doc_commands

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests

DOC = Path(__file__).resolve().parents[3] / "docs" / "adapters.md"


def blocks(language: str) -> list[str]:
    section = DOC.read_text().split("### Five-minute start", 1)[1].split("\n### ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_five_minute_start(spark, tmp_path, monkeypatch) -> None:
    (shell,) = blocks("bash")
    (python,) = blocks("python")
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path / "demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python, str(DOC), "exec"), {})
    text = out.getvalue()
    assert re.search(r"\|\s*patient_id\s*\|", text) and "|k1:" in text  # tokens and pseudonyms carry the key id
    assert "'patient_id': \"arrow: mask 'tokenize'" in text and "'email': 'spark'" in text
    assert "diagnosis" not in text.split("only showing")[0]  # withheld


def code(title: str, language: str) -> list[str]:
    return doc_code(DOC, title, language)


def served_tier1_demo(directory: Path) -> contextlib.AbstractContextManager[str]:
    """The Tier 1 start's shell commands run in ``directory``, its ``govern serve`` started as
    written but on a free port; the gateway's URL."""
    return served_doc_commands(*code("### Tier 1 in five minutes", "bash"), directory)


def run_python(source: str, url: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source.replace("http://127.0.0.1:8000", url), str(DOC), "exec"), {})
    return out.getvalue()


def test_tier1_in_five_minutes(spark, tmp_path, monkeypatch) -> None:
    (python,) = code("### Tier 1 in five minutes", "python")
    with served_tier1_demo(tmp_path) as url:
        monkeypatch.chdir(tmp_path)
        text = run_python(python, url)
    assert re.search(r"\|\s*patient_id\s*\|\s*email\s*\|\s*ssn\s*\|\s*region\s*\|", text)
    assert "k1:" in text and "EU|" in text  # tokens; the pushed filter's rows
    assert re.search(r"^\d+ fragments; \d+ EU rows$", text, re.M)
    assert re.search(r"\*+\d{4}\|", text) and not re.search(r"\d{3}-\d{2}-\d{4}", text)  # last four digits only
