"""``govern classify``: sensitive-data discovery on a dataset's raw files, run locally.

Like ``govern preview``, it reads the files through the Governor's storage layer on the
steward's own machine. It prints what each column looks like it holds — counts, shares and
the names of checks, never a sampled value — and the ``catalog.yaml`` change that accepts the
suggestions for unclassified columns, as a unified patch or (``--write``) written in place.
"""

from __future__ import annotations

import json

import click

from govern.cli._common import config_option, fail, load, report
from govern.errors import GovernError


@click.command("classify")
@click.argument("dataset")
@click.option("--column", "columns", multiple=True, help="Accept only these columns (repeatable).")
@click.option("--sample", type=int, default=None, help="Values sampled per column [monitor.classify_sample_rows].")
@click.option("--seed", type=int, default=None, help="Sampling seed [monitor.classify_seed].")
@click.option("--min-confidence", type=float, default=None,
              help="Hide suggestions below this confidence [monitor.classify_min_confidence].")
@click.option("--write", is_flag=True, help="Write the change to catalog.yaml instead of printing it as a patch.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--policies", type=click.Path(file_okay=False), default=None)
@config_option
def classify(dataset: str, columns: tuple[str, ...], sample: int | None, seed: int | None,
             min_confidence: float | None, write: bool, fmt: str, policies: str | None, config: str | None) -> None:
    """Suggest tags and levels for DATASET's columns from a sample of its values."""
    from govern.deliver.governor import Governor

    try:
        from govern.monitor.catalog_patch import catalog_change
        from govern.monitor.classify import classify_dataset
    except ImportError as exc:  # python-stdnum / phonenumbers missing
        fail(f"error: govern classify needs the 'monitor' extra (pip install 'govern[monitor]'): {exc.name} is missing")

    try:
        settings = load(config, policies)
        opts = settings.monitor
        gov = Governor(settings)
        state = gov.state
        threshold = opts.classify_min_confidence if min_confidence is None else min_confidence
        result = classify_dataset(gov.dataset(dataset, state), dataset, state.policy, state.decider,
                                  sample=sample or opts.classify_sample_rows,
                                  seed=opts.classify_seed if seed is None else seed,
                                  min_confidence=threshold, phone_regions=tuple(opts.phone_regions))
        change = catalog_change(state.policy.directory, result, columns=list(columns) or None,
                                min_confidence=threshold)
        if write and not change.empty:
            change.write()
    except GovernError as exc:
        report(exc)
    if fmt == "json":
        click.echo(json.dumps({"classification": result.to_dict(), "patch": change.diff(),
                               "written": write and not change.empty,
                               "skipped": [{"column": c, "reason": r} for c, r in change.skipped]}, indent=2))
        return
    click.echo(f"{dataset}: {result.rows:,} rows, {result.sample_rows:,} sampled (seed {result.seed})")
    for col in result.columns:
        tags = "unclassified" if col.catalog_tags is None else f"tags [{', '.join(col.catalog_tags)}]"
        click.echo(f"\n  {col.column} ({col.type}, {tags}): {col.status}")
        for s in col.suggestions:
            level = f", level {s.level}" if s.level else ""
            unmasked = "" if s.masked else " (no mask for this tag in masking.yaml)"
            click.echo(f"    {s.confidence:.2f}  {s.label}{f' ({s.variant})' if s.variant else ''}"
                       f" -> tag {s.tag}{level}{unmasked}")
            for line in s.evidence:
                click.echo(f"          {line}")
    for column, why in change.skipped:
        click.echo(f"\n  not accepted: {column}: {why}")
    if change.empty:
        click.echo("\nno change to catalog.yaml")
    elif write:
        click.echo(f"\nwrote {change.path.name}: {', '.join(c for c, _ in change.accepted)}")
    else:
        click.echo(f"\n{change.diff()}", nl=False)
