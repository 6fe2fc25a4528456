"""docs/console.md is tested: its screenshots exist (the browser test takes them), its routes
table is the router's, and the audit actions it names are the ones the routes record."""

from __future__ import annotations

import re
from pathlib import Path

from govern.console import routes

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "console.md").read_text()


def test_every_screenshot_exists() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", DOC)
    readme = re.findall(r"!\[[^\]]*\]\((docs/console/[^)]+\.png)\)", (REPO / "README.md").read_text())
    assert len(images) == 8 and readme
    for image in images:
        assert (REPO / "docs" / image).is_file(), image
    for image in readme:
        assert (REPO / image).is_file(), image


def test_the_routes_table_is_the_router() -> None:
    served = {(m, r.path) for r in routes.router.routes for m in getattr(r, "methods", ()) if m != "HEAD"}
    table = DOC[DOC.index("## Routes"):DOC.index("Query parameters")]
    documented = set()
    for line in table.splitlines()[2:]:
        cell = line.split("|")[1] if line.startswith("|") else ""
        for method, path in re.findall(r"`(GET|POST) (/console[^`]*)`", cell):
            documented.add((method, path))
        method = re.match(r"\s*`(GET|POST) ", cell)
        for extra in re.findall(r"`(/[a-z/.-]+)`", cell):  # `/access` after `GET /console/catalog`
            documented.add((method.group(1) if method else "GET",
                            extra if extra.startswith("/console") else f"/console{extra}"))
    assert documented == served


def test_the_documented_actions_are_recorded() -> None:
    source = (REPO / "govern" / "console" / "routes.py").read_text()
    recorded = set(re.findall(r'"(console_[a-z_]+)"', source))
    assert recorded == set(re.findall(r"`(console_[a-z_]+)`", DOC)) - {"console_dry_run_root"}  # a setting
