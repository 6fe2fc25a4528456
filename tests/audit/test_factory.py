"""``open_audit_log`` picks the backend from settings, a URL or a path (no I/O until first use)."""

from __future__ import annotations

from pathlib import Path

import pytest

from govern.audit import PostgresAuditLog, SQLiteAuditLog, open_audit_log
from govern.config import Settings
from govern.errors import InvalidRequest
from tests.audit.conftest import make_record


def test_default_is_sqlite_under_the_state_folder(tmp_path: Path) -> None:
    log = open_audit_log(Settings(state_dir=tmp_path / "state" / "nested"))
    assert isinstance(log, SQLiteAuditLog)
    assert log.path == tmp_path / "state" / "nested" / "audit.db"
    assert not log.path.exists()  # opened lazily
    log.append(make_record(1))
    assert log.path.exists() and oct(log.path.stat().st_mode & 0o777) == "0o600"
    log.close()


def test_settings_audit_url_wins(tmp_path: Path) -> None:
    log = open_audit_log(Settings(state_dir=tmp_path, audit_url="postgresql://u:pw@db:5432/audit"))
    assert isinstance(log, PostgresAuditLog)
    assert "pw" not in repr(log) and "u@db:5432/audit" in repr(log)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////var/lib/govern/audit.db", Path("/var/lib/govern/audit.db")),  # absolute
        ("sqlite:///state/audit.db", Path("state/audit.db")),  # relative to the working folder
        ("/var/lib/govern/audit.db", Path("/var/lib/govern/audit.db")),
        ("audit.db", Path("audit.db")),
    ],
)
def test_sqlite_urls_and_paths(url: str, expected: Path) -> None:
    log = open_audit_log(url)
    assert isinstance(log, SQLiteAuditLog) and log.path == expected


def test_postgres_urls_and_prefix() -> None:
    for url in ("postgresql://postgres@127.0.0.1:5432/test", "postgres://h/db"):
        log = open_audit_log(url, table_prefix="audit_")
        assert isinstance(log, PostgresAuditLog) and log.prefix == "audit_"


@pytest.mark.parametrize("url", ["mysql://h/db", "sqlite://", "s3://bucket/audit"])
def test_unsupported_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        open_audit_log(url)


@pytest.mark.parametrize("prefix", ["Govern", "x; DROP TABLE y; --", "1abc", "a-b"])
def test_table_prefix_must_be_a_plain_identifier(prefix: str) -> None:
    with pytest.raises(InvalidRequest):
        PostgresAuditLog("postgresql://h/db", prefix)
