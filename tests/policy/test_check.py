"""`govern policy check`: a valid set passes; an invalid one reports *every* problem as file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from govern.cli import main
from govern.errors import PolicyError
from govern.policy.load import load_policy, read_policy
from tests.conftest import edit


def line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


def messages(problems) -> list[str]:
    return [str(p) for p in problems]


def test_example_policy_set_is_valid(policy_dir: Path) -> None:
    policy = load_policy(policy_dir)
    assert set(policy.datasets) == {"patients", "encounters"}
    assert {"analytics", "research", "model-training", "treatment", "governance"} <= policy.purposes


def test_check_cli_prints_summary_on_valid_set(policy_dir: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "check", str(policy_dir)])
    assert result.exit_code == 0, result.output
    assert "policy OK" in result.output
    assert "datasets       2" in result.output


def test_every_problem_is_reported_with_file_and_line(policy_dir: Path) -> None:
    csv = policy_dir / "policy.csv"
    with csv.open("a") as fh:
        fh.write("p, analyst, tag:no_such_tag, read, analytics, allow\n")
        fh.write("p, analyst, dataset:nowhere, read, analytics, allow\n")
        fh.write("p, analyst, column:patients.shoe_size, read, analytics, allow\n")
        fh.write("p, mallory, dataset:patients, read, analytics, allow\n")
        fh.write("p, analyst, dataset:patients, fly, analytics, allow\n")
        fh.write("p, analyst, dataset:patients, read, analytics, maybe\n")
        fh.write("g3, research, model-training\n")  # purpose cycle
        fh.write("g, analyst, auditor\ng, auditor, analyst\n")  # role cycle
        fh.write("p, analyst, group:clinical, read, analytics, allow\n")  # duplicate
    masking = policy_dir / "masking.yaml"
    edit(masking, "  identifier: {mask: tokenize", "  identifier: {mask: scramble")
    edit(masking, "params: {n: 4, mask_char: \"*\"}", "params: {n: -2, mask_char: \"*\"}")
    edit(masking, "when: \"region = 'APAC'\"", "when: \"region IN (SELECT secret FROM raw)\"")
    edit(masking, 'filter: "region IN subject.regions"\n  - name: encounter',
         'filter: "region IN subject.countries AND shoe = 1"\n  - name: encounter')
    edit(masking, 'filter: "region IN subject.regions"', 'filter: "region = = 3"')

    policy, problems = read_policy(policy_dir)
    assert policy is None
    text = messages(problems)
    csv_lines = {n: line_of(csv, n) for n in (
        "tag:no_such_tag", "dataset:nowhere", "shoe_size", "mallory", ", fly,", ", maybe")}
    expected = [
        f"policy.csv:{csv_lines['tag:no_such_tag']}: unknown tag 'no_such_tag'",
        f"policy.csv:{csv_lines['dataset:nowhere']}: unknown dataset 'nowhere'",
        f"policy.csv:{csv_lines['shoe_size']}: unknown column 'patients.shoe_size'",
        f"policy.csv:{csv_lines['mallory']}: unknown principal or role 'mallory'",
        f"policy.csv:{csv_lines[', fly,']}: unknown action 'fly'",
        f"policy.csv:{csv_lines[', maybe']}: effect must be 'allow' or 'deny'",
        f"masking.yaml:{line_of(masking, 'scramble')}: tag 'identifier': unknown mask function 'scramble'",
        f"masking.yaml:{line_of(masking, 'n: -2')}: tag 'ssn': mask 'show_last'",
    ]
    for want in expected:
        assert any(t.startswith(want) for t in text), f"missing {want!r} in:\n" + "\n".join(text)
    joined = "\n".join(text)
    assert "purpose cycle" in joined
    assert "role cycle" in joined
    assert "duplicate rule (first at line" in joined
    assert "cell rule 'apac-charges'" in joined and "not allowed" in joined
    assert "unknown subject attribute 'countries'" in joined
    assert "unknown column 'shoe' in dataset 'patients'" in joined
    assert "cannot parse predicate" in joined


def test_casbin_syntax_error_is_reported(policy_dir: Path) -> None:
    model = policy_dir / "model.conf"
    edit(model, "p = sub, obj, act, purpose, eft", "p = sub, obj, act")
    _, problems = read_policy(policy_dir)
    assert any(p.file == "model.conf" and "invalid Casbin model" in p.message for p in problems)


def test_duplicate_yaml_keys_and_unknown_fields(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    edit(catalog, "      zip: {tags: [quasi_identifier]}",
         "      zip: {tags: [quasi_identifier]}\n      zip: {tags: []}\n      weight: {tgas: [x]}")
    _, problems = read_policy(policy_dir)
    text = messages(problems)
    assert f"catalog.yaml:{line_of(catalog, 'zip: {tags: []}')}: duplicate key 'zip'" in text
    assert any("unknown field 'tgas'" in t for t in text)


def test_invalid_yaml_reports_line(policy_dir: Path) -> None:
    (policy_dir / "principals.yaml").write_text("principals:\n  alice: [unclosed\n")
    _, problems = read_policy(policy_dir)
    assert problems and problems[0].file == "principals.yaml" and problems[0].line is not None


def test_cli_lists_all_problems_and_exits_1(policy_dir: Path) -> None:
    with (policy_dir / "policy.csv").open("a") as fh:
        fh.write("p, analyst, dataset:nowhere, read, analytics, allow\n")
        fh.write("p, nobody, dataset:patients, read, analytics, allow\n")
    result = CliRunner().invoke(main, ["policy", "check", str(policy_dir)])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if "policy.csv:" in ln]
    assert len(lines) == 2
    assert all(str(policy_dir / "policy.csv") in ln for ln in lines)
    assert "2 problem(s)" in result.output


def test_load_policy_raises_with_all_problems(policy_dir: Path) -> None:
    with (policy_dir / "policy.csv").open("a") as fh:
        fh.write("p, a1, dataset:x, read, p, allow\np, a2, dataset:y, read, p, allow\n")
    with pytest.raises(PolicyError) as info:
        load_policy(policy_dir)
    assert len(info.value.problems) >= 4


def test_identity_provider_subjects_in_the_policy(policy_dir: Path) -> None:
    """`oidc:<sub>` names an identity provider's subject: rules and budgets may name it without
    declaring it; it cannot be a role, and a principals.yaml entry of that name holds no API keys."""
    csv, principals = policy_dir / "policy.csv", policy_dir / "principals.yaml"
    with csv.open("a") as fh:
        fh.write("g, oidc:frank, steward\np, oidc:grace, dataset:patients, read, analytics, allow\n")
    edit(policy_dir / "catalog.yaml", "        data-scientist: {epsilon: 10, delta: 1.0e-5}",
         "        data-scientist: {epsilon: 10, delta: 1.0e-5}\n        oidc:grace: {epsilon: 1}")
    with principals.open("a") as fh:
        fh.write("  oidc:frank:\n    attributes: {clearance: internal}\n")
    assert read_policy(policy_dir)[1] == []
    with csv.open("a") as fh:
        fh.write("g, alice, oidc:ivan\n")
    with principals.open("a") as fh:
        fh.write("  oidc:heidi:\n    api_keys: [{id: 0badc0de, hash: 'sha256:00'}]\n")
    _, problems = read_policy(policy_dir)
    assert messages(problems) == [
        f"policy.csv:{line_of(csv, 'g, alice, oidc:ivan')}: 'oidc:ivan' is a principal and cannot be used as a role",
        f"principals.yaml:{line_of(principals, 'oidc:heidi:')}: principal 'oidc:heidi' is an identity provider's "
        "subject (its name has a ':'): it authenticates with the provider's tokens, not API keys",
    ]
