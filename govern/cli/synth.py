"""``govern synth``: fit and inspect synthetic-data models (docs/synthetic.md)."""

from __future__ import annotations

import json
from typing import Any

import click

from govern.cli._common import config_option, load, report
from govern.errors import GovernError


@click.group()
def synth() -> None:
    """Fit and inspect the synthetic-data models (SDV) the gateway serves."""


def _synth_service(config: str | None, policies: str | None):  # -> (SyntheticService, Governor)
    from govern.deliver.governor import Governor
    from govern.privacy.synthetic.service import SyntheticService

    gov = Governor(load(config, policies))
    return SyntheticService(gov.settings, gov)


@synth.command("fit")
@click.argument("dataset")
@click.option("--force", is_flag=True, help="Refit even if a model for this data version exists.")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def synth_fit(dataset: str, force: bool, policies: str | None, config: str | None) -> None:
    """Fit DATASET's synthetic model here, with a progress bar, into the gateway's model store."""
    try:
        svc = _synth_service(config, policies)
        svc.require_available()
        ref = svc.reference(dataset)
        with click.progressbar(length=100, label=f"fitting {dataset}", show_percent=True,
                               item_show_func=lambda stage: stage) as bar:
            def progress(stage: str, fraction: float) -> None:
                bar.update(max(0, int(fraction * 100) - bar.pos), stage)

            manifest = svc.fit_now(ref, progress, force=force)
    except GovernError as exc:
        report(exc)
    reports = manifest["reports"]
    quality = reports["quality"]
    dcr = reports["privacy"].get("dcr", {})
    click.echo(f"model {manifest['key']} ({manifest['synthesizer']['type']}) fitted {manifest['created']} on "
               f"{manifest['rows']['train']} rows in {manifest['seconds']['fit']}s")
    click.echo(f"  quality {quality['score']} (column shapes {quality['column_shapes']}, "
               f"pair trends {quality['column_pair_trends']})")
    click.echo(f"  exact copies in {reports['privacy']['reference_rows']} reference rows: "
               f"{reports['privacy']['exact_copies']}; DCR overfitting protection "
               f"{dcr.get('overfitting_protection', {}).get('score')}, baseline protection "
               f"{dcr.get('baseline_protection', {}).get('score')}")


@synth.command("status")
@click.argument("dataset")
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def synth_status(dataset: str, policies: str | None, config: str | None) -> None:
    """Show the state and reports of DATASET's synthetic model for its current data version."""
    try:
        svc = _synth_service(config, policies)
        status = svc.status(svc.reference(dataset))
    except GovernError as exc:
        report(exc)
    click.echo(_json(status))



def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
