"""``govern demo``: the deterministic demo world (data, policies, keys)."""

from __future__ import annotations

from pathlib import Path

import click

from govern.cli._common import report
from govern.errors import GovernError


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="demo", show_default=True)
@click.option("--rows", type=int, default=10_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--quiet", is_flag=True, help="Do not print the preview.")
def demo(directory: str, rows: int, seed: int, quiet: bool) -> None:
    """Generate the demo world (data, policies, keys) in DIR and show what each principal sees."""
    from govern.demo import create_demo

    try:
        info = create_demo(Path(directory), rows=rows, seed=seed)
    except GovernError as exc:
        report(exc)
    click.echo(info.summary())
    if not quiet:
        click.echo(info.preview())
