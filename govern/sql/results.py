"""Result policies on analyst SQL: projection, minimum group size, k-anonymity (docs/privacy.md).

A pass of the SQL pipeline between ``resolve`` and ``sandbox``, run for every surface that takes
SQL (``/v1/sql``, the PostgreSQL wire, Flight SQL: all go through :class:`~govern.sql.SqlEngine`).
The controls come from the plans (``AccessPlan.result``), never from policy files.

**projection** — a projected column may be used only

- as a ``GROUP BY`` key that is not output,
- as one side of an equality between two columns in a ``JOIN … ON`` (or in ``USING``), the
  other a column of a dataset read by the same ``SELECT`` (not a subquery, CTE or table
  function: a join with a value the analyst wrote is a membership test),
- inside ``count(…)`` / ``count(DISTINCT …)``.

Anything else is refused with its position: output (also through an alias, a CTE, a subquery,
``*``, ``COLUMNS(…)``, ``#n``, a table used as a struct or a column alias list), **any predicate**
(``WHERE``/``HAVING``/``QUALIFY``/``ON`` comparisons with a literal, a parameter or an expression,
``IN``, ``LIKE``, ``BETWEEN``, ``IS NULL``, ``CASE``: each is a membership test that answers a
yes/no question about the hidden value, which bisection turns into the value — Snowflake's
documented ``WHERE`` leak), ``ORDER BY`` and window clauses (the order reveals the values'
ranks), and any function of it. Names are matched case-insensitively across the whole query,
whatever table they belong to (conservative).

**min_group** — a query reading such a dataset must be one aggregate ``SELECT`` (see
:func:`check_aggregate` for the exact shape: count/sum/avg over plain columns, filters on group
keys only, sources are datasets joined on column equalities). Its groups are counted (rows, or
distinct privacy units) in the same sandbox; groups below ``k`` refuse the query (``error``) or
are folded into one remainder row whose keys are NULL (``remainder``). If the remainder itself
holds fewer than ``k``, the smallest shown groups are folded into it too (secondary suppression)
until it reaches ``k`` — otherwise "total minus the shown groups" would isolate it; a remainder
that never reaches ``k`` shows NULL aggregates.

**k_anonymity** — the view a query reads is generalized and suppressed before the query sees
it (:func:`govern.mask.kanonymity.kanonymize`), over the whole view, at query time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
from sqlglot import exp

from govern.errors import AccessDenied, SqlError
from govern.plan.model import AccessPlan, KAnonymity, MinGroup
from govern.plan.predicates import literal
from govern.sql.resolve import RESERVED_PREFIX, Reference
from govern.sql.validate import DIALECT, Statement, position_of

__all__ = ["Guard", "MinGroupQuery", "SuppressedResult", "guard", "suppress"]

AGGREGATES = (exp.Count, exp.Sum, exp.Avg)
_HIDDEN = f"{RESERVED_PREFIX}_n"
MAX_FOLDS = 64  # remainder queries per statement before everything is folded at once


@dataclass(frozen=True)
class MinGroupQuery:
    """How to enforce ``min_group`` for one statement, once the views are substituted."""

    spec: MinGroup  # the strictest of the datasets read (largest k; error beats remainder)
    keys: tuple[int, ...]  # positions of the output columns that are group keys
    outputs: int  # output columns the analyst asked for (hidden counts follow)
    units: tuple[tuple[int, str], ...]  # (reference index, privacy unit) counted when count = units
    key_exprs: tuple[exp.Expr, ...] = ()  # the group keys, as written (filled by ``rewrite``)
    groups_sql: str = ""  # every group with its hidden keys and counts (filled by ``rewrite``)
    remainder_sql: str = ""  # aggregates of the folded groups (filled by ``rewrite``)
    suppressed_view: str = ""  # prefix of the views the enforcement registers
    final_tail: str = ""  # the analyst's WHERE/HAVING, ORDER BY, LIMIT over the combined groups


@dataclass
class Guard:
    """The result policies one statement is under."""

    min_group: MinGroupQuery | None = None
    k_anonymity: dict[int, KAnonymity] = field(default_factory=dict)  # reference index → spec

    @property
    def active(self) -> bool:
        return self.min_group is not None or bool(self.k_anonymity)


@dataclass
class SuppressedResult:
    table: pa.Table
    suppressed_groups: int


def guard(statement: Statement, refs: Sequence[Reference], plans: dict[str, AccessPlan]) -> Guard:
    """Check ``statement`` against the result policies of the datasets it reads (raises
    SqlError/AccessDenied with a position) and say what the engine must do to enforce them."""
    policies = {r.index: plans[r.dataset].result for r in refs if plans[r.dataset].result is not None}
    out = Guard()
    if not policies:
        return out
    projected = {c.lower() for r in refs for c in (plans[r.dataset].result.projection  # type: ignore[union-attr]
                                                     if plans[r.dataset].result else ())}
    if projected:
        check_projection(statement, refs, plans, projected)
    for ref in refs:
        policy = plans[ref.dataset].result
        if policy is not None and policy.k_anonymity is not None:
            out.k_anonymity[ref.index] = policy.k_anonymity
            ref.materialize = True  # generalization needs the whole view
            ref.filter = None  # classes are counted over the whole view, never a filtered part
    specs = [(r, plans[r.dataset]) for r in refs if plans[r.dataset].result and plans[r.dataset].result.min_group]  # type: ignore[union-attr]
    if specs:
        out.min_group = check_aggregate(statement, refs, specs)
        for ref in refs:
            ref.materialize = True  # the groups are counted, then the folded ones re-aggregated
            ref.filter = None  # groups fold by the whole data: a filter pushed into the read would move them
    return out


# -- projection ----------------------------------------------------------------------------
def check_projection(statement: Statement, refs: Sequence[Reference], plans: dict[str, AccessPlan],
                     projected: set[str]) -> None:
    tree, text = statement.tree, statement.text
    projected = _joined_closure(tree, projected)
    hidden = {r.node.alias_or_name.lower() for r in refs if plans[r.dataset].result
              and plans[r.dataset].result.projection}  # type: ignore[union-attr]
    ref_ids = {id(r.node) for r in refs}
    for node in tree.walk():
        if (isinstance(node, exp.Join) and str(node.args.get("method") or "").upper() == "NATURAL"
                and not _all_datasets(node, ref_ids)):
            raise _refuse(text, node, "a dataset with projection-only columns is read: NATURAL JOIN only between "
                                      "datasets (it may join a projection-only column to a value you wrote)")
        if isinstance(node, exp.Join) and node.args.get("using") and not _all_datasets(node, ref_ids):
            using = [u for u in node.args["using"] if getattr(u, "name", "").lower() in projected]
            if using:
                raise _refuse(text, using[0], f"column '{using[0].name}' is projection-only: USING may join it "
                                              "only when every source of that SELECT is a dataset (a join with "
                                              "a value you wrote tests whether that value is there)")
        star = isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count)
        if star or type(node).__name__ in ("PositionalColumn", "Columns"):
            raise _refuse(text, node, "a dataset with projection-only columns is read: name the columns you "
                                      "want instead of *, COLUMNS(…) or #n")
        if isinstance(node, exp.TableAlias) and node.args.get("columns"):
            raise _refuse(text, node, "column alias lists are not allowed on a dataset with projection-only "
                                      "columns")
        if not isinstance(node, exp.Column):
            continue
        name = node.name.lower()
        if not node.table and name in hidden and name not in projected:
            raise _refuse(text, node, f"'{node.name}' reads a whole row as a struct, which would output its "
                                      "projection-only columns")
        if name in projected and not _projection_allowed(node, ref_ids):
            raise _refuse(text, node, f"column '{node.name}' is projection-only: it may be joined on "
                                      "(col = col in JOIN … ON), grouped on without being output, or counted; "
                                      "it cannot be output, compared, filtered, ordered by or passed to a "
                                      "function (a predicate on it answers questions about its values)")


def _joined_closure(tree: exp.Expr, projected: set[str]) -> set[str]:
    """A column joined to a projected column (``ON p.patient_id = e.encounter_id``) becomes
    projection-only too: outputting it would output the projected value of every matching row."""
    found = set(projected)
    pairs = [(eq.this.name.lower(), eq.expression.name.lower()) for join in tree.find_all(exp.Join)
             if join.args.get("on") is not None for eq in join.args["on"].find_all(exp.EQ)
             if isinstance(eq.this, exp.Column) and isinstance(eq.expression, exp.Column)]
    grew = True
    while grew:
        grew = False
        for a, b in pairs:
            if (a in found) != (b in found):
                found |= {a, b}
                grew = True
    return found


def _projection_allowed(column: exp.Column, ref_ids: set[int]) -> bool:
    parent = column.parent
    if isinstance(parent, exp.Group):
        return True
    if isinstance(parent, exp.Count) or (isinstance(parent, exp.Distinct) and isinstance(parent.parent, exp.Count)):
        return True
    if isinstance(parent, exp.EQ) and isinstance(parent.this, exp.Column) and isinstance(parent.expression, exp.Column):
        up: exp.Expr | None = parent.parent
        while isinstance(up, exp.And | exp.Paren):
            up = up.parent
        return (isinstance(up, exp.Join) and up.args.get("on") is not None and _within(parent, up.args["on"])
                and _dataset_sides(parent, up, ref_ids))
    return False


def _sources(join: exp.Join) -> list[exp.Expr]:
    """What the SELECT holding ``join`` reads: its FROM and every JOIN's table (or subquery)."""
    select = join.parent
    if not isinstance(select, exp.Select):
        return [join.this]
    found = select.args.get("from_")
    return ([found.this] if found is not None else []) + [j.this for j in select.args.get("joins") or ()]


