"""``govern policy check|explain|test|diff``: the steward's checks before a policy ships."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from govern.cli._common import config_option, fail, load, report
from govern.errors import GovernError, Problem
from govern.policy.lint import lint_policy
from govern.policy.load import read_policy
from govern.policy.model import FILES
from govern.policy.summary import summary


@click.group()
def policy() -> None:
    """Check, explain, test and diff policy files."""


@policy.command("check")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
def policy_check(directory: str | None, config: str | None) -> None:
    """Validate a policy folder; print every problem as file:line: message, and every warning
    (valid but leaky, e.g. a cell rule that reveals a hidden column) as file:line: warning: …"""
    d = Path(directory) if directory else load(config).policy_dir

    def where(p: Problem) -> str:
        path = d / p.file if p.file in FILES else p.file
        return f"{path}:{p.line}" if p.line else str(path)

    loaded, problems = read_policy(d)
    if problems:
        for p in problems:
            click.echo(f"{where(p)}: {p.message}", err=True)
        fail(f"{len(problems)} problem(s) in {d}")
    assert loaded is not None
    for w in lint_policy(loaded):  # valid, but leaky: said, not refused
        click.echo(f"{where(w)}: warning: {w.message}", err=True)
    click.echo(summary(loaded))


@policy.command("explain")
@click.argument("principal")
@click.argument("dataset")
@click.option("--purpose", required=True, help="The purpose the principal declares.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--policies", type=click.Path(file_okay=False), default=None, help="Policy folder.")
@config_option
def policy_explain(principal: str, dataset: str, purpose: str, fmt: str, policies: str | None,
                   config: str | None) -> None:
    """Show the access plan for PRINCIPAL on DATASET, with the reason for every column."""
    from govern.deliver.governor import Governor
    from govern.plan.explain import explain_text
    from govern.policy.model import local_principal

    try:
        gov = Governor(load(config, policies))
        who = local_principal(gov.state.policy, principal)
        plan = gov.plan(who, dataset, purpose)
    except GovernError as exc:
        report(exc)
    click.echo(plan.to_json() if fmt == "json" else explain_text(plan))


@policy.command("test")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
def policy_test(directory: str | None, config: str | None) -> None:
    """Run the expectations in DIRECTORY/tests/*.yaml against the policy."""
    from govern.deliver.governor import Governor
    from govern.deliver.policy_tests import run_policy_tests

    settings = load(config, directory)
    try:
        gov = Governor(settings)
    except GovernError as exc:
        report(exc)
    results = run_policy_tests(gov, Path(settings.policy_dir) / "tests")
    failed = [r for r in results if not r.passed]
    for r in results:
        click.echo(("ok    " if r.passed else "FAIL  ") + f"{r.location}: {r.name}")
        for f in r.failures:
            click.echo(f"      {f}")
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed or not results:
        sys.exit(1)


@policy.command("diff")
@click.argument("old", type=click.Path(file_okay=False))
@click.argument("new", type=click.Path(file_okay=False))
@config_option
def policy_diff(old: str, new: str, config: str | None) -> None:
    """Show how every principal's plans change between two policy folders."""
    from govern.deliver.policy_diff import diff_policies

    try:
        lines = diff_policies(load(config), Path(old), Path(new))
    except GovernError as exc:
        report(exc)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("no change in any plan")
