"""The ``govern`` command. Thin: parse arguments, call the core, print.

One module per command group (``policy``, ``preview``, ``demo``, ``serve``, ``audit``, ``keys``,
``he``, ``synth``, ``monitor``, ``materialize``, ``sharing``); :mod:`govern.cli._common` holds what they share. Heavy imports happen inside
each command, so ``govern --help`` stays fast.
"""

from __future__ import annotations

import click

from govern.cli import (
    audit,
    demo,
    he,
    keys,
    materialize,
    monitor,
    policy,
    preview,
    serve,
    sharing,
    synth,
)

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="govern")
def main() -> None:
    """govern: purpose-based access to datasets, masked, filtered and audited."""


for command in (policy.policy, preview.preview, preview.reidentify, demo.demo, serve.serve, audit.audit,
                keys.keys, he.he, synth.synth, monitor.classify, materialize.materialize, sharing.sharing):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="govern")
