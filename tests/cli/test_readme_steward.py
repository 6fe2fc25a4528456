"""The README's quickstart commands and the data steward's first five minutes run as written,
with the real `govern` executable, in a fresh demo world: ``policy check``, ``policy explain``
(its output as shown), ``policy test``, ``policy diff``, ``preview`` and ``reidentify``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
GOVERN = str(Path(sys.executable).parent / "govern")


def _blocks(heading: str, until: str) -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index(heading):]
    section = section[:section.index(until)]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", section, re.S)]


def _commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    words = command.split()
    exe = words[0]
    assert exe.endswith("govern"), command
    return subprocess.run([GOVERN, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A working folder with `demo/` made by the quickstart's first command (small, for speed)."""
    here = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    [quick] = [code for lang, code in _blocks("## Quickstart", "## The first five minutes") if "govern demo" in code]
    first = _commands(quick)[0].replace("--rows 10000", "--rows 500")
    made = _run(first, here, env)
    assert made.returncode == 0, made.stderr
    return here, env


def test_quickstart_commands_run(world) -> None:
    here, env = world
    [quick] = [code for lang, code in _blocks("## Quickstart", "## The first five minutes") if "govern demo" in code]
    commands = _commands(quick)
    assert commands[1] == "cd demo" and commands[-1].endswith("govern serve")
    for command in commands[2:-1]:  # serve runs until stopped: tests/server start it for real
        result = _run(command, here / "demo", env)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.strip(), command


def test_steward_commands_run_as_shown(world, tmp_path: Path) -> None:
    here, env = world
    blocks = _blocks("### Data steward", "### Pipeline engineer")
    demo = here / "demo"
    # `govern policy diff main-policies/ policies/`: main-policies is the branch you started from
    shutil.copytree(demo / "policies", demo / "main-policies", dirs_exist_ok=True)
    check, explain = _commands(blocks[0][1])
    assert _run(check, demo, env).returncode == 0
    out = _run(explain, demo, env)
    assert out.returncode == 0, out.stderr
    shown = [line for line in blocks[1][1].splitlines() if line.strip() and line.strip() != "..."]
    printed = out.stdout.splitlines()
    for line in shown:  # every line the README shows is printed, as shown
        assert line.rstrip() in [p.rstrip() for p in printed], line
    token = None
    for command in _commands(blocks[2][1]):
        if "$TOKEN" in command:
            read = _run("govern preview carol patients --purpose governance --columns patient_id --limit 1 "
                        "--format csv", demo, env)
            token = read.stdout.splitlines()[1].strip().strip('"')
            command = command.replace('"$TOKEN"', token)
        result = _run(command, demo, env)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        if command.startswith("govern policy test"):
            assert "0 failed" in result.stdout
        if command.startswith("govern policy diff"):
            assert "no change in any plan" in result.stdout
        if command.startswith("govern reidentify"):
            assert result.stdout.startswith(token + "\t") and result.stdout.split("\t")[1].strip().isdigit()
    assert token is not None
