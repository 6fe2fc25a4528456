"""A store written by an older govern (no ``policy_version`` column) is migrated on open.

The old store is built here exactly as version 0.1 built it: its DDL (copied from that
release) and records hashed without the field. Opening it with today's log adds the column,
keeps every old record verifying, and appends records that carry a policy version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from govern.audit import GENESIS_HASH
from tests.audit.conftest import Store, make_record

OLD_DDL = [
    """CREATE TABLE {p}audit_log (
        seq BIGINT PRIMARY KEY, time TEXT NOT NULL, request_id TEXT NOT NULL,
        principal TEXT, purpose TEXT, dataset TEXT, action TEXT NOT NULL,
        outcome TEXT NOT NULL, status INTEGER NOT NULL, plan_hash TEXT,
        columns TEXT NOT NULL, rows BIGINT, bytes BIGINT, detail TEXT, extra TEXT NOT NULL,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
    "CREATE TABLE {p}audit_pending (request_id TEXT PRIMARY KEY, time TEXT NOT NULL)",
    """CREATE TABLE {p}chain_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL)""",
]
OLD_FIELDS = ("seq", "time", "request_id", "principal", "purpose", "dataset", "action", "outcome",
              "status", "plan_hash", "columns", "rows", "bytes", "detail", "extra", "prev_hash",
              "hash")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def write_old_store(store: Store, n: int) -> str:
    """``n`` records as govern 0.1 stored them; returns the head hash."""
    for statement in OLD_DDL:
        store.sql(statement)
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        body = {k: v for k, v in make_record(i).to_dict().items() if k in OLD_FIELDS}
        body.update(seq=i, time=f"2024-01-01T00:00:{i:02d}.000Z", prev_hash=prev)
        body.pop("hash")
        digest = hashlib.sha256((prev + _canonical(body)).encode()).hexdigest()
        row = {**body, "hash": digest}
        values = tuple(_canonical(row[f]) if f in ("columns", "extra") else row[f] for f in OLD_FIELDS)
        store.sql(f"INSERT INTO {{p}}audit_log ({', '.join(OLD_FIELDS)}) "
                  f"VALUES ({', '.join('?' for _ in OLD_FIELDS)})", values)
        prev = digest
    store.sql("INSERT INTO {p}chain_head (id, seq, hash) VALUES (1, ?, ?)", (n, prev))
    return prev


def columns_of(store: Store) -> set[str]:
    if store.backend == "sqlite":
        return {r[1] for r in store.sql("PRAGMA table_info({p}audit_log)")}
    return {r[0] for r in store.sql("SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = ?", (f"{store.prefix}audit_log",))}


def test_an_old_store_gets_the_column_and_keeps_verifying(store: Store) -> None:
    if store.backend == "sqlite":
        Path(store.url).parent.mkdir(parents=True, exist_ok=True)
    head = write_old_store(store, 5)
    assert "policy_version" not in columns_of(store)
    log = store.open()
    try:
        old = log.records()
        assert [r.seq for r in old] == [1, 2, 3, 4, 5] and old[-1].hash == head
        assert all(r.policy_version is None for r in old)
        assert "policy_version" in columns_of(store)  # added on open
        assert log.verify().ok, log.verify().message
        new = log.append(make_record(6, policy_version="9f2c41d0"))
        assert (new.seq, new.prev_hash, new.policy_version) == (6, head, "9f2c41d0")
        assert log.records(after_seq=5) == [new]
        result = log.verify()
        assert (result.ok, result.count) == (True, 6), result.message
    finally:
        log.close()
    # opening again does not try to add the column twice
    again = store.open()
    try:
        assert again.verify().ok
    finally:
        again.close()
