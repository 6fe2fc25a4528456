"""``govern keys``: API keys and masking keys."""

from __future__ import annotations

from pathlib import Path

import click

from govern.cli._common import config_option, fail, load


@click.group()
def keys() -> None:
    """Manage API keys and masking keys."""


@keys.command("create")
@click.argument("principal")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def keys_create(principal: str, policies: str | None, config: str | None) -> None:
    """Create an API key for PRINCIPAL: its hash goes to principals.yaml, the key is printed once."""
    from govern.identity.apikeys import add_key_to_principals

    settings = load(config, policies)
    try:
        key = add_key_to_principals(Path(settings.policy_dir) / "principals.yaml", principal)
    except KeyError:
        fail(f"error: unknown principal '{principal}' in {Path(settings.policy_dir) / 'principals.yaml'}")
    click.echo(key)
    click.echo(f"(stored only as a hash for '{principal}'; this is the only time the key is shown)", err=True)


@keys.command("masking-key")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--id", "key_id", default="k1", show_default=True)
def masking_key(path: str, key_id: str) -> None:
    """Write a new random masking key file (mode 0600). Add lines to rotate."""
    from govern.mask.keyfile import write_key_file

    write_key_file(Path(path), key_id)
    click.echo(f"wrote masking key '{key_id}' to {path} (the key itself is not printed)")


@keys.command("tls")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--host", "hosts", multiple=True, default=("localhost", "127.0.0.1"), show_default=True,
              help="a DNS name or IP address the certificate is valid for (repeat)")
@click.option("--days", default=365, show_default=True)
def keys_tls(directory: str, hosts: tuple[str, ...], days: int) -> None:
    """Write a self-signed TLS certificate and key (DIRECTORY/tls.crt, tls.key) for the demo:
    set pg_tls_cert/pg_tls_key (PostgreSQL wire) or uvicorn's --ssl-certfile/--ssl-keyfile."""
    from govern.identity.tls import write_self_signed

    cert, key = write_self_signed(Path(directory), list(hosts), days)
    click.echo(f"pg_tls_cert: {cert}")
    click.echo(f"pg_tls_key: {key}")
