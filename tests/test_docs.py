"""Docs are tested: a CLI command, setting, mask function, action or error type missing from
docs/ fails the build."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from govern.cli import main
from govern.config import Settings
from govern.errors import ALL_ERRORS
from govern.mask import registry
from govern.policy.model import ACTIONS

DOCS = Path(__file__).resolve().parent.parent / "docs"
ALL_DOCS = "\n".join(p.read_text() for p in DOCS.glob("*.md")) + (DOCS.parent / "README.md").read_text()


def commands(group: click.Group, prefix: str = "govern") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            out += commands(cmd, path)
        else:
            out.append(path)
    return out


@pytest.mark.parametrize("command", commands(main))
def test_every_cli_command_is_documented(command: str) -> None:
    assert command in ALL_DOCS, f"`{command}` is not documented in docs/ or README.md"


@pytest.mark.parametrize("setting", sorted(Settings.model_fields))
def test_every_setting_is_documented(setting: str) -> None:
    assert f"| `{setting}` |" in (DOCS / "configuration.md").read_text()


@pytest.mark.parametrize("mask", registry.names())
def test_every_mask_function_is_documented(mask: str) -> None:
    assert f"`{mask}`" in (DOCS / "policies.md").read_text()


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_is_documented(action: str) -> None:
    assert f"| `{action}`" in (DOCS / "policies.md").read_text()


@pytest.mark.parametrize("error", [e for e in ALL_ERRORS], ids=lambda e: e.slug)
def test_every_error_type_is_documented(error) -> None:
    assert f"| `{error.slug}` |" in (DOCS / "api.md").read_text()