def _all_datasets(join: exp.Join, ref_ids: set[int]) -> bool:
    return all(id(s) in ref_ids for s in _sources(join))


def _dataset_sides(eq: exp.EQ, join: exp.Join, ref_ids: set[int]) -> bool:
    """Whether both columns of ``eq`` are columns of datasets read by that SELECT. The other side
    of the equality must not be something the analyst wrote — a literal subquery, a CTE, a table
    function — or the join is a membership test (``JOIN (SELECT 'k1:…' AS x) g ON id = g.x``) and
    the other side outputs the hidden value. A qualified column names its source; an
    unqualified one is accepted only when every source of the SELECT is a dataset."""
    sources = _sources(join)
    datasets = {s.alias_or_name.lower() for s in sources if id(s) in ref_ids}
    others = {s.alias_or_name.lower() for s in sources if id(s) not in ref_ids}
    for side in (eq.this, eq.expression):
        qualifier = side.table.lower()
        if not qualifier and others:
            return False
        if qualifier and (qualifier not in datasets or qualifier in others):
            return False
    return True


def _within(node: exp.Expr, root: exp.Expr) -> bool:
    while node is not None:
        if node is root:
            return True
        node = node.parent  # type: ignore[assignment]
    return False


# -- min_group -----------------------------------------------------------------------------
def check_aggregate(statement: Statement, refs: Sequence[Reference],
                    specs: list[tuple[Reference, AccessPlan]]) -> MinGroupQuery:
    """The shape a query must have under ``min_group``:

    - one ``SELECT`` (no ``WITH``, set operation, subquery, window, ``QUALIFY``, ``DISTINCT``);
    - ``FROM`` and ``JOIN`` name datasets only, joined on equalities of two columns (or USING);
    - ``GROUP BY`` plain columns (or ``ALL``, ordinals, aliases of plain columns), or no
      ``GROUP BY`` and only aggregates (one group);
    - every output is a group key, or an expression over ``count(*)``, ``count([DISTINCT] col)``,
      ``sum(col)``, ``avg(col)`` (no ``min``/``max``/``any_value``/``list``: they output one
      row's value; no ``CASE``/``FILTER`` inside an aggregate: it would pick one person);
    - ``WHERE`` references group keys only: it then keeps or drops whole groups, each of which the
      same query without the filter would show as it is — a filter on another column (``WHERE
      patient_id <> 17``) would let two allowed answers differ by one person.
    """
    tree, text = statement.tree, statement.text
    what = "the query reads a dataset with a minimum group size (min_group)"
    if not isinstance(tree, exp.Select):
        raise _refuse(text, tree, f"{what}: it must be a single aggregate SELECT (no UNION/VALUES)")
    for key in ("with", "with_", "qualify", "distinct", "windows", "pivots", "laterals"):
        if tree.args.get(key):
            raise _refuse(text, tree, f"{what}: WITH, QUALIFY, DISTINCT, WINDOW and LATERAL are not allowed; "
                                      "aggregate directly")
    ref_nodes = {id(r.node) for r in refs}
    for node in tree.walk():
        if node is not tree and isinstance(node, exp.Select | exp.Subquery | exp.Window | exp.Unnest | exp.Values):
            raise _refuse(text, node, f"{what}: subqueries, window functions and table functions are not allowed")
        if isinstance(node, exp.Table) and id(node) not in ref_nodes:
            raise _refuse(text, node, f"{what}: only datasets may be read")
    for join in tree.args.get("joins") or ():
        on = join.args.get("on")
        if on is not None and not _column_equalities(on):
            raise _refuse(text, on, f"{what}: a JOIN condition must be equalities of two columns")
    items = list(tree.expressions)
    keys = _group_keys(tree, items, text, what)
    key_names = {_col_key(k) for k in keys}
    positions: list[int] = []
    for i, item in enumerate(items):
        inner = item.this if isinstance(item, exp.Alias) else item
        if isinstance(inner, exp.Column) and _col_key(inner) in key_names:
            positions.append(i)
            continue
        _check_aggregate_item(item, key_names, text, what, require_aggregate=True)
    where = tree.args.get("where")
    if where is not None:
        for column in where.find_all(exp.Column):
            if _col_key(column) not in key_names:
                raise _refuse(text, column, f"{what}: WHERE may only test group keys (GROUP BY columns); "
                                            f"'{column.sql(dialect=DIALECT)}' is not one — a filter on another "
                                            "column would let two answers differ by one person")
    aliases = {item.alias.lower() for item in items if isinstance(item, exp.Alias)}
    for clause in ("having", "order"):
        part = tree.args.get(clause)
        if part is not None:
            _check_aggregate_item(part, key_names | {(None, a) for a in aliases}, text, what, require_aggregate=False)
    k = max(p.result.min_group.k for _r, p in specs)  # type: ignore[union-attr]
    count = "units" if any(p.result.min_group.count == "units" for _r, p in specs) else "rows"  # type: ignore[union-attr]
    semantics = "error" if any(p.result.min_group.semantics == "error" for _r, p in specs) else "remainder"  # type: ignore[union-attr]
    units: list[tuple[int, str]] = []
    if count == "units":
        for ref, plan in specs:
            unit = plan.privacy_unit
            if unit is None or unit not in plan.visible_names:
                raise AccessDenied(f"{what} counted in privacy units, but the unit column of '{ref.dataset}' "
                                   "is not visible to you")
            if unit not in ref.columns:
                ref.columns.append(unit)
            units.append((ref.index, unit))  # the alias is known after the rewrite
    return MinGroupQuery(MinGroup(k, count, semantics), tuple(positions), len(items), tuple(units))


