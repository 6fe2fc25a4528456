"""Lints: warnings about valid policies that leak. Each case is a cell rule written into a copy
of the example policy, and the exact reasons the lint gives for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from govern.cli import main
from govern.policy.lint import lint_policy
from govern.policy.load import load_policy
from tests.conftest import edit


def with_rule(policy_dir: Path, column: str, when: str, mask: str = "null") -> Path:
    masking = policy_dir / "masking.yaml"
    text = masking.read_text()
    start, end = text.index("cell_rules:\n"), text.index("# Row filters")
    masking.write_text(text[:start] + f'cell_rules:\n  - name: probe\n    dataset: patients\n    column: {column}\n'
                       f'    when: "{when}"\n    mask: {mask}\n\n' + text[end:])
    return policy_dir


def reasons(policy_dir: Path) -> list[str]:
    return [w.message for w in lint_policy(load_policy(policy_dir))]


def test_the_example_policy_is_clean(policy_dir: Path) -> None:
    assert reasons(policy_dir) == []


@pytest.mark.parametrize("column, when, expected", [
    # the old example: diagnosis is masked, above charges' level, and denied to data scientists
    ("charges", "diagnosis IN ('HIV')", ["masked by tag 'phi' (randomized_response",
                                         "withheld from principals cleared for 'internal' (its level is 'confidential')",
                                         "withheld from 'data-scientist' by a read deny (policy.csv:28)"]),
    # a column's own value: top-coding reveals that the hidden value crossed the threshold
    ("charges", "charges > 40000", ["the column the rule masks"]),
    # ssn is masked, and restricted: above charges' internal level
    ("charges", "ssn IS NULL", ["masked by tag 'ssn' (show_last", "its level is 'restricted'"]),
    ("region", "zip = '12345'", ["masked by tag 'quasi_identifier' (generalize"]),
])
def test_a_rule_on_a_hidden_column_warns(policy_dir: Path, column: str, when: str, expected: list[str]) -> None:
    [message] = reasons(with_rule(policy_dir, column, when))
    assert message.startswith("cell rule 'probe': `when` references ")
    for reason in expected:
        assert reason in message, message


def test_a_read_deny_through_a_group_or_parent_tag_counts(policy_dir: Path) -> None:
    with (policy_dir / "policy.csv").open("a") as fh:
        fh.write("g2, column:patients.region, group:places\np, analyst, group:places, read, analytics, deny\n")
    [message] = reasons(with_rule(policy_dir, "charges", "region = 'EU'"))
    assert "withheld from 'analyst' by a read deny (policy.csv:" in message


def test_a_column_masked_by_another_cell_rule_counts(policy_dir: Path) -> None:
    with_rule(policy_dir, "charges", "region = 'EU'")
    masking = policy_dir / "masking.yaml"
    masking.write_text(masking.read_text().replace("cell_rules:\n", "cell_rules:\n  - name: hide-region\n"
                       "    dataset: patients\n    column: region\n    when: \"region = 'US'\"\n    mask: redact\n", 1))
    messages = reasons(policy_dir)
    assert any("'probe'" in m and "masked where cell rule 'hide-region' holds" in m for m in messages), messages


def test_columns_everyone_sees_in_the_clear_are_fine(policy_dir: Path) -> None:
    assert reasons(with_rule(policy_dir, "charges", "region IN subject.regions AND region <> 'APAC'")) == []


def test_check_prints_warnings_and_exits_0(policy_dir: Path) -> None:
    with_rule(policy_dir, "charges", "charges > 40000")
    result = CliRunner().invoke(main, ["policy", "check", str(policy_dir)])
    assert result.exit_code == 0, result.output
    assert f"{policy_dir / 'masking.yaml'}:" in result.output and ": warning: cell rule 'probe'" in result.output
    assert "policy OK" in result.output


def test_a_tag_without_its_own_mask_warns_by_its_parents(policy_dir: Path) -> None:
    edit(policy_dir / "catalog.yaml", "      region: {public_values: true}", "      region: {tags: [site], public_values: true}")
    with (policy_dir / "policy.csv").open("a") as fh:
        fh.write("g2, tag:site, tag:quasi_identifier\n")
    [message] = reasons(with_rule(policy_dir, "charges", "region = 'EU'"))
    assert "masked by tag 'site' via 'quasi_identifier' (generalize" in message
