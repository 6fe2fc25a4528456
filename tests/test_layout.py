"""The layout is the pipeline (ARCHITECTURE §2): no import cycles — also none hidden behind an
import inside a function or under ``TYPE_CHECKING`` — and the rooms depend on each other only
downwards: the core (identity, policy, plan, mask, storage, audit) never reaches up into
delivery; delivery surfaces (HTTP, the PostgreSQL wire, the client, the CLI) are leaves that
only the CLI starts; analyst SQL, the privacy services and monitoring use one piece of
``deliver`` — the Governor — and nothing of the lifecycle above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "govern"

CORE = {"govern.identity", "govern.policy", "govern.plan", "govern.mask", "govern.storage", "govern.audit",
        "govern.config", "govern.errors"}
DELIVERY = {"govern.deliver", "govern.sql", "govern.server", "govern.pgwire", "govern.client", "govern.cli",
            "govern.privacy", "govern.monitor", "govern.console"}
SURFACES = {"govern.server", "govern.pgwire", "govern.client", "govern.cli"}
# Known downward-looking exceptions, each with its reason.
ALLOWED = {
    # catalog.yaml's `synthesizer:` block is checked with the rest of the policy files
    ("govern.policy.load", "govern.privacy.synthetic.spec"),
    # the console is pages of the HTTP app, mounted by it: it names its exchanges and reads its
    # forms with the HTTP shell's own helpers rather than a copy of them
    ("govern.console.routes", "govern.server.exchange"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(module: str) -> set[str]:
    """Every govern module ``module`` imports, wherever the import statement is."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            names = subs if len(subs) == len(node.names) else [*subs, base]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("govern") and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


def _edges() -> list[tuple[str, str]]:
    return [(m, t) for m, targets in GRAPH.items() for t in targets if _room(m) != _room(t)]


def test_the_core_never_reaches_up_into_delivery() -> None:
    bad = [(m, t) for m, t in _edges() if _room(m) in CORE and _room(t) in DELIVERY and (m, t) not in ALLOWED]
    assert bad == []


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_surfaces_are_leaves(surface: str) -> None:
    users = {m for m, t in _edges() if _room(t) == surface and _room(m) != "govern.cli" and (m, t) not in ALLOWED}
    assert users == set(), f"{surface} is imported by {sorted(users)}"


def test_engines_and_services_use_only_the_governor_from_deliver() -> None:
    bad = [(m, t) for m, t in _edges()
           if _room(m) in ("govern.sql", "govern.privacy", "govern.monitor") and _room(t) == "govern.deliver"
           and t != "govern.deliver.governor"]
    assert bad == []


def test_every_named_room_exists() -> None:
    """A renamed room must not make the rules above pass vacuously."""
    assert CORE | DELIVERY <= {_room(m) for m in MODULES}
