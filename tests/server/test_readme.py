"""The README's analyst examples run as written against a real ``govern serve`` of the demo world:
the psql session, the curl call and the Python blocks (psycopg, ``Client.sql``). Only the ports
change (the test server listens on free ones)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def analyst_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the README's analyst section."""
    text = README.read_text()
    section = text[text.index("### Analyst"):]
    ends = [i for i in (section.find("\n## "), section.find("\n### ", 1)) if i > 0]
    section = section[:min(ends)]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", section, re.S)]


def on(server, code: str) -> str:
    return code.replace("http://127.0.0.1:8000", server.url).replace("port=6432", f"port={server.pg_port}")


@pytest.fixture
def here(server, tmp_path: Path) -> Path:
    """A working folder where ``demo/`` is the served demo world, as after ``make demo``."""
    (tmp_path / "demo").symlink_to(server.world.directory)
    return tmp_path


def test_readme_analyst_section_has_its_examples() -> None:
    langs = [lang for lang, _ in analyst_blocks()]
    assert langs.count("bash") == 2 and langs.count("python") == 2 and "" in langs


@pytest.mark.skipif(shutil.which("psql") is None or shutil.which("curl") is None, reason="needs psql and curl")
def test_readme_shell_examples_run(server, here: Path) -> None:
    blocks = analyst_blocks()
    login, session = blocks[0][1], blocks[1][1]
    # the psql session: the statements typed at the prompts
    typed = "\n".join(re.sub(r"^analytics[=-]> ", "", line) for line in session.splitlines()
                      if line.startswith("analytics"))
    env = {"PATH": os.environ["PATH"]}
    psql = subprocess.run(["bash", "-ec", on(server, login)], input=typed, capture_output=True, text=True,
                          cwd=here, env=env, timeout=60)
    assert psql.returncode == 0, psql.stderr
    assert "public | patients" in psql.stdout and "(3 rows)" in psql.stdout and " k1:" in psql.stdout
    curl = next(code for lang, code in blocks if lang == "bash" and "curl" in code)
    key = json.loads((here / "demo" / "keys.json").read_text())["alice"]
    out = subprocess.run(["bash", "-ec", on(server, curl)], capture_output=True, text=True, cwd=here,
                         env={**env, "KEY": key}, timeout=60)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert [c["name"] for c in answer["columns"]] == ["department", "visits", "avg_cost"] and answer["row_count"] > 0


def test_readme_python_examples_run(server, here: Path) -> None:
    from govern.client import Client

    key = json.loads((here / "demo" / "keys.json").read_text())["alice"]
    scope: dict = {"KEY": key, "Client": Client}
    for lang, code in analyst_blocks():
        if lang == "python":
            exec(on(server, code), scope)  # the README's own examples
    assert scope["rows"] and all(len(zip_) == 3 for zip_, _ in scope["rows"])  # zips generalized to 3 characters
    assert scope["df"].to_dict("records") == [{"region": "EU", "count_star()": 679}]
    assert scope["top"].num_rows > 0 and scope["top"].schema.names == ["department", "avg_cost"]
    scope["c"].close()
