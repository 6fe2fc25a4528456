"""The one-screen summary ``govern policy check`` prints for a valid policy set."""

from __future__ import annotations

from govern.policy.model import PolicySet


def summary(policy: PolicySet) -> str:
    p_rules = [r for r in policy.rules if r.ptype == "p"]
    denies = sum(1 for r in p_rules if r.fields[4] == "deny")
    columns = sum(len(d.columns) for d in policy.datasets.values())
    lines = [
        f"policy OK ({policy.directory}, version {policy.version})",
        f"  datasets    {len(policy.datasets):>4}  ({columns} classified columns): {', '.join(sorted(policy.datasets))}",
        f"  rules       {len(p_rules):>4}  ({len(p_rules) - denies} allow, {denies} deny)",
        f"  roles       {len(policy.roles):>4}  {', '.join(sorted(policy.roles))}",
        f"  principals  {len(policy.principals):>4}  {', '.join(sorted(policy.principals))}",
        f"  purposes    {len(policy.purposes):>4}  {', '.join(sorted(policy.purposes))}",
        f"  tag masks   {len(policy.tag_masks):>4}  "
        + ", ".join(f"{t}={m.mask.function}" for t, m in sorted(policy.tag_masks.items())),
        f"  cell rules  {len(policy.cell_rules):>4}",
        f"  row filters {len(policy.row_filters):>4}",
    ]
    return "\n".join(lines)
