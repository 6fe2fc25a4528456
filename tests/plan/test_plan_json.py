"""A plan read back from its JSON is the same plan (equal, same hash), so engines outside the
gateway (Spark executors, pipeline steps) run exactly what was compiled; a plan edited on the
way is refused."""

from __future__ import annotations

import json

import pytest

from govern.errors import GovernError, PlanError
from govern.plan.model import AccessPlan
from govern.policy.model import local_principal


def demo_plans(governor) -> list[AccessPlan]:
    policy = governor.state.policy
    plans = []
    for who in sorted(policy.principals):
        for purpose in sorted(policy.purposes):
            for dataset in sorted(policy.datasets):
                try:
                    plans.append(governor.plan(local_principal(policy, who), dataset, purpose))
                except GovernError:
                    pass
    return plans


def test_every_demo_plan_round_trips(governor) -> None:
    plans = demo_plans(governor)
    assert len(plans) >= 6 and any(p.cell_rules for p in plans) and any(p.row_filters for p in plans)
    for plan in plans:
        again = AccessPlan.from_json(plan.to_json())
        assert again == plan and again.hash == plan.hash
        assert AccessPlan.from_dict(plan.to_dict()) == plan  # without the hash field


def test_an_edited_plan_is_refused(governor) -> None:
    plan = next(p for p in demo_plans(governor) if any(c.mask for c in p.columns))
    body = json.loads(plan.to_json())
    masked = next(c for c in body["columns"] if c["mask"])
    masked["action"], masked["mask"] = "keep", None  # unmask a column on the way
    with pytest.raises(PlanError, match="hash does not match"):
        AccessPlan.from_json(json.dumps(body))


@pytest.mark.parametrize("text", ["", "[]", '{"dataset": "x"}', "{not json"])
def test_what_is_not_a_plan_is_refused(text: str) -> None:
    with pytest.raises(PlanError, match="not an access plan"):
        AccessPlan.from_json(text)
