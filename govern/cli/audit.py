"""``govern audit verify``: re-check the audit chain."""

from __future__ import annotations

import click

from govern.cli._common import config_option, fail, load, report
from govern.errors import GovernError


@click.group()
def audit() -> None:
    """Inspect and verify the audit log."""


@audit.command("verify")
@config_option
@click.option("--url", default=None, help="Audit store (sqlite:///path or postgresql://...).")
def audit_verify(config: str | None, url: str | None) -> None:
    """Verify the hash chain; exit 1 naming the first broken record."""
    from govern.audit.log import open_audit_log

    settings = load(config)
    target = url or settings.audit_url or f"sqlite:///{(settings.state_dir / 'audit.db').resolve()}"
    try:
        log = open_audit_log(target, table_prefix=settings.audit_table_prefix)
        result = log.verify()
        pending = log.pending()
        log.close()
    except GovernError as exc:
        report(exc)
    if not result.ok:
        fail(f"audit chain BROKEN at record {result.first_broken}: {result.message}")
    click.echo(f"audit chain OK: {result.count} records verified")
    if pending:
        click.echo(f"warning: {len(pending)} request(s) started but never completed: "
                   + ", ".join(rid for rid, _ in pending[:5]))
