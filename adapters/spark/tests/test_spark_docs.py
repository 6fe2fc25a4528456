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
