"""Warnings about a *valid* policy that still leaks: ``govern policy check`` prints them as
``file:line: warning: …`` and exits 0.

Each lint is a small function that appends to a :class:`~govern.errors.ProblemCollector` (errors
are data, warnings too); ``LINTS`` lists them once, like ``govern.policy.check.CHECKS``.

Lints decide from the policy files alone. They cannot enumerate who a rule applies to: principals
from an identity provider arrive with roles and a clearance the policy never names. So they are
conservative: a lint warns when *some* rule of the policy could produce the leak, not only when
a declared principal does.
"""

from __future__ import annotations

from collections.abc import Callable

from govern.errors import Problem, ProblemCollector
from govern.plan import predicates
from govern.plan.model import level_rank
from govern.policy.model import DatasetEntry, PolicySet

__all__ = ["LINTS", "lint_cell_rule_indicators", "lint_policy"]


def _parents(policy: PolicySet, start: str) -> list[str]:
    """``start`` and every object it reaches through ``g2`` links (parent tags, groups)."""
    links: dict[str, list[str]] = {}
    for rule in policy.grouping("g2"):
        if len(rule.fields) == 2:
            links.setdefault(rule.fields[0], []).append(rule.fields[1])
    seen, stack = [start], [start]
    while stack:
        for parent in links.get(stack.pop(), []):
            if parent not in seen:
                seen.append(parent)
                stack.append(parent)
    return seen


def _hidden(policy: PolicySet, ds: DatasetEntry, masked: str, column: str) -> list[str]:
    """How ``column`` of ``ds`` can be masked or withheld for a principal who sees ``masked``
    (the cell rule's column) under some grant of this policy; empty when it cannot."""
    if column == masked:
        return ["the column the rule masks (the masked cell gives away its own hidden value)"]
    entry = ds.columns[column]
    why: list[str] = []
    for tag in entry.tags:  # the nearest tag with a mask, as the compiler picks it
        found = next((t[4:] for t in _parents(policy, f"tag:{tag}") if t[4:] in policy.tag_masks
                      and t.startswith("tag:")), None)
        if found is not None:
            tag_mask = policy.tag_masks[found]
            via = f" via '{found}'" if found != tag else ""
            why.append(f"masked by tag '{tag}'{via} ({tag_mask.mask.function}, masking.yaml:{tag_mask.line}) "
                       "for principals without unmask")
    level, own = ds.column_level(column), ds.column_level(masked)
    if level_rank(level) > level_rank(own):
        why.append(f"withheld from principals cleared for '{own}' (its level is '{level}')")
    objects = {o for start in (f"column:{ds.name}.{column}", *(f"tag:{t}" for t in entry.tags))
               for o in _parents(policy, start)}
    for rule in policy.rules:
        if rule.ptype == "p" and len(rule.fields) == 5 and rule.fields[1] in objects \
                and rule.fields[2] == "read" and rule.fields[4] == "deny":
            why.append(f"withheld from '{rule.fields[0]}' by a read deny (policy.csv:{rule.line})")
    for other in policy.cell_rules:
        if other.dataset == ds.name and other.column == column:
            why.append(f"masked where cell rule '{other.name}' holds (masking.yaml:{other.line})")
    return why


def lint_cell_rule_indicators(policy: PolicySet, warnings: ProblemCollector) -> None:
    """A cell rule masks its column in the rows where ``when`` holds, and whether a cell is masked
    is visible. If ``when`` references a column that some principal the rule applies to sees
    masked or not at all, the masked cell is an indicator of that hidden value (``charges IS
    NULL`` finding every row with a hidden diagnosis). Warn about every such reference."""
    for rule in policy.cell_rules:
        ds = policy.datasets.get(rule.dataset)
        if ds is None or rule.column not in ds.columns:
            continue  # an error, reported by govern.policy.check
        tree, _issues = predicates.parse(rule.when, allow_subject=True)
        if tree is None:
            continue
        for column in dict.fromkeys(predicates.columns_of(tree)):
            if column not in ds.columns:
                continue
            why = _hidden(policy, ds, rule.column, column)
            if why:
                warnings.add("masking.yaml", rule.line,
                             f"cell rule '{rule.name}': `when` references '{column}', which is "
                             f"{'; '.join(why)}: a masked '{rule.column}' tells them the condition held "
                             f"on a value they cannot see (reference only columns they all see in the clear)")


LINTS: tuple[Callable[[PolicySet, ProblemCollector], None], ...] = (
    lint_cell_rule_indicators,
)


def lint_policy(policy: PolicySet) -> list[Problem]:
    """Every warning about ``policy`` (a valid one), in ``LINTS`` order."""
    warnings = ProblemCollector()
    for lint in LINTS:
        lint(policy, warnings)
    return warnings.problems
