"""Finding: on the PostgreSQL wire, catalog queries and Parse/Describe ran outside the bounds
every other read has; Describe executed the query; slow catalog queries blocked logins.

Attacks:
- ``Describe`` of a bound portal started the query (it read and masked the data) although the
  client never sent ``Execute``;
- catalog queries took no read slot, so a principal could run any number of them next to the
  reads that had taken every slot;
- ``Parse`` did its work (classifying, later validating the text) without a slot or a record;
- seven slow catalog queries filled the thread pool that logins also waited on: nobody could
  log in until they finished.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.pgwire.raw import Raw, bind, cstr, execute, fields, parse


def _wire_records(gw) -> list:
    return [r for r in gw.audit.records(limit=1000) if r.extra.get("surface", r.extra.get("protocol")) == "pgwire"]


def test_describe_of_a_portal_does_not_execute_the_query(wire, world) -> None:
    port, gw = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"P", parse("", "select patient_id, zip from patients"))
    raw.send(b"B", bind("", "", []))
    raw.send(b"D", b"P" + cstr(""))
    raw.send(b"S")
    kinds = [k for k, _ in raw.until_ready()]
    assert kinds == [b"1", b"2", b"T", b"Z"]  # ParseComplete, BindComplete, RowDescription, Ready
    raw.close()
    records = _wire_records(gw)
    sql = [r for r in records if r.action == "sql"]
    assert sql == []  # nothing was executed: no query record, not even an aborted one
    describe = [r for r in records if r.action == "describe"]
    assert len(describe) == 1 and describe[0].outcome == "ok" and describe[0].rows is None


def test_a_catalog_query_takes_a_read_slot_and_is_audited(wire, world) -> None:
    port, gw = wire(max_concurrent_reads=1, queue_timeout=0.5)
    holder = Raw(port)
    holder.login("bob", world.keys["bob"], "research")
    holder.send(b"Q", cstr("begin"))
    holder.until_ready()
    holder.send(b"P", parse("", "select * from encounters"))
    holder.send(b"B", bind("p", "", []))
    holder.send(b"E", execute("p", 1))  # one row, then suspended: the portal keeps its slot
    holder.send(b"S")
    assert b"s" in [k for k, _ in holder.until_ready()]
    other = Raw(port)
    other.login("alice", world.keys["alice"], "analytics")
    other.send(b"Q", cstr("select relname from pg_catalog.pg_class"))
    messages = other.until_ready()
    errors = [fields(body) for kind, body in messages if kind == b"E"]
    assert errors and errors[0]["C"] == "53300", messages  # refused: no slot free
    holder.close()
    other.close()
    refused = [r for r in _wire_records(gw) if r.action == "catalog" and r.principal == "alice"]
    assert [(r.outcome, r.status) for r in refused] == [("error", 503)]


def test_parse_validates_and_is_audited(wire, world) -> None:
    port, gw = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"P", parse("", "select zip from patients where"))
    raw.send(b"S")
    messages = raw.until_ready()
    raw.close()
    errors = [fields(body) for kind, body in messages if kind == b"E"]
    assert errors and errors[0]["C"] == "42601"  # refused at Parse, as PostgreSQL does
    prepared = [r for r in _wire_records(gw) if r.action == "prepare"]
    assert [(r.outcome, r.status, r.extra["sql"]) for r in prepared] == [
        ("denied", 400, "select zip from patients where")]


@pytest.mark.slow
def test_slow_catalog_queries_do_not_block_logins(wire, world) -> None:
    port, _gw = wire(sql_timeout=20.0)
    slow = "select count(*) from pg_catalog.pg_class c, generate_series(1, 4000000000) g"
    started = threading.Barrier(8)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="bob", password=world.keys["bob"],
                                 dbname="research", connect_timeout=30, autocommit=True) as conn:
                started.wait(30)
                conn.execute(slow).fetchall()
        except psycopg.Error:
            pass  # refused for lack of a slot, or stopped at its deadline: either is fine here
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(7)]
    for t in threads:
        t.start()
    started.wait(30)
    time.sleep(1.0)  # the seven queries are running (or queued for a slot)
    t0 = time.monotonic()
    conn = psycopg.connect(host="127.0.0.1", port=port, user="alice", password=world.keys["alice"],
                           dbname="analytics", connect_timeout=30, autocommit=True)
    login = time.monotonic() - t0
    conn.close()
    assert login < 3.0, f"a login took {login:.1f} s while slow catalog queries ran"
    assert not errors
