"""docs/monitoring.md's examples run as written against a demo world: the ``govern classify``
sessions (every line shown, except those marked ``…``, is in the real output), the Python
block, and the alerting rule's metric and label."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def blocks(lang: str = "") -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", DOC.read_text(), re.S) if m.group(1) == lang]


def sessions() -> list[tuple[list[str], list[str]]]:
    """(command words, shown output lines) of each ``$ govern …`` block."""
    out = []
    for block in blocks():
        lines = block.splitlines()
        if lines and lines[0].startswith("$ govern "):
            out.append((lines[0][2:].split()[1:], lines[1:]))
    return out


@pytest.fixture
def here(demo_world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder where ``demo/`` is a private copy of the demo world, as after ``make demo``."""
    shutil.copytree(demo_world.directory, tmp_path / "demo", ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_classify_sessions_run_as_shown(here: Path) -> None:
    found = sessions()
    assert [words[:2] for words, _ in found] == [["classify", "patients"], ["classify", "patients"]]
    exe = Path(sys.executable).parent / "govern"
    for words, shown in found:
        run = subprocess.run([str(exe), *words], capture_output=True, text=True, cwd=here, timeout=120)
        assert run.returncode == 0, run.stderr
        real = run.stdout.splitlines()
        for line in shown:
            if "…" not in line and line.strip():
                assert line in real, f"{' '.join(words)}: {line!r} is not in the output"
    assert "phone: {tags: [contact]" in (here / "demo" / "policies" / "catalog.yaml").read_text()


def test_the_python_example_runs(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (python,) = blocks("python")
    scope: dict = {}
    exec(python, scope)  # the doc's own example
    assert scope["found"].baseline is None and scope["profile"].rows == 2_000
    assert capsys.readouterr().out.strip() == f"{scope['profile'].data_version} None"


def test_the_alerting_rule_names_an_exported_metric() -> None:
    rule = next(b for b in blocks() if "alert:" in b)
    expr = re.search(r"expr: (\w+)\{against=\"(\w+)\"\}", rule)
    assert expr is not None
    text = DOC.read_text()
    assert f"| `{expr.group(1)}` |" in text and expr.group(2) in ("baseline", "previous")
