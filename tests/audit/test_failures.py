"""A store that cannot be written fails ``reserve`` and ``append`` with ``AuditError``, and no
message (error, repr or log line) carries a password or the server's file paths.

Tests run as root, so file permissions cannot make SQLite fail: the cases below fail for any
user (a directory where the file should be, a file that is not a database, tables dropped under
a running log, a database that does not exist, a port nobody listens on).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from govern.audit import AuditLog, PostgresAuditLog, SQLiteAuditLog
from govern.errors import AuditError
from tests.audit.conftest import Store, make_record, pg_execute, require_pg

PASSWORD = "hunter2-Sup3rS3cret"


def assert_both_fail(log: AuditLog, *secrets: str) -> list[str]:
    messages = []
    for call in (lambda: log.reserve("req-0001"), lambda: log.append(make_record(1))):
        with pytest.raises(AuditError) as info:
            call()
        assert info.value.status == 503 and info.value.slug == "audit-unavailable"
        messages.append(str(info.value))
    for text in messages:
        for secret in secrets:
            assert secret not in text
    return messages


# -- SQLite ------------------------------------------------------------------------------------

def test_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    where = tmp_path / "audit.db"
    where.mkdir()
    messages = assert_both_fail(SQLiteAuditLog(where), str(tmp_path))
    assert messages == ["audit log unavailable: cannot reserve (OperationalError)",
                        "audit log unavailable: cannot append (OperationalError)"]


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    where = tmp_path / "audit.db"
    where.write_bytes(b"this is not a SQLite database, just some bytes " * 100)
    messages = assert_both_fail(SQLiteAuditLog(where), str(tmp_path))
    assert "DatabaseError" in messages[0]


def test_sqlite_parent_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file, not a folder")
    assert_both_fail(SQLiteAuditLog(tmp_path / "state" / "audit.db"), str(tmp_path))


# -- both backends: the store breaks under a running log -----------------------------------------

def test_tables_dropped_under_a_running_log_are_not_silently_recreated(log: AuditLog,
                                                                       store: Store) -> None:
    log.append(make_record(1))
    store.sql("DROP TABLE {p}audit_pending")
    store.sql("DROP TABLE {p}audit_log")
    assert_both_fail(log)
    with pytest.raises(AuditError):
        log.records()
    # A fresh chain starting from the genesis hash would hide the loss: refuse instead.
    assert not store.sql("SELECT 1 FROM {p}chain_head WHERE seq = 0")


# -- PostgreSQL ---------------------------------------------------------------------------------

def _pg_url(**parts: str) -> str:
    host, port, db = parts.get("host", "127.0.0.1"), parts.get("port", "5432"), parts["db"]
    return f"postgresql://postgres:{PASSWORD}@{host}:{port}/{db}"


@pytest.mark.parametrize(
    ("title", "url"),
    [
        ("database does not exist", _pg_url(db="govern_no_such_database")),
        ("nobody listens on the port", _pg_url(port="1", db="test")),
    ],
)
def test_postgres_unreachable_store(title: str, url: str, caplog: pytest.LogCaptureFixture) -> None:
    require_pg()
    log = PostgresAuditLog(url, "govern_test_never_")
    with caplog.at_level(logging.WARNING, logger="govern.audit"):
        messages = assert_both_fail(log, PASSWORD)
    assert "OperationalError" in messages[0], title
    assert caplog.records, "the operator's log explains the failure"
    assert PASSWORD not in caplog.text
    assert "postgres@127.0.0.1" in caplog.text  # where, without the password
    assert PASSWORD not in repr(log) and "postgres@127.0.0.1" in repr(log)


def test_postgres_reconnects_after_the_connection_is_killed(pg_store: Store) -> None:
    log = pg_store.open()
    try:
        log.append(make_record(1))
        backend_pid = log.db.backend_pid  # type: ignore[attr-defined]
        pg_execute("SELECT pg_terminate_backend(?)", (backend_pid,))
        # The call that finds the connection dead fails: that request is refused (fail closed).
        with pytest.raises(AuditError):
            log.append(make_record(2))
        # The next call reconnects; the failed append left nothing behind.
        assert log.append(make_record(3)).seq == 2
        result = log.verify()
        assert (result.ok, result.count) == (True, 2), result.message
    finally:
        log.close()