def _column_equalities(node: exp.Expr) -> bool:
    if isinstance(node, exp.Paren):
        return _column_equalities(node.this)
    if isinstance(node, exp.And):
        return _column_equalities(node.this) and _column_equalities(node.expression)
    return isinstance(node, exp.EQ) and isinstance(node.this, exp.Column) and isinstance(node.expression, exp.Column)


def _col_key(column: exp.Column) -> tuple[str | None, str]:
    return (column.table.lower() or None, column.name.lower())


def _group_keys(tree: exp.Select, items: list[exp.Expr], text: str, what: str) -> list[exp.Column]:
    group = tree.args.get("group")
    if group is None:
        return []
    if any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")):
        raise _refuse(text, group, f"{what}: ROLLUP, CUBE and GROUPING SETS are not allowed")
    if group.args.get("all"):
        found = [i.this if isinstance(i, exp.Alias) else i for i in items if not any(i.find_all(exp.AggFunc))]
    else:
        found = []
        by_alias = {i.alias.lower(): i.this for i in items if isinstance(i, exp.Alias)}
        for g in group.expressions:
            if isinstance(g, exp.Literal) and not g.is_string and g.name.isdigit() and 0 < int(g.name) <= len(items):
                item = items[int(g.name) - 1]
                g = item.this if isinstance(item, exp.Alias) else item
            elif isinstance(g, exp.Column) and not g.table and g.name.lower() in by_alias:
                g = by_alias[g.name.lower()]
            found.append(g)
    for g in found:
        if not isinstance(g, exp.Column):
            raise _refuse(text, g, f"{what}: GROUP BY plain columns only ('{g.sql(dialect=DIALECT)}' is an "
                                   "expression: it could single out one row)")
    return found  # type: ignore[return-value]


