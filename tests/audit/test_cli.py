"""``govern audit verify`` and ``govern audit public-key`` through the real CLI.

A deployment's ``govern.yaml`` (state folder, masking key) writes records exactly as the
gateway does (``open_audit_log(settings)``); the commands run through click's CliRunner and,
once, as a subprocess of the installed ``govern`` executable.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from govern.audit import open_audit_log
from govern.cli import main
from govern.config import load_settings
from tests.audit.conftest import make_record

KEY = "base64:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A govern.yaml whose log holds 5 records, anchored by 5 checkpoints."""
    config = tmp_path / "govern.yaml"
    config.write_text(f"state_dir: state\nmasking_key: '{KEY}'\n")
    log = open_audit_log(load_settings(config))
    for i in range(1, 6):
        log.append(make_record(i))
    log.close()
    return config


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["audit", *args])


def test_verify_reports_count_range_and_newest_checkpoint(deployment: Path) -> None:
    out = run("verify", "--config", str(deployment))
    assert out.exit_code == 0, out.output
    first, second = out.output.splitlines()
    assert first == "audit chain OK: 5 records verified (seq 1..5)"
    assert second.startswith("anchored: newest checkpoint names record 5 (")
    assert "key k1, line 5 of audit.checkpoints); 5 checkpoint(s) checked" in second


def test_verify_fails_in_one_line_on_a_cut_tail(deployment: Path) -> None:
    db = deployment.parent / "state" / "audit.db"
    with sqlite3.connect(db) as con:
        (hash3,) = con.execute("SELECT hash FROM audit_log WHERE seq = 3").fetchone()
        con.execute("DELETE FROM audit_log WHERE seq > 3")
        con.execute("UPDATE chain_head SET seq = 3, hash = ?", (hash3,))
    out = run("verify", "--config", str(deployment))
    assert out.exit_code == 1
    assert out.output.splitlines() == [
        "audit chain BROKEN at record 4: missing: signed checkpoint (line 5) names record 5 but "
        "the log ends at 3 (newest records removed)"]


def test_verify_fails_on_a_bad_signature(deployment: Path) -> None:
    checkpoints = deployment.parent / "state" / "audit.checkpoints"
    lines = checkpoints.read_text().splitlines()
    lines[1] = lines[1].replace('"seq":2', '"seq":3')
    checkpoints.write_text("\n".join(lines) + "\n")
    out = run("verify", "--config", str(deployment))
    assert out.exit_code == 1
    assert out.output.splitlines() == [
        "audit chain BROKEN: checkpoint file line 2: bad signature (forged or edited)"]


def test_a_verifier_with_the_public_keys_only(deployment: Path, tmp_path: Path) -> None:
    printed = run("public-key", "--config", str(deployment))
    assert printed.exit_code == 0, printed.output
    keys = yaml.safe_load(printed.output)["audit_public_keys"]
    assert list(keys) == ["k1"] and KEY.removeprefix("base64:") not in printed.output
    auditor = tmp_path / "auditor.yaml"  # no masking key: a separate machine, say
    auditor.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "auditor-state"),
        "audit_url": f"sqlite:///{deployment.parent / 'state' / 'audit.db'}",
        "audit_checkpoint_file": str(deployment.parent / "state" / "audit.checkpoints"),
        "audit_public_keys": keys}))
    out = run("verify", "--config", str(auditor))
    assert out.exit_code == 0, out.output
    assert "5 checkpoint(s) checked" in out.output


def test_url_and_checkpoints_options(deployment: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"state_dir: {tmp_path / 'elsewhere'}\nmasking_key: '{KEY}'\n")
    state = deployment.parent / "state"
    out = run("verify", "--config", str(bare), "--url", f"sqlite:///{state / 'audit.db'}",
              "--checkpoints", str(state / "audit.checkpoints"))
    assert out.exit_code == 0 and "5 checkpoint(s) checked" in out.output, out.output
    # the same log checked against no checkpoint file, by a verifier holding the key: refused
    out = run("verify", "--config", str(bare), "--url", f"sqlite:///{state / 'audit.db'}")
    assert out.exit_code == 1
    assert "not anchored: no signed checkpoint covers the log's 5 records" in out.output


def test_an_unanchored_deployment_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "govern.yaml"
    config.write_text("state_dir: state\n")
    log = open_audit_log(load_settings(config))
    log.append(make_record(1))
    log.close()
    out = run("verify", "--config", str(config))
    assert out.exit_code == 0
    assert out.output.splitlines() == [
        "audit chain OK: 1 records verified (seq 1..1)",
        "warning: not anchored: no checkpoint key is configured (masking key or "
        "audit_public_keys), so records cut from the end cannot be detected"]


def test_verify_as_a_subprocess(deployment: Path) -> None:
    exe = Path(sys.executable).parent / "govern"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([str(exe), "audit", "verify", "--config", str(deployment)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("audit chain OK: 5 records verified (seq 1..5)\nanchored:")
    with sqlite3.connect(deployment.parent / "state" / "audit.db") as con:
        con.execute("DELETE FROM audit_log")
        con.execute("UPDATE chain_head SET seq = 0, hash = ?", ("0" * 64,))
    emptied = subprocess.run([str(exe), "audit", "verify", "--config", str(deployment)],
                             capture_output=True, text=True, env=env, timeout=60)
    assert emptied.returncode == 1 and emptied.stdout == ""
    assert emptied.stderr == ("audit chain BROKEN at record 1: missing: signed checkpoint (line 5) "
                              "names record 5 but the log is empty (newest records removed)\n")
