"""``govern classify`` on the demo world, as a steward runs it: the unclassified ``patients.phone``
gets a suggestion, the printed patch applies with ``patch``, ``--write`` makes the same edit and
leaves every other line of catalog.yaml as it was, the gateway then serves the column masked,
and no sampled value appears in anything the command prints or writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.model import local_principal

PHONE_LINE = "      phone: {tags: [contact], level: confidential}  # govern classify: phone number, confidence 0.80\n"


@pytest.fixture
def world_dir(demo_world, tmp_path: Path) -> Path:
    d = tmp_path / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    return d


def govern(world: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "govern"), *args, "--config", str(world / "govern.yaml")],
                          capture_output=True, text=True, cwd=world, env=os.environ.copy(), timeout=120)


def test_classify_suggests_phone_and_prints_a_patch_that_applies(world_dir: Path, leaks) -> None:
    before = (world_dir / "policies" / "catalog.yaml").read_text()
    out = govern(world_dir, "classify", "patients")
    assert out.returncode == 0, out.stderr
    assert "phone (string, unclassified): unclassified" in out.stdout
    assert "0.80  phone number -> tag contact, level confidential" in out.stdout
    assert "email (string, tags [contact]): agrees" in out.stdout
    patch = out.stdout[out.stdout.index("--- a/catalog.yaml"):]
    assert patch.count("\n+      ") == 1 and "+" + PHONE_LINE in patch
    assert (world_dir / "policies" / "catalog.yaml").read_text() == before  # printing writes nothing
    applied = subprocess.run(["patch", "-p1", "--dry-run"], input=patch, capture_output=True, text=True,
                             cwd=world_dir / "policies")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    leaks.assert_none(out.stdout, out.stderr)
    as_json = govern(world_dir, "classify", "patients", "--format", "json")
    assert json.loads(as_json.stdout)["classification"]["columns"][-1]["suggestions"][0]["tag"] == "contact"
    leaks.assert_none(as_json.stdout, as_json.stderr)


def test_write_inserts_one_line_and_the_gateway_then_masks_the_column(world_dir: Path, leaks) -> None:
    catalog = world_dir / "policies" / "catalog.yaml"
    before = catalog.read_text()
    printed = govern(world_dir, "classify", "patients").stdout
    out = govern(world_dir, "classify", "patients", "--write")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("wrote catalog.yaml: phone")
    after = catalog.read_text()
    lines = before.splitlines(keepends=True)
    at = lines.index("      charges: {tags: [financial], bounds: [0, 50000]}\n") + 1
    assert after == "".join([*lines[:at], PHONE_LINE, *lines[at:]])  # comments, order, blank lines kept
    original = world_dir / "original"
    original.mkdir()
    (original / "catalog.yaml").write_text(before)
    patched = subprocess.run(["patch", "-p1"], input=printed[printed.index("--- a/"):], capture_output=True,
                             text=True, cwd=original)
    assert patched.returncode == 0, patched.stdout + patched.stderr
    assert (original / "catalog.yaml").read_text() == after  # the printed patch and --write make the same file
    leaks.assert_none(out.stdout, out.stderr, after)
    gov = Governor(load_settings(world_dir / "govern.yaml"))  # loads (and checks) the edited policy
    alice = local_principal(gov.state.policy, "alice")
    served = gov.read(alice, "patients", "analytics", columns=["phone"], limit=5).reader.read_all()
    assert served.column("phone").to_pylist() == ["*"] * 5  # contact → email_domain → '*'
    again = govern(world_dir, "classify", "patients", "--write")  # now classified: nothing to accept
    assert "no change to catalog.yaml" in again.stdout and catalog.read_text() == after


def test_classified_columns_are_never_overwritten(world_dir: Path) -> None:
    out = govern(world_dir, "classify", "patients", "--column", "email", "--column", "nope", "--write")
    assert out.returncode == 0, out.stderr
    assert "not accepted: email: already in the catalog (edit it by hand)" in out.stdout
    assert "not accepted: nope: no such column in the data" in out.stdout
    assert "no change to catalog.yaml" in out.stdout


def test_unknown_dataset_is_an_error(world_dir: Path) -> None:
    out = govern(world_dir, "classify", "nope")
    assert out.returncode == 2 and out.stderr.strip() == "error: unknown dataset 'nope'"


def test_without_the_monitor_extra_the_command_says_what_to_install(world_dir: Path) -> None:
    hide = ("import sys; sys.modules['stdnum'] = None; from govern.cli import main; "
            "main(['classify', 'patients', '--config', sys.argv[1]], prog_name='govern')")
    out = subprocess.run([sys.executable, "-c", hide, str(world_dir / "govern.yaml")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: govern classify needs the 'monitor' extra (pip install 'govern[monitor]'): "
                                  "stdnum is missing")
