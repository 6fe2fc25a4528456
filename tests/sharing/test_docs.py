"""Every example in docs/sharing.md runs: the steward's commands in the demo world's folder, the
recipient's Python against a real ``govern serve``."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pyarrow as pa

from tests.sharing.conftest import govern_cli, rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "sharing.md"


def blocks(kind: str) -> list[str]:
    return [part.split("```", 1)[0] for part in DOC.read_text().split(f"```{kind}\n")[1:]]


def test_every_example_runs(shared) -> None:
    [shell] = blocks("shell")
    port = shared.server.url.rsplit(":", 1)[1]
    lines = [line for line in shell.splitlines() if line.strip()]
    assert lines[0] == "cd demo"
    for line in lines[1:]:
        argv = shlex.split(line)
        assert argv[0] == "govern"
        done = govern_cli(shared.world, *argv[1:], env={"GOVERN_PORT": port})
        assert done.returncode == 0, (line, done.stderr)
    namespace: dict[str, object] = {}
    examples = blocks("python")
    assert len(examples) == 2
    cwd = os.getcwd()
    os.chdir(shared.world.directory)
    try:
        for code in examples:
            exec(compile(code, str(DOC), "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert [s.name for s in namespace["shares"]] == ["research"]
    assert sorted(t.name for t in namespace["tables"]) == ["encounters", "patients"]
    want = rows(shared.server, "bob", "research", "patients")
    assert isinstance(namespace["table"], pa.Table) and namespace["table"].equals(want)
    assert len(namespace["df"]) == want.num_rows and isinstance(namespace["version"], int)


README = DOC.parents[1] / "README.md"


def test_the_readme_partner_example_runs(shared) -> None:
    """The README's partner section: the same profile command, then the one-line pandas read."""
    section = README.read_text().split("### Partner", 1)[1].split("\n## ", 1)[0]
    shell = section.split("```shell\n", 1)[1].split("```", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    port = shared.server.url.rsplit(":", 1)[1]
    lines = [line for line in shell.splitlines() if line.strip()]
    assert lines[0] == "cd demo"
    for line in lines[1:]:
        done = govern_cli(shared.world, *shlex.split(line)[1:], env={"GOVERN_PORT": port})
        assert done.returncode == 0, (line, done.stderr)
    namespace: dict[str, object] = {}
    cwd = os.getcwd()
    os.chdir(shared.world.directory)
    try:
        exec(compile(code, str(README), "exec"), namespace)
    finally:
        os.chdir(cwd)
    want = rows(shared.server, "bob", "research", "patients")
    assert len(namespace["df"]) == want.num_rows
    assert list(namespace["df"].columns) == want.column_names
