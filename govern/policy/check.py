"""Cross-reference checks over a parsed policy: every name a rule uses must exist.

Each check is a small function that appends problems; ``CHECKS`` lists them once, in order.
"""

from __future__ import annotations

from collections.abc import Callable

from govern.errors import ProblemCollector
from govern.identity.principal import is_namespaced
from govern.plan import predicates
from govern.policy.documents import CsvRule
from govern.policy.model import ACTIONS, OBJECT_KINDS, PolicySet

REQUIRED_MODEL_TOKENS = {
    "r": ["sub", "obj", "act", "purpose"],
    "p": ["sub", "obj", "act", "purpose", "eft"],
}


def check_model(policy: PolicySet, problems: ProblemCollector) -> None:
    """model.conf must be valid Casbin syntax and define the request/policy shape of §3."""
    from casbin.model import Model

    if not policy.model_text:
        return
    model = Model()
    try:
        model.load_model_from_text(policy.model_text)
        for sec in ("r", "p", "e", "m"):
            if sec not in model.keys() or not model[sec]:
                raise ValueError(f"missing section for '{sec}'")
        for sec, tokens in REQUIRED_MODEL_TOKENS.items():
            got = [t.split("_", 1)[1] for t in model[sec][sec].tokens]
            if got != tokens:
                raise ValueError(f"{sec} must be '{', '.join(tokens)}', found '{', '.join(got)}'")
        for g in ("g", "g2", "g3"):
            if "g" not in model.keys() or g not in model["g"]:
                raise ValueError(f"role definition '{g}' is missing")
    except Exception as exc:
        line = _line_of(policy.model_text, str(exc))
        problems.add("model.conf", line, f"invalid Casbin model: {exc}")


def _line_of(text: str, message: str) -> int | None:
    for i, line in enumerate(text.splitlines(), start=1):
        key = line.split("=", 1)[0].strip()
        if key and f"'{key}'" in message:
            return i
    return None


def _object_known(policy: PolicySet, obj: str) -> str | None:
    """None if the object exists, else the problem."""
    kind, sep, name = obj.partition(":")
    if not sep or kind not in OBJECT_KINDS or not name:
        return f"object '{obj}' must be one of {', '.join(k + ':NAME' for k in OBJECT_KINDS)}"
    if kind == "dataset" and name not in policy.datasets:
        return f"unknown dataset '{name}'"
    if kind == "tag" and name not in policy.known_tags:
        return f"unknown tag '{name}'"
    if kind == "column":
        ds, dot, col = name.partition(".")
        if not dot or ds not in policy.datasets:
            return f"unknown column '{name}' (write column:DATASET.COLUMN)"
        if col not in policy.datasets[ds].columns:
            return f"unknown column '{name}'"
    if kind == "group" and not any(r.fields[1] == obj for r in policy.grouping("g2")):
        return f"unknown group '{name}' (no g2 rule puts anything in it)"
    return None


def _subject_known(policy: PolicySet, roles: set[str], name: str) -> bool:
    """A local principal, a role, or an identity provider's subject (``oidc:<sub>``), which
    exists at the provider and is named here only to be granted something."""
    return name in policy.principals or name in roles or is_namespaced(name)


def check_rules(policy: PolicySet, problems: ProblemCollector) -> None:
    F = "policy.csv"
    roles = policy.roles
    seen: dict[tuple[str, ...], int] = {}
    arity = {"p": 5, "g": 2, "g2": 2, "g3": 2}
    for rule in policy.rules:
        key = (rule.ptype, *rule.fields)
        if key in seen:
            problems.add(F, rule.line, f"duplicate rule (first at line {seen[key]})")
            continue
        seen[key] = rule.line
        if rule.ptype not in arity:
            problems.add(F, rule.line, f"unknown rule type '{rule.ptype}' (use p, g, g2 or g3)")
            continue
        if len(rule.fields) != arity[rule.ptype]:
            problems.add(F, rule.line, f"'{rule.ptype}' rules have {arity[rule.ptype]} fields, found {len(rule.fields)}")
            continue
        if rule.ptype == "p":
            sub, obj, act, _purpose, eft = rule.fields
            if not _subject_known(policy, roles, sub):
                problems.add(F, rule.line, f"unknown principal or role '{sub}'")
            issue = _object_known(policy, obj)
            if issue:
                problems.add(F, rule.line, issue)
            if act not in ACTIONS:
                problems.add(F, rule.line, f"unknown action '{act}' (actions: {', '.join(ACTIONS)})")
            if eft not in ("allow", "deny"):
                problems.add(F, rule.line, f"effect must be 'allow' or 'deny', found '{eft}'")
        elif rule.ptype == "g":
            member, role = rule.fields
            if not _subject_known(policy, roles, member):
                problems.add(F, rule.line, f"unknown principal '{member}'")
            if role in policy.principals or is_namespaced(role):
                problems.add(F, rule.line, f"'{role}' is a principal and cannot be used as a role")
        elif rule.ptype == "g2":
            child, parent = rule.fields
            if not child.startswith(("dataset:", "tag:", "column:", "group:")):
                problems.add(F, rule.line, f"g2 member '{child}' must be a dataset:, tag:, column: or group: object")
            elif not child.startswith("group:"):
                issue = _object_known(policy, child)
                if issue:
                    problems.add(F, rule.line, issue)
            if not parent.startswith(("group:", "tag:")):
                problems.add(F, rule.line, f"g2 parent '{parent}' must be a group: or tag: object")
    for ptype, what in (("g", "role"), ("g2", "resource group"), ("g3", "purpose")):
        _check_cycles(policy.grouping(ptype), what, problems)


