"""``govern materialize``: build a masked materialization ahead of time, so the first read of a
pipeline is served from it like every later one (docs/sharing.md#materializations)."""

from __future__ import annotations

import click

from govern.cli._common import config_option, fail, load, report
from govern.errors import GovernError


@click.command("materialize")
@click.argument("dataset")
@click.option("--principal", required=True, help="Whose plan to materialize.")
@click.option("--purpose", required=True, help="The purpose the principal will declare.")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def materialize(dataset: str, principal: str, purpose: str, policies: str | None, config: str | None) -> None:
    """Write the masked Parquet PRINCIPAL would read from DATASET under PURPOSE into the store,
    keyed by (plan hash, data version); print the key, rows and bytes."""
    from govern.deliver.governor import Governor
    from govern.deliver.materialize import Materializer
    from govern.policy.model import local_principal

    try:
        settings = load(config, policies)
        if settings.materialize_max_bytes <= 0:
            fail("error: materializations are off (materialize_max_bytes is 0)")
        gov = Governor(settings)
        found = Materializer(gov).get_or_build(local_principal(gov.state.policy, principal), dataset, purpose)
    except GovernError as exc:
        report(exc)
    state = "built" if found.built else "already stored"
    click.echo(f"{dataset}: {state}: plan {found.plan.hash[:16]} data {found.data_version}: "
               f"{found.entry.rows} rows, {found.entry.size} bytes")
