"""Bind a validated query's table names to datasets, and rewrite it to read sandbox views.

Second pass of the SQL pipeline (``validate`` → ``resolve`` → ``prune`` → ``sandbox``):

- every table name is a CTE of the query or a dataset the caller may read under the purpose
  (matched case-insensitively, as DuckDB does); anything else is "does not exist or is not
  readable", whether it exists or not;
- each *reference* to a dataset (each place the query names it) becomes its own view in the
  sandbox, ``"__govern_<random>_<n>" AS <name or alias>``, read by its own governed stream.
  A self-join therefore reads two streams, each with the columns and filters of its side;
- a reference DuckDB may scan more than once — inside a recursive CTE, or inside a CTE used
  more than once — is *materialized* (read into memory, bounded by ``max_rows``), because a
  stream can be read only once.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlglot import exp

from govern.errors import LimitExceeded, SqlError
from govern.sql.validate import DIALECT, Statement, position_of

__all__ = ["MAX_REFERENCES", "RESERVED_PREFIX", "Reference", "bind", "rewrite"]

RESERVED_PREFIX = "__govern"
MAX_REFERENCES = 100  # dataset references per query: each is a governed read with its own stream


@dataclass
class Reference:
    """One place the query names a dataset, and how the sandbox will read it."""

    index: int
    node: exp.Table  # in the statement's tree
    dataset: str
    view: str  # the name registered in the sandbox
    materialize: bool  # DuckDB may scan it more than once
    columns: list[str] = field(default_factory=list)  # masked columns it uses, in plan order
    filter: str | None = None  # conjuncts of its WHERE pushed down to the governed read


def bind(statement: Statement, readable: Mapping[str, str], purpose: str) -> list[Reference]:
    """Resolve table names; ``readable`` maps lower-case names to readable dataset names."""
    tree = statement.tree
    ctes = _ctes(tree)
    for name, nodes in ctes.items():
        if name.startswith(RESERVED_PREFIX) or name in readable:
            what = "is reserved" if name.startswith(RESERVED_PREFIX) else "is the name of a dataset"
            raise SqlError(f"CTE name '{nodes[0].alias}' {what}; choose another name",
                           position=position_of(statement.text, nodes[0].args["alias"]), sqlstate="42P07")
    multiplicity = _multiplicity(tree, ctes)
    token = secrets.token_hex(4)
    refs: list[Reference] = []
    for node in tree.walk(bfs=False):
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
            continue
        name = node.name.lower()
        if name in ctes:
            continue
        dataset = readable.get(name)
        if dataset is None:
            position = position_of(statement.text, node)
            if any(ch in name for ch in "/\\:.") or len(name) > 128:
                raise SqlError("files and URLs cannot be read from SQL: name a dataset",
                               position=position, sqlstate="42501")
            raise SqlError(f"table '{node.name}' does not exist or is not readable under purpose '{purpose}'",
                           position=position, sqlstate="42P01")
        index = len(refs)
        if index >= MAX_REFERENCES:
            raise LimitExceeded(f"a query may name datasets at most {MAX_REFERENCES} times",
                                limit=MAX_REFERENCES, position=position_of(statement.text, node))
        scans = _context_multiplicity(node, multiplicity)
        refs.append(Reference(index, node, dataset, f"{RESERVED_PREFIX}_{token}_{index}", scans > 1))
    return refs


def rewrite(statement: Statement, refs: list[Reference]) -> str:
    """The SQL the sandbox runs: the validated tree, comments dropped, each dataset reference
    pointing at its view and keeping the name or alias the query used for it."""
    for ref in refs:
        node = ref.node
        original = node.this.copy()
        node.set("this", exp.to_identifier(ref.view, quoted=True))
        alias = node.args.get("alias")
        if alias is None:
            node.set("alias", exp.TableAlias(this=original))
        elif alias.this is None:
            alias.set("this", original)
    return statement.tree.sql(dialect=DIALECT, comments=False)


# -- how often DuckDB may scan a reference -----------------------------------------------------
def _ctes(tree: exp.Expr) -> dict[str, list[exp.CTE]]:
    out: dict[str, list[exp.CTE]] = {}
    for cte in tree.find_all(exp.CTE):
        out.setdefault(cte.alias.lower(), []).append(cte)
    return out


def _enclosing_cte(node: exp.Expr) -> exp.CTE | None:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.CTE):
            return parent
        parent = parent.parent
    return None


def _multiplicity(tree: exp.Expr, ctes: dict[str, list[exp.CTE]]) -> dict[int, float]:
    """How many times each CTE's body may be evaluated (``inf`` when recursive)."""
    refs: dict[str, list[exp.Table]] = {name: [] for name in ctes}
    for node in tree.find_all(exp.Table):
        if isinstance(node.this, exp.Identifier) and node.name.lower() in refs:
            refs[node.name.lower()].append(node)
    memo: dict[int, float] = {}
    visiting: set[int] = set()

    def of(cte: exp.CTE) -> float:
        key = id(cte)
        if key in memo:
            return memo[key]
        name = cte.alias.lower()
        if key in visiting or len(ctes[name]) > 1 or _is_recursive(cte, name):
            memo[key] = math.inf  # recursion, or two CTEs with one name: assume the worst
            return math.inf
        visiting.add(key)
        total = sum(_context(r, of) for r in refs[name])
        visiting.discard(key)
        memo[key] = max(total, 1)  # an unused CTE is still bound once
        return memo[key]

    for defs in ctes.values():
        for cte in defs:
            of(cte)
    return memo


def _is_recursive(cte: exp.CTE, name: str) -> bool:
    with_ = cte.parent
    if not (isinstance(with_, exp.With) and with_.args.get("recursive")):
        return False
    return any(isinstance(t.this, exp.Identifier) and t.name.lower() == name for t in cte.this.find_all(exp.Table))


def _context(node: exp.Expr, of) -> float:  # type: ignore[no-untyped-def]
    cte = _enclosing_cte(node)
    return 1.0 if cte is None else of(cte)


def _context_multiplicity(node: exp.Expr, multiplicity: dict[int, float]) -> float:
    cte = _enclosing_cte(node)
    while cte is not None:
        if multiplicity.get(id(cte), 1.0) > 1:
            return multiplicity[id(cte)]
        cte = _enclosing_cte(cte)
    return 1.0