def _check_aggregate_item(node: exp.Expr, keys: set[tuple[str | None, str]], text: str, what: str, *,
                          require_aggregate: bool) -> None:
    seen = False
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, exp.AggFunc):
            if not isinstance(n, AGGREGATES):
                raise _refuse(text, n, f"{what}: only count, sum and avg are allowed ('{n.sql(dialect=DIALECT)}' "
                                       "would output one row's value)")
            arg = n.this
            if isinstance(arg, exp.Distinct) and isinstance(n, exp.Count) and len(arg.expressions) == 1:
                arg = arg.expressions[0]
            if not (isinstance(arg, exp.Column) or (isinstance(n, exp.Count) and isinstance(arg, exp.Star))):
                raise _refuse(text, n, f"{what}: aggregate a plain column ('{n.sql(dialect=DIALECT)}' computes "
                                       "on each row first, which can single out one person)")
            seen = True
            continue
        if isinstance(n, exp.Filter | exp.Star):
            raise _refuse(text, n, f"{what}: FILTER and * are not allowed")
        if isinstance(n, exp.Column) and _col_key(n) not in keys and (None, n.name.lower()) not in keys:
            raise _refuse(text, n, f"{what}: '{n.sql(dialect=DIALECT)}' is neither a group key nor inside "
                                   "count/sum/avg")
        stack.extend(n.iter_expressions())
    if require_aggregate and not seen and any(True for _ in node.find_all(exp.Column)):
        raise _refuse(text, node, f"{what}: output group keys or aggregates only")


