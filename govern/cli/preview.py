"""``govern preview`` and ``govern reidentify``: what a principal would receive, read locally."""

from __future__ import annotations

import click

from govern.cli._common import config_option, load, report
from govern.errors import GovernError


@click.command("preview")
@click.argument("principal")
@click.argument("dataset")
@click.option("--purpose", required=True)
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--columns", default=None, help="Comma-separated columns.")
@click.option("--filter", "filter_", default=None, help="SQL predicate on the masked view.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl"]), default="table")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def preview(principal: str, dataset: str, purpose: str, limit: int, columns: str | None,
            filter_: str | None, fmt: str, policies: str | None, config: str | None) -> None:
    """Print what PRINCIPAL would receive from DATASET, read locally."""
    from govern.deliver.governor import Governor
    from govern.plan.explain import render_rows
    from govern.policy.model import local_principal

    try:
        gov = Governor(load(config, policies))
        who = local_principal(gov.state.policy, principal)
        result = gov.read(who, dataset, purpose, columns=columns.split(",") if columns else None,
                          filter=filter_, limit=limit)
        table = result.reader.read_all()
    except GovernError as exc:
        report(exc)
    click.echo(render_rows(table, fmt), nl=False)


@click.command("reidentify")
@click.argument("principal")
@click.argument("dataset")
@click.argument("tokens", nargs=-1, required=True)
@click.option("--purpose", required=True)
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def reidentify(principal: str, dataset: str, tokens: tuple[str, ...], purpose: str, policies: str | None,
               config: str | None) -> None:
    """Reverse tokenize tokens (needs the reidentify action), one value per line."""
    from govern.deliver.governor import Governor
    from govern.policy.model import local_principal

    try:
        gov = Governor(load(config, policies))
        result = gov.reidentify(local_principal(gov.state.policy, principal), dataset, purpose, list(tokens))
    except GovernError as exc:
        report(exc)
    for token, value in zip(tokens, result.values, strict=True):
        click.echo(f"{token}\t{value}")
