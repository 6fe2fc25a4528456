"""``govern sharing``: Delta Sharing recipients (docs/sharing.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from govern.cli._common import config_option, fail, load, report
from govern.errors import GovernError


@click.group("sharing")
def sharing() -> None:
    """Delta Sharing: profiles for recipients (a principal with a purpose)."""


@sharing.command("profile")
@click.argument("principal")
@click.option("--purpose", required=True, help="The share the profile opens (a share is a purpose).")
@click.option("--endpoint", default=None,
              help="The gateway's URL as the recipient reaches it (default: http://HOST:PORT of the settings).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the profile here (0600) instead of printing it.")
@click.option("--days", type=float, default=None, help="Lifetime (default: sharing_profile_ttl).")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def profile(principal: str, purpose: str, endpoint: str | None, output: str | None, days: float | None,
            policies: str | None, config: str | None) -> None:
    """Write a Delta Sharing profile for PRINCIPAL under PURPOSE: its bearer token is a dedicated,
    expiring ticket, never the principal's API key."""
    from govern.deliver.governor import Governor
    from govern.identity.principal import Principal
    from govern.plan.compile import authorize_purpose
    from govern.sharing.profile import make_profile

    try:
        settings = load(config, policies)
        gov = Governor(settings)
        entry = gov.state.policy.principals.get(principal)
        if entry is None or not entry.api_keys:
            fail(f"error: '{principal}' is not a principal with an API key in principals.yaml")
        who = Principal(name=principal, attributes=dict(entry.attributes), source="api-key")
        authorize_purpose(gov.state.decider, who, purpose)
        base = endpoint or f"http://{settings.host}:{settings.port}"
        ttl = days * 86_400 if days is not None else settings.sharing_profile_ttl
        body = make_profile(who, purpose, base.rstrip("/") + "/delta-sharing", gov.keys, now=time.time(), ttl=ttl)
    except GovernError as exc:
        report(exc)
    text = json.dumps(body, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    path = Path(output)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    click.echo(f"wrote {path} (share '{purpose}', expires {body['expirationTime']})")