def _check_cycles(rules: list[CsvRule], what: str, problems: ProblemCollector) -> None:
    edges: dict[str, list[tuple[str, int]]] = {}
    for r in rules:
        if len(r.fields) == 2:
            edges.setdefault(r.fields[0], []).append((r.fields[1], r.line))
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()

    def visit(node: str, path: list[tuple[str, int]]) -> None:
        state[node] = 1
        for nxt, line in edges.get(node, []):
            if state.get(nxt) == 1:
                names = [n for n, _ in path] + [node]
                cycle = [*names[names.index(nxt):], nxt] if nxt in names else [node, nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    problems.add("policy.csv", line, f"{what} cycle: {' -> '.join(cycle)}")
            elif state.get(nxt) is None:
                visit(nxt, [*path, (node, line)])
        state[node] = 2

    for start in list(edges):
        if state.get(start) is None:
            visit(start, [])


def _check_predicate(policy: PolicySet, dataset: str, text: str, line: int, what: str,
                     problems: ProblemCollector) -> None:
    F = "masking.yaml"
    tree, issues = predicates.parse(text, allow_subject=True)
    for issue in issues:
        problems.add(F, line, f"{what}: {issue}")
    if tree is None or dataset not in policy.datasets:
        return
    known_cols = policy.datasets[dataset].columns
    for col in predicates.columns_of(tree):
        if col not in known_cols:
            problems.add(F, line, f"{what}: unknown column '{col}' in dataset '{dataset}'")
    known_attrs = policy.attribute_names()
    for attr in predicates.subject_attributes_of(tree):
        if attr not in known_attrs:
            problems.add(F, line, f"{what}: unknown subject attribute '{attr}'")


def check_masking(policy: PolicySet, problems: ProblemCollector) -> None:
    F = "masking.yaml"
    names: dict[str, int] = {}
    for rule in policy.cell_rules:
        if rule.name in names:
            problems.add(F, rule.line, f"duplicate cell rule name '{rule.name}' (first at line {names[rule.name]})")
        names[rule.name] = rule.line
        if rule.dataset not in policy.datasets:
            problems.add(F, rule.line, f"cell rule '{rule.name}': unknown dataset '{rule.dataset}'")
            continue
        if rule.column not in policy.datasets[rule.dataset].columns:
            problems.add(F, rule.line, f"cell rule '{rule.name}': unknown column '{rule.column}' in dataset '{rule.dataset}'")
        _check_predicate(policy, rule.dataset, rule.when, rule.line, f"cell rule '{rule.name}'", problems)
    fnames: dict[str, int] = {}
    for rf in policy.row_filters:
        if rf.name in fnames:
            problems.add(F, rf.line, f"duplicate row filter name '{rf.name}' (first at line {fnames[rf.name]})")
        fnames[rf.name] = rf.line
        if rf.dataset not in policy.datasets:
            problems.add(F, rf.line, f"row filter '{rf.name}': unknown dataset '{rf.dataset}'")
            continue
        _check_predicate(policy, rf.dataset, rf.filter, rf.line, f"row filter '{rf.name}'", problems)


def check_principals(policy: PolicySet, problems: ProblemCollector) -> None:
    for name, p in policy.principals.items():
        if name in policy.roles:
            problems.add("principals.yaml", p.line, f"principal '{name}' has the same name as a role")
        if is_namespaced(name) and p.api_keys:
            problems.add("principals.yaml", p.line, f"principal '{name}' is an identity provider's subject "
                         "(its name has a ':'): it authenticates with the provider's tokens, not API keys")
    seen: dict[str, str] = {}
    for name, p in policy.principals.items():
        for key in p.api_keys:
            if key.id in seen:
                problems.add("principals.yaml", key.line, f"api key id '{key.id}' is also used by '{seen[key.id]}'")
            seen[key.id] = name


def check_budgets(policy: PolicySet, problems: ProblemCollector) -> None:
    """A budget override names a principal or a role that exists."""
    roles = policy.roles
    for budget in policy.budgets:
        for o in budget.overrides:
            if not _subject_known(policy, roles, o.subject):
                problems.add("catalog.yaml", o.line,
                             f"budget of '{budget.dataset}': unknown principal or role '{o.subject}'")


def check_results(policy: PolicySet, problems: ProblemCollector) -> None:
    """A ``result:`` block names a purpose some rule uses (or ``*``)."""
    purposes = policy.purposes
    for ds in policy.datasets.values():
        for purpose, entry in ds.results.items():
            if purpose != "*" and purpose not in purposes:
                problems.add("catalog.yaml", entry.line,
                             f"result of '{ds.name}': unknown purpose '{purpose}' (no rule uses it)")


def check_synthesizers(policy: PolicySet, problems: ProblemCollector) -> None:
    """A DP synthesizer's ``steward`` is a declared principal (its budget pays for the fit)."""
    for ds in policy.datasets.values():
        spec = ds.extra.get("synthesizer")
        steward = getattr(spec, "steward", None)
        if steward is not None and steward not in policy.principals:
            problems.add("catalog.yaml", getattr(spec, "line", None) or ds.line,
                         f"synthesizer of '{ds.name}': steward '{steward}' is not a principal of principals.yaml")


CHECKS: tuple[Callable[[PolicySet, ProblemCollector], None], ...] = (
    check_model,
    check_rules,
    check_masking,
    check_principals,
    check_budgets,
    check_results,
    check_synthesizers,
)


def check_policy(policy: PolicySet, problems: ProblemCollector) -> None:
    for check in CHECKS:
        check(policy, problems)
