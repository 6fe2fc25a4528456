"""``govern he``: the gateway's homomorphic encryption keys (docs/encryption.md)."""

from __future__ import annotations

import json

import click

from govern.cli._common import config_option, fail, load, report
from govern.config import Settings
from govern.errors import GovernError


@click.group()
def he() -> None:
    """Manage the gateway's homomorphic encryption keys (one per dataset; docs/encryption.md)."""


def _he_keys(settings: Settings, dataset: str | None = None):  # -> KeyStore
    from govern.policy.load import load_policy
    from govern.privacy.he.keystore import KeyStore
    from govern.privacy.he.service import key_dir

    if dataset is not None and dataset not in load_policy(settings.policy_dir).datasets:
        fail(f"error: unknown dataset '{dataset}'", 2)
    return KeyStore(key_dir(settings))


@he.command("keys")
@click.argument("dataset", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@config_option
def he_keys(dataset: str | None, fmt: str, config: str | None) -> None:
    """List key ids, creation and retirement times, and which key is active (never key bytes)."""
    try:
        infos = _he_keys(load(config), dataset).keys(dataset)
    except GovernError as exc:
        report(exc)
    if fmt == "json":
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    for i in infos:
        state = "active" if i.active else (f"retired {i.retired}" if i.retired else "live")
        click.echo(f"{i.dataset}\t{i.key_id}\tcreated {i.created}\t{state}")


@he.command("rotate")
@click.argument("dataset")
@config_option
def he_rotate(dataset: str, config: str | None) -> None:
    """Make a new active key for DATASET; older keys stay releasable until retired."""
    try:
        key_id = _he_keys(load(config), dataset).rotate(dataset)
    except GovernError as exc:
        report(exc)
    click.echo(f"{dataset}: new active key {key_id}; running gateways use it for new views at once")


@he.command("retire")
@click.argument("dataset")
@click.argument("key_id")
@config_option
def he_retire(dataset: str, key_id: str, config: str | None) -> None:
    """Delete an inactive key: views made under it can no longer be released."""
    try:
        _he_keys(load(config), dataset).retire(dataset, key_id)
    except GovernError as exc:
        report(exc)
    click.echo(f"{dataset}: key {key_id} retired and deleted")
