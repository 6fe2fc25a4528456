"""``govern policy diff OLD NEW``: what a policy change does to every principal's plans.

For each local principal, each dataset and each purpose either version entitles, both plans are
compiled against the data's current schema and compared column by column, plus row filters and
cell rules. The output is one line per change, ready for a pull-request comment.
"""

from __future__ import annotations

from pathlib import Path

from govern.config import Settings
from govern.deliver.governor import Governor
from govern.errors import GovernError
from govern.plan.model import AccessPlan
from govern.policy.load import load_policy
from govern.policy.model import local_principal


def _describe_column(plan: AccessPlan | None, name: str) -> str:
    if plan is None:
        return "denied"
    try:
        col = plan.column(name)
    except KeyError:
        return "absent"
    return str(col.mask) if col.mask else col.action


def diff_policies(settings: Settings, old_dir: Path, new_dir: Path) -> list[str]:
    old_policy, new_policy = load_policy(old_dir), load_policy(new_dir)
    old = Governor(settings.model_copy(update={"policy_dir": old_dir}), policy=old_policy)
    new = Governor(settings.model_copy(update={"policy_dir": new_dir}), policy=new_policy)
    lines: list[str] = []
    principals = sorted(set(old_policy.principals) | set(new_policy.principals))
    datasets = sorted(set(old_policy.datasets) | set(new_policy.datasets))
    for name in principals:
        purposes: set[str] = set()
        plans: dict[str, dict[tuple[str, str], AccessPlan | None]] = {"old": {}, "new": {}}
        for gov, policy in ((old, old_policy), (new, new_policy)):
            if name in policy.principals:
                purposes.update(gov.state.decider.purposes(local_principal(policy, name)))
        for label, gov, policy in (("old", old, old_policy), ("new", new, new_policy)):
            for ds in datasets:
                for purpose in purposes:
                    plan = None
                    if name in policy.principals and ds in policy.datasets:
                        try:
                            plan = gov.plan(local_principal(policy, name), ds, purpose)
                        except GovernError:
                            plan = None
                    plans[label][(ds, purpose)] = plan
        for ds in datasets:
            for purpose in sorted(purposes):
                a, b = plans["old"][(ds, purpose)], plans["new"][(ds, purpose)]
                where = f"{name} {ds} ({purpose})"
                if (a is None) != (b is None):
                    lines.append(f"{where}: {'granted' if b else 'now denied'}")
                    continue
                if a is None or b is None or a.hash == b.hash:
                    continue
                for col in dict.fromkeys([c.name for c in a.columns] + [c.name for c in b.columns]):
                    before, after = _describe_column(a, col), _describe_column(b, col)
                    if before != after:
                        lines.append(f"{where}: {col}: {before} -> {after}")
                if a.row_filter_sql != b.row_filter_sql:
                    lines.append(f"{where}: rows: {a.row_filter_sql or 'all'} -> {b.row_filter_sql or 'all'}")
                ca = sorted((c.column, c.when, str(c.mask)) for c in a.cell_rules)
                cb = sorted((c.column, c.when, str(c.mask)) for c in b.cell_rules)
                if ca != cb:
                    lines.append(f"{where}: cell rules: {ca or 'none'} -> {cb or 'none'}")
    return lines