def rewrite(query: MinGroupQuery, tree: exp.Select, refs: Sequence[Reference], params: Sequence[Any],
            view: str) -> MinGroupQuery:
    """After the views are substituted, the three queries that enforce ``min_group``:

    1. *groups*: the analyst's aggregate over the whole grouping — **without** its ``WHERE``,
       ``HAVING``, ``ORDER BY`` and ``LIMIT`` — plus hidden columns: the group keys, the
       aggregates ``HAVING``/``ORDER BY`` use, the row and unit counts;
    2. *remainder*: the same aggregates over the rows of the folded groups (listed in a view);
    3. *final*: the analyst's ``WHERE`` (on keys), ``HAVING``, ``ORDER BY`` and ``LIMIT`` applied
       to the shown groups and the remainder row.

    Which groups are folded therefore depends only on the data sources and the grouping, never
    on the filters: two queries differing in a filter cannot fold different groups and so
    cannot isolate one group by difference. The analyst's parameters are bound as literals.
    """
    tree = _bind(tree.copy(), params)
    aliases = {r.index: r.node.alias_or_name for r in refs}
    counts: list[exp.Expr] = [exp.alias_(exp.Count(this=exp.Star()), f"{_HIDDEN}_rows", quoted=True)]
    for i, (index, unit) in enumerate(query.units):
        column = exp.column(unit, table=aliases[index], quoted=True)
        counts.append(exp.alias_(exp.Count(this=exp.Distinct(expressions=[column])), f"{_HIDDEN}_u{i}", quoted=True))
    items = list(tree.expressions)
    keys = _group_keys(tree, items, "", "")
    key_items = [exp.alias_(k.copy(), f"{_HIDDEN}_k{i}", quoted=True) for i, k in enumerate(keys)]
    used: dict[str, exp.Expr] = {}  # aggregates of HAVING / ORDER BY, by their SQL
    for clause in ("having", "order"):
        part = tree.args.get(clause)
        for agg in part.find_all(exp.AggFunc) if part is not None else ():
            used.setdefault(agg.sql(dialect=DIALECT), agg)
    agg_names = {text: f"{_HIDDEN}_h{j}" for j, text in enumerate(used)}
    agg_items = [exp.alias_(agg.copy(), agg_names[text], quoted=True) for text, agg in used.items()]

    groups = tree.copy()
    for clause in ("where", "having", "order", "limit", "offset"):
        groups.set(clause, None)
    groups = groups.select(*key_items, *agg_items, *counts, append=True)

    remainder = tree.copy()
    for clause in ("where", "group", "having", "order", "limit", "offset"):
        remainder.set(clause, None)
    outputs = [item for i, item in enumerate(remainder.expressions) if i not in query.keys]
    remainder.set("expressions", [*(outputs or [exp.Literal.number(1)]), *agg_items, *counts])
    if keys:
        match = exp.and_(*(exp.NullSafeEQ(this=exp.column(f"k{i}", table="s"), expression=k.copy())
                           for i, k in enumerate(keys)))
        exists = exp.Exists(this=exp.select("1").from_(exp.to_table(f"{view}_suppressed").as_("s")).where(match))
        remainder = remainder.where(exists, append=True)

    key_names = {_col_key(k): f"{_HIDDEN}_k{i}" for i, k in enumerate(keys)}
    positions = {item.alias.lower(): i for i, item in enumerate(items) if isinstance(item, exp.Alias)}

    def to_combined(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.AggFunc) and node.sql(dialect=DIALECT) in agg_names:
            return exp.column(agg_names[node.sql(dialect=DIALECT)], quoted=True)
        if isinstance(node, exp.Column):
            name = key_names.get(_col_key(node))
            if name is None and not node.table and node.name.lower() in positions:
                name = f"c{positions[node.name.lower()]}"
            if name is None:
                name = next((v for (t, n), v in key_names.items() if n == node.name.lower()), None)
            if name is not None:
                return exp.column(name, quoted=True)
        if isinstance(node, exp.Ordered) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            position = int(node.this.name) - 1
            return node.__class__(**{**node.args, "this": exp.column(f"c{position}", quoted=True)})
        return node

    final = exp.select("*").from_(exp.to_table(f"{view}_groups"))
    conditions = [part.this.transform(to_combined) for part in (tree.args.get("where"), tree.args.get("having"))
                  if part is not None]
    if conditions:
        final = final.where(exp.and_(*conditions))
    for clause in ("order", "limit", "offset"):
        part = tree.args.get(clause)
        if part is not None:
            final.set(clause, part.transform(to_combined))
    tail = final.sql(dialect=DIALECT, comments=False).split(f"{view}_groups", 1)[1]
    return MinGroupQuery(query.spec, query.keys, query.outputs, query.units, tuple(keys),
                         groups.sql(dialect=DIALECT, comments=False), remainder.sql(dialect=DIALECT, comments=False),
                         view, tail)


