"""What every command shares: settings, the one-line error report, the ``--config`` option.

Every failure prints one line (``file:line: message`` for policy problems, ``error: ...``
otherwise) and exits non-zero; no stack traces for expected errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from govern.config import Settings, load_settings
from govern.errors import GovernError, PolicyError

__all__ = ["config_option", "fail", "load", "report"]


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def load(config: str | None, policies: str | None = None, **overrides: Any) -> Settings:
    """Settings of a command: its options (``overrides``) over the environment over the file."""
    path = config or os.environ.get("GOVERN_CONFIG")
    if path is None and Path("govern.yaml").exists():
        path = "govern.yaml"
    if policies:
        overrides["policy_dir"] = Path(policies)
    return load_settings(path, **overrides)


def report(exc: GovernError) -> NoReturn:
    if isinstance(exc, PolicyError):
        for p in exc.problems:
            click.echo(str(p), err=True)
        fail(f"{len(exc.problems)} problem(s) in the policy set")
    extra = exc.extra
    msg = f"error: {exc.detail}"
    if extra.get("purposes") is not None:
        msg += f" (purposes available: {', '.join(extra['purposes']) or 'none'})"
    fail(msg, 2 if exc.status in (401, 403, 404) else 1)


config_option = click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                             help="Settings file (default: ./govern.yaml or $GOVERN_CONFIG).")

