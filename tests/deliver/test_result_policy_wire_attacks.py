"""Result policies through the PostgreSQL wire's other doors: the extended protocol (prepared
statements with parameters), SQL cursors (DECLARE/FETCH), SQL-level PREPARE/EXECUTE and
``COPY (query) TO STDOUT``. Each must refuse what ``/v1/sql`` refuses."""

from __future__ import annotations

import psycopg
import pytest

from tests.deliver.test_result_policy_surfaces import server  # noqa: F401 (the module's real gateway)
from tests.gateway import Server

LEAK = "SELECT patient_id FROM patients"
PROBE = "SELECT count(*) AS n FROM patients WHERE patient_id = %s"
SMALL = "SELECT zip, count(*) AS n FROM patients GROUP BY zip HAVING count(*) < 3"


def connect(gateway: Server) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=gateway.pg_port, user="alice",
                           password=gateway.world.keys["alice"], dbname="analytics", connect_timeout=10)


def refused(call) -> str:
    with pytest.raises(psycopg.Error) as caught:
        got = call()
        pytest.fail(f"served: {got!r}"[:400])
    assert caught.value.sqlstate == "42501", caught.value
    return caught.value.diag.message_primary or ""


def test_prepared_and_parameterized(server: Server) -> None:  # noqa: F811
    with connect(server) as conn:
        assert "projection-only" in refused(lambda: conn.execute(LEAK, prepare=True).fetchall())
    with connect(server) as conn:
        assert "projection-only" in refused(lambda: conn.execute(PROBE, ("k1:00",), prepare=True).fetchall())


def test_sql_cursor(server: Server) -> None:  # noqa: F811
    with connect(server) as conn, conn.transaction():
        def run() -> list:
            conn.execute(f"DECLARE c CURSOR FOR {LEAK}")
            return conn.execute("FETCH ALL FROM c").fetchall()
        assert "projection-only" in refused(run)


def test_server_side_cursor(server: Server) -> None:  # noqa: F811
    with connect(server) as conn, conn.transaction(), conn.cursor(name="c1") as cur:
        def run() -> list:
            cur.execute(LEAK)
            return cur.fetchall()
        assert "projection-only" in refused(run)


def test_sql_prepare_execute(server: Server) -> None:  # noqa: F811
    with connect(server) as conn:
        def run() -> list:
            conn.execute(f"PREPARE p AS {LEAK}")
            return conn.execute("EXECUTE p").fetchall()
        assert "projection-only" in refused(run)


def test_copy_to_stdout(server: Server) -> None:  # noqa: F811
    with connect(server) as conn, conn.cursor() as cur:
        def run() -> bytes:
            with cur.copy(f"COPY ({LEAK}) TO STDOUT") as copy:
                return b"".join(bytes(b) for b in copy)
        assert "projection-only" in refused(run)


def test_small_groups_are_folded_on_every_door(server: Server) -> None:  # noqa: F811
    """HAVING picks rows of the folded answer: no door shows a group smaller than k."""
    with connect(server) as conn:
        direct = conn.execute(SMALL).fetchall()
        prepared = conn.execute(SMALL, prepare=True).fetchall()
        with conn.cursor() as cur, cur.copy(f"COPY ({SMALL}) TO STDOUT") as copy:
            copied = [tuple(r) for r in copy.rows()]
        with conn.transaction():
            conn.execute(f"DECLARE c CURSOR FOR {SMALL}")
            fetched = conn.execute("FETCH ALL FROM c").fetchall()
    assert all(n >= 10 or zip_ is None for zip_, n in direct), direct
    assert direct == prepared == fetched
    assert all(n >= 10 for _zip, n in fetched)
    assert len(copied) == len(direct)


def test_a_fetch_count_too_long_for_int_is_an_error_not_a_dead_connection(server: Server) -> None:  # noqa: F811
    with connect(server) as conn:
        with pytest.raises(psycopg.Error) as caught, conn.transaction():
            conn.execute("DECLARE c CURSOR FOR SELECT region, count(*) AS n FROM patients GROUP BY region")
            conn.execute(f"FETCH {'9' * 5000} FROM c").fetchall()
        assert caught.value.sqlstate and not caught.value.sqlstate.startswith("XX"), caught.value
        assert conn.execute("SELECT 1 AS one").fetchall() == [(1,)]  # the session lives on
