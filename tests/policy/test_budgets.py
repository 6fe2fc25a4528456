"""Privacy budgets in catalog.yaml: parsed into typed entries; every mistake is a file:line problem."""

from __future__ import annotations

from pathlib import Path

from govern.policy.load import load_policy, read_policy
from govern.policy.model import BudgetEntry, BudgetOverride
from tests.conftest import edit
from tests.policy.test_check import line_of, messages


def test_example_budgets(policy_dir: Path) -> None:
    policy = load_policy(policy_dir)
    catalog = policy_dir / "catalog.yaml"
    assert policy.budgets == [
        BudgetEntry("patients", 5.0, 1e-6, "month", line_of(catalog, "budget:"),
                    (BudgetOverride("data-scientist", 10.0, 1e-5, line_of(catalog, "data-scientist:")),)),
        BudgetEntry("encounters", 3.0, 1e-6, "month", line_of(catalog, "budget: {epsilon: 3")),
    ]


def test_yaml_1e_minus_6_without_a_dot_is_accepted(policy_dir: Path) -> None:
    edit(policy_dir / "catalog.yaml", "budget: {epsilon: 3, delta: 1.0e-6, period: month}",
         "budget: {epsilon: 3, delta: 1e-6, period: day}")
    entry = load_policy(policy_dir).budgets[1]
    assert (entry.delta, entry.period) == (1e-6, "day")


def test_every_budget_problem_has_file_and_line(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    edit(catalog, "      epsilon: 5\n", "      epsilon: -5\n")
    edit(catalog, "      period: month\n", "      period: fortnight\n      refill: true\n")
    edit(catalog, "data-scientist: {epsilon: 10, delta: 1.0e-5}", "data-wizard: {epsilon: 10, delta: 2}")
    edit(catalog, "budget: {epsilon: 3, delta: 1.0e-6, period: month}", "budget: {delta: 1.0e-6}")
    policy, problems = read_policy(policy_dir)
    assert policy is None
    found = messages(problems)
    expected = [
        f"catalog.yaml:{line_of(catalog, 'epsilon: -5')}: budget of 'patients': epsilon must be a number in (0, 1e+06]",
        f"catalog.yaml:{line_of(catalog, 'period: fortnight')}: budget of 'patients': period must be one of "
        "day, week, month, year, total",
        f"catalog.yaml:{line_of(catalog, 'refill')}: unknown field 'refill' in budget of 'patients' "
        "(allowed: delta, description, epsilon, period, principals)",
        f"catalog.yaml:{line_of(catalog, 'delta: 2')}: budget of 'patients' for 'data-wizard': delta must be a number "
        "in [0, 1)",
        f"catalog.yaml:{line_of(catalog, 'budget: {delta')}: budget of 'encounters' needs 'epsilon'",
    ]
    for message in expected:
        assert message in found, (message, found)


def test_an_override_names_a_known_principal_or_role(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    edit(catalog, "data-scientist: {epsilon: 10, delta: 1.0e-5}", "data-wizard: {epsilon: 10}")
    _, problems = read_policy(policy_dir)
    assert messages(problems) == [
        f"catalog.yaml:{line_of(catalog, 'data-wizard')}: budget of 'patients': unknown principal or role 'data-wizard'"]
