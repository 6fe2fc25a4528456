"""``govern audit verify`` (re-check the chain and its signed checkpoints) and
``govern audit public-key`` (the keys a verifier without the masking key needs)."""

from __future__ import annotations

from pathlib import Path

import click

from govern.cli._common import config_option, fail, load, report
from govern.errors import GovernError


@click.group()
def audit() -> None:
    """Inspect and verify the audit log."""


@audit.command("verify")
@config_option
@click.option("--url", default=None, help="Audit store (sqlite:///path or postgresql://...).")
@click.option("--checkpoints", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint file (default: audit_checkpoint_file, else state_dir/audit.checkpoints).")
def audit_verify(config: str | None, url: str | None, checkpoints: Path | None) -> None:
    """Verify the hash chain and the signed checkpoints; exit 1 naming the first problem."""
    from govern.audit.log import open_anchor, open_audit_log

    settings = load(config)
    if url:
        settings = settings.model_copy(update={"audit_url": url})
    if checkpoints:
        settings = settings.model_copy(update={"audit_checkpoint_file": checkpoints})
    try:
        anchor = open_anchor(settings)
        log = open_audit_log(settings, anchor=anchor)
        try:
            result = log.verify()
            pending = log.pending() if result.ok else []
        finally:
            log.close()
    except GovernError as exc:
        report(exc)
    if not result.ok:
        if result.first_broken is None:
            fail(f"audit chain BROKEN: {result.message}")
        why = result.message.removeprefix(f"record {result.first_broken}: ")
        fail(f"audit chain BROKEN at record {result.first_broken}: {why}")
    span = f" (seq {result.first_seq}..{result.last_seq})" if result.count else ""
    click.echo(f"audit chain OK: {result.count} records verified{span}")
    mark = result.checkpoint
    if mark is not None:
        click.echo(f"anchored: newest checkpoint names record {mark.seq} ({mark.time}, key "
                   f"{mark.key}, line {mark.line} of {anchor.path.name}); "
                   f"{result.checkpoints} checkpoint(s) checked")
    elif not anchor.can_check:
        click.echo("warning: not anchored: no checkpoint key is configured (masking key or "
                   "audit_public_keys), so records cut from the end cannot be detected")
    if result.uncovered and result.checkpoints:
        click.echo(f"warning: {result.uncovered} record(s) are in no checkpoint of this file "
                   "(appended by another gateway host, or outside govern)")
    if pending:
        click.echo(f"warning: {len(pending)} request(s) started but never completed: "
                   + ", ".join(rid for rid, _ in pending[:5]))


@audit.command("public-key")
@config_option
def audit_public_key(config: str | None) -> None:
    """Print the checkpoint public keys (YAML for audit_public_keys) of the masking key ring."""
    from govern.audit.checkpoint import encode_public_key, public_keys
    from govern.mask.keys import KeyRing

    try:
        keys = KeyRing.from_settings(load(config))
    except GovernError as exc:
        report(exc)
    click.echo("audit_public_keys:")
    for kid, key in public_keys(keys).items():
        click.echo(f"  {kid}: {encode_public_key(key)}")