def _bind(tree: exp.Select, params: Sequence[Any]) -> exp.Select:
    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder) and str(node.this or "").isdigit():
            index = int(str(node.this)) - 1  # describing a prepared statement: no values yet (NULL)
            value = params[index] if index < len(params) else None
            return literal(float(value) if isinstance(value, Decimal) else value)
        return node

    return tree.transform(replace)  # type: ignore[return-value]


def suppress(query: MinGroupQuery, groups: pa.Table, run: Callable[[str], pa.Table],
             register: Callable[[str, pa.Table], None]) -> SuppressedResult:
    """Apply ``min_group`` to the *groups* query's result, then the analyst's filters, order
    and limit (``run(sql)`` runs a query in the sandbox, ``register`` adds a view to it)."""
    spec = query.spec
    sizes = _sizes(groups, query)
    small = [i for i, s in enumerate(sizes) if s < spec.k]
    if small and spec.semantics == "error":
        raise AccessDenied(f"{len(small)} group(s) of the result hold fewer than {spec.k} "
                           f"{'privacy units' if spec.count == 'units' else 'rows'} (min_group, error "
                           "semantics): group by coarser keys", suppressed_groups=len(small))
    folded = set(small)
    names = groups.column_names
    combined = groups.rename_columns([f"c{i}" if i < query.outputs else n for i, n in enumerate(names)])
    if folded:
        order = sorted((i for i in range(groups.num_rows) if i not in folded), key=lambda i: (sizes[i], i))
        keys = groups.select([f"{_HIDDEN}_k{i}" for i in range(len(query.key_exprs))])
        for _ in range(MAX_FOLDS):
            row = _remainder(query, keys, folded, run, register)
            if _sizes(row, query)[0] >= spec.k or not order:
                break
            folded.add(order.pop(0))  # secondary suppression: the smallest shown group joins the remainder
        else:
            folded.update(order)
            row = _remainder(query, keys, folded, run, register)
        reaches = _sizes(row, query)[0] >= spec.k
        kept = combined.take(pa.array(sorted(set(range(groups.num_rows)) - folded), pa.int64()))
        values = iter(row.columns)
        cells: list[pa.Array] = []
        for i, f in enumerate(combined.schema):
            is_key = i in query.keys or f.name.startswith(f"{_HIDDEN}_k")
            is_count = f.name.startswith((f"{_HIDDEN}_rows", f"{_HIDDEN}_u"))
            value = None if is_key else next(values)[0].as_py()
            if not reaches and not is_count:
                value = None
            cells.append(pa.array([value], type=f.type))
        combined = pa.concat_tables([kept, pa.Table.from_arrays(cells, schema=combined.schema)])
    register(f"{query.suppressed_view}_groups", combined)
    select = ", ".join(f'"c{i}" AS "{names[i].replace(chr(34), chr(34) * 2)}"' for i in range(query.outputs))
    answer = run(f'SELECT {select} FROM "{query.suppressed_view}_groups"{query.final_tail}')
    return SuppressedResult(answer, len(folded))


def _sizes(table: pa.Table, query: MinGroupQuery) -> list[int]:
    names = table.column_names
    if query.spec.count == "units":
        columns = [table.column(n).to_pylist() for n in names if n.startswith(f"{_HIDDEN}_u")]
        return [min(int(c[i] or 0) for c in columns) for i in range(table.num_rows)]
    return [int(v or 0) for v in table.column(f"{_HIDDEN}_rows").to_pylist()]


def _remainder(query: MinGroupQuery, keys: pa.Table, folded: set[int], run: Callable[[str], pa.Table],
               register: Callable[[str, pa.Table], None]) -> pa.Table:
    chosen = keys.take(pa.array(sorted(folded), pa.int64()))
    if chosen.num_columns:  # one group without keys: the remainder is the whole query
        register(f"{query.suppressed_view}_suppressed",
                 chosen.rename_columns([f"k{i}" for i in range(chosen.num_columns)]))
    return run(query.remainder_sql)


def _refuse(text: str, node: exp.Expr, message: str) -> SqlError:
    return SqlError(message, position=position_of(text, node), sqlstate="42501")
