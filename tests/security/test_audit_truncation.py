"""Finding (issue 12): audit tail truncation verifies OK.

Attack: someone with write access to the audit *store* (a DBA on the shared PostgreSQL, anyone
who can write the SQLite file) deletes the newest records and moves the one-row ``chain_head``
to the new last record, or empties the log and resets the head to the genesis row. Every
remaining link is intact, so a verifier that trusts the store's own head reports
"chain intact". The head must be anchored where the store's writer cannot forge it: here,
signed checkpoints in a separate file (``audit_checkpoint_file``), signed with a key derived
from the gateway's masking key, which the store never holds.

Runs on SQLite and on the real PostgreSQL at 127.0.0.1:5432 (database ``test``), each test
with its own table prefix, dropped afterwards; the store is opened exactly as the gateway
opens it, from its settings.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from govern.audit import GENESIS_HASH, open_audit_log
from govern.cli import main
from govern.config import Settings
from tests.audit.conftest import PG_URL, make_record, pg_execute, require_pg

N = 12
MASKING_KEY = "base64:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="  # 32 bytes


class Deployment:
    """A gateway's settings over one real store, and raw SQL access to that store."""

    def __init__(self, settings: Settings, prefix: str, raw: Callable[..., Any],
                 config: Path) -> None:
        self.settings, self.prefix, self._raw, self.config = settings, prefix, raw, config

    def sql(self, text: str, params: tuple[Any, ...] = ()) -> Any:
        return self._raw(text.format(p=self.prefix), params)


def _sqlite_raw(path: Path) -> Callable[..., Any]:
    def raw(sql: str, params: tuple[Any, ...] = ()) -> Any:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    return raw


@pytest.fixture(params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    state = tmp_path / "state"
    config = tmp_path / "govern.yaml"
    if request.param == "sqlite":
        settings = Settings(state_dir=state, masking_key=SecretStr(MASKING_KEY))
        config.write_text(f"state_dir: {state}\nmasking_key: '{MASKING_KEY}'\n")
        yield Deployment(settings, "", _sqlite_raw(state / "audit.db"), config)
        return
    require_pg()
    prefix = f"govern_sec_{uuid.uuid4().hex[:10]}_"
    settings = Settings(state_dir=state, masking_key=SecretStr(MASKING_KEY), audit_url=PG_URL,
                        audit_table_prefix=prefix)
    config.write_text(f"state_dir: {state}\nmasking_key: '{MASKING_KEY}'\n"
                      f"audit_url: {PG_URL}\naudit_table_prefix: {prefix}\n")
    try:
        yield Deployment(settings, prefix, pg_execute, config)
    finally:
        pg_execute(f"DROP TABLE IF EXISTS {prefix}audit_log, {prefix}audit_pending, "
                   f"{prefix}chain_head")


def _write(d: Deployment, n: int = N) -> list[Any]:
    log = open_audit_log(d.settings, table_prefix=d.prefix)
    try:
        stored = [log.append(make_record(i)) for i in range(1, n + 1)]
        assert log.verify().ok
        return stored
    finally:
        log.close()


def _verify(d: Deployment) -> Any:
    log = open_audit_log(d.settings, table_prefix=d.prefix)
    try:
        return log.verify()
    finally:
        log.close()


def _cli_verify(d: Deployment) -> Any:
    return CliRunner().invoke(main, ["audit", "verify", "--config", str(d.config)])


def test_cutting_the_tail_and_moving_the_head_is_detected(deployment: Deployment) -> None:
    stored = _write(deployment)
    keep = N - 3
    deployment.sql("DELETE FROM {p}audit_log WHERE seq > ?", (keep,))
    deployment.sql("UPDATE {p}chain_head SET seq = ?, hash = ? WHERE id = 1",
                   (keep, stored[keep - 1].hash))
    result = _verify(deployment)
    assert not result.ok, f"a log cut to {keep} of {N} records verified: {result.message}"
    assert result.first_broken == keep + 1, result.message
    cli = _cli_verify(deployment)
    assert cli.exit_code == 1, cli.output
    assert f"BROKEN at record {keep + 1}" in cli.output


def test_emptying_the_log_and_resetting_the_head_is_detected(deployment: Deployment) -> None:
    _write(deployment)
    deployment.sql("DELETE FROM {p}audit_log")
    deployment.sql("UPDATE {p}chain_head SET seq = 0, hash = ? WHERE id = 1", (GENESIS_HASH,))
    result = _verify(deployment)
    assert not result.ok, f"an emptied log verified: {result.message}"
    assert result.first_broken == 1, result.message
    cli = _cli_verify(deployment)
    assert cli.exit_code == 1, cli.output


def test_dropping_the_tables_is_detected(deployment: Deployment) -> None:
    # The next open recreates empty tables: that must not start a fresh, verifying chain.
    _write(deployment)
    deployment.sql("DROP TABLE {p}audit_log")
    deployment.sql("DROP TABLE {p}chain_head")
    result = _verify(deployment)
    assert not result.ok, f"a recreated, empty log verified: {result.message}"
