"""The PostgreSQL wire server, end to end: ``govern serve`` as a real process, driven by the real
``psql`` binary and by psycopg 3. Masked values only, catalog commands, errors with their
SQLSTATE, and one audit record per query."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from govern.audit.log import open_audit_log
from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.model import local_principal
from govern.sql import SqlEngine
from tests.gateway import Server, World, start_server, stop_server

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="the psql client is not installed")


@pytest.fixture(scope="module")
def server(demo_world, tmp_path_factory):
    """One gateway (HTTP + PostgreSQL wire on free ports) over a private copy of the demo world."""
    d = tmp_path_factory.mktemp("pgwire") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    s = start_server(World(d, json.loads((d / "keys.json").read_text())))
    yield s
    stop_server(s)


def psql(server: Server, *args: str, who: str = "alice", purpose: str = "analytics",
         key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": key or server.world.keys[who],
           "PGCONNECT_TIMEOUT": "10", "PGSSLMODE": "prefer"}  # prefer: psql asks for SSL first, gets 'N'
    return subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", who, "-d", purpose,
                           *args], env=env, capture_output=True, text=True, timeout=60)


def connect(server: Server, who: str = "alice", purpose: str = "analytics", **kwargs) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=server.pg_port, user=who, password=server.world.keys[who],
                           dbname=purpose, connect_timeout=10, **kwargs)


def visible_columns(server: Server, who: str, purpose: str, dataset: str) -> list[str]:
    gov = Governor(load_settings(server.world.config, watch_policies=False))
    tables = SqlEngine(gov, gov.settings).tables(local_principal(gov.state.policy, who), purpose)
    return tables[dataset].names


def pgwire_records(server: Server) -> list:
    settings = load_settings(server.world.config)
    log = open_audit_log(f"sqlite:///{(settings.state_dir / 'audit.db').resolve()}")
    try:
        out, seq = [], 0
        while page := log.records(after_seq=seq, limit=1000):
            out += [r for r in page if r.extra.get("surface") == "pgwire"]
            seq = page[-1].seq
        return out
    finally:
        log.close()


# -- psql --------------------------------------------------------------------------------------------

def test_psql_select_returns_masked_rows(server, leaks) -> None:
    out = psql(server, "-c", "select name, email, region from patients order by email limit 20")
    assert out.returncode == 0, out.stderr
    assert "(20 rows)" in out.stdout and " k1:" in out.stdout  # names are keyed pseudonyms for alice
    leaks.assert_none(out.stdout)
    whole = psql(server, "-A", "-t", "-c", "select * from patients")
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout.splitlines()) > 100
    leaks.assert_none(whole.stdout)


def test_psql_several_statements_in_one_query(server) -> None:
    out = psql(server, "-A", "-t", "-c", "select 1 as a; select count(*) from encounters where region = 'EU'")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split()
    assert first == "1" and int(second) > 0


def test_psql_dt_lists_the_readable_datasets(server) -> None:
    out = psql(server, "-c", r"\dt")
    assert out.returncode == 0, out.stderr
    assert "List of relations" in out.stdout
    assert "public | encounters | table" in out.stdout and "public | patients   | table" in out.stdout
    assert "pg_class" not in out.stdout and "(2 rows)" in out.stdout


def test_psql_d_patients_shows_the_masked_schema_without_withheld_columns(server) -> None:
    out = psql(server, "-c", r"\d patients")
    assert out.returncode == 0, out.stderr
    assert 'Table "public.patients"' in out.stdout
    lines = [line.split("|") for line in out.stdout.splitlines() if line.count("|") >= 4]
    shown = {cells[0].strip(): cells[1].strip() for cells in lines[1:]}
    assert list(shown) == visible_columns(server, "alice", "analytics", "patients")
    assert "ssn" not in out.stdout and "phone" not in out.stdout
    assert shown["birth_date"] == "date" and shown["charges"] == "double precision" and shown["name"] == "text"
    other = psql(server, "-c", r"\d patients", who="dave", purpose="treatment")  # dave sees PHI of his region
    assert other.returncode == 0, other.stderr
    assert "ssn" in other.stdout or "ssn" not in visible_columns(server, "dave", "treatment", "patients")


def test_psql_errors_carry_sqlstate_and_position(server) -> None:
    withheld = psql(server, "-v", "VERBOSITY=verbose", "-c", "select ssn from patients")
    assert withheld.returncode == 1
    assert "ERROR:  42703: column 'ssn' does not exist (unknown, or withheld under purpose 'analytics')" \
        in withheld.stderr
    assert "LINE 1: select ssn from patients\n               ^" in withheld.stderr  # P field → caret
    broken = psql(server, "-v", "VERBOSITY=verbose", "-c", "select from from patients")
    assert broken.returncode == 1 and "ERROR:  42601:" in broken.stderr


def test_psql_wrong_key_and_unentitled_purpose_are_fatal(server) -> None:
    bad = psql(server, "-c", "select 1", key=server.world.keys["bob"])  # bob's key is not alice's
    assert bad.returncode == 2
    assert 'FATAL:  password authentication failed for user "alice"' in bad.stderr
    wrong = psql(server, "-c", "select 1", purpose="research")
    assert wrong.returncode == 2
    assert 'FATAL:  database "research" is not a purpose alice may use' in wrong.stderr
    assert "HINT:  connect to one of: analytics" in wrong.stderr


def test_psql_session_statements_are_answered_locally(server) -> None:
    out = psql(server, "-q", "-A", "-t", "-c", "set application_name = 'report'; show application_name; begin; "
                                         "show transaction_isolation; commit; reset all; show server_version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["report", "read committed", "16.0 (govern)"]


# -- psycopg -----------------------------------------------------------------------------------------

def test_psycopg_bound_parameters_and_python_types(server, leaks) -> None:
    with connect(server) as conn:
        cur = conn.cursor()
        cur.execute("select region, count(*) as n, min(birth_date) as first_birth, avg(charges) as mean "
                    "from patients where region = %s group by region", ("EU",))
        ((region, n, first_birth, mean),) = cur.fetchall()
        assert [c.name for c in cur.description] == ["region", "n", "first_birth", "mean"]
        assert region == "EU" and isinstance(n, int) and n > 0
        assert isinstance(first_birth, dt.date) and isinstance(mean, float)
        cur.execute("select count(*) from patients where charges > %s and birth_date < %s",
                    (1000.5, dt.date(1990, 1, 1)))
        (count,) = cur.fetchone()
        assert 0 < count < n or count >= 0
        cur.execute("select %s::bigint + 1 as i, %s as t, %s::boolean as b, %s::decimal(10,2) as d, "
                    "%s::timestamp as ts", (41, "x", True, Decimal("1.25"), dt.datetime(2024, 5, 6, 7, 8, 9)))
        assert cur.fetchone() == (42, "x", True, Decimal("1.25"), dt.datetime(2024, 5, 6, 7, 8, 9))
        cur.execute("select email, name from patients")
        rows = cur.fetchall()
        assert len(rows) > 100
        leaks.assert_none(repr(rows))


def test_psycopg_binary_results_and_prepared_statements(server) -> None:
    with connect(server, autocommit=True) as conn:
        text = conn.execute("select patient_id, birth_date, charges from patients where region = %s "
                            "order by patient_id limit 5", ("EU",)).fetchall()
        binary = conn.cursor(binary=True).execute(
            "select patient_id, birth_date, charges from patients where region = %s order by patient_id limit 5",
            ("EU",)).fetchall()
        assert text == binary and len(text) == 5
        for _ in range(6):  # prepared (named) statements from the 5th run on
            got = conn.execute("select count(*) from encounters where region = %s", ("EU",), prepare=True)
        assert got.fetchone()[0] > 0
        (total,) = conn.execute("select count(*) from encounters").fetchone()
        streamed = list(conn.cursor().stream("select encounter_id from encounters"))  # row by row
        assert len(streamed) == total > 2048  # more than one chunk of DataRows


def test_psycopg_errors_have_sqlstates_and_the_connection_survives(server) -> None:
    with connect(server) as conn:
        cases = [
            ("select ssn from patients", errors.UndefinedColumn, "42703"),
            ("select * from nowhere", errors.UndefinedTable, "42P01"),
            ("selec 1", errors.SyntaxError, "42601"),
            ("select * from read_parquet('/etc/passwd')", errors.InsufficientPrivilege, "42501"),
            ("drop table patients", errors.InsufficientPrivilege, "42501"),
        ]
        for sql, cls, code in cases:
            with pytest.raises(cls) as caught:
                conn.execute(sql)
            assert caught.value.sqlstate == code
            conn.rollback()  # psycopg opened a transaction; the server reported it failed
            assert conn.execute("select 1").fetchone() == (1,)
        with pytest.raises(errors.UndefinedColumn) as caught:
            conn.execute("select region, ssn from patients")
        assert caught.value.diag.statement_position == "16"
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
    with connect(server, autocommit=True) as conn:
        with pytest.raises(errors.UndefinedColumn):
            conn.execute("select ssn from patients where region = %s", ("EU",))
        assert conn.execute("select count(*) from patients where region = %s", ("EU",)).fetchone()[0] > 0


def test_psycopg_bad_credentials_and_purpose(server) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=server.pg_port, user="alice", password="gk_00000000_nope",
                        dbname="analytics", connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match=r'database "treatment" is not a purpose alice'):
        connect(server, purpose="treatment")


def test_catalog_queries_describe_masked_views_and_hold_no_data(server) -> None:
    with connect(server, autocommit=True) as conn:
        tables = conn.execute("select table_name from information_schema.tables where table_schema = %s "
                              "order by 1", ("public",)).fetchall()
        assert tables == [("encounters",), ("patients",)]
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_name = 'patients' "
            "order by ordinal_position")]
        assert columns == visible_columns(server, "alice", "analytics", "patients")
        assert "ssn" not in columns
        attributes = {r[0] for r in conn.execute("select attname from pg_catalog.pg_attribute")}
        assert "ssn" not in attributes and "email" in attributes
        # a dataset named inside a catalog query is an empty relation: no path to data
        assert conn.execute("select * from pg_catalog.pg_class c, patients p").fetchall() == []
        assert conn.execute("select current_user, current_database()").fetchone() == ("alice", "analytics")
        with pytest.raises(errors.UndefinedFunction):
            conn.execute("select * from pg_catalog.pg_class, duckdb_settings()")
        # a query over a dataset that calls a catalog function goes to the engine, which refuses it
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select count(*) from patients where current_user = 'alice'")


def test_jdbc_and_dbeaver_navigator_queries(server) -> None:
    """What pgjdbc's DatabaseMetaData and DBeaver's navigator send (bound parameters included)."""
    with connect(server, autocommit=True) as conn:
        namespaces = conn.execute(
            "select n.oid, n.*, d.description from pg_catalog.pg_namespace n left outer join "
            "pg_catalog.pg_description d on d.objoid = n.oid and d.objsubid = 0 "
            "and d.classoid = 'pg_namespace'::regclass order by nspname").fetchall()
        public = next(row[0] for row in namespaces if row[2] == "public")
        tables = conn.execute(
            "select c.oid, c.*, t.relname as tabrelname, d.description, case when c.relpartbound is not null "
            "then (select rp.relname from pg_catalog.pg_inherits i join pg_catalog.pg_class rp "
            "on i.inhparent = rp.oid where i.inhrelid = c.oid) else null end as partition_table "
            "from pg_catalog.pg_class c left outer join pg_catalog.pg_class t on t.oid = c.reltoastrelid "
            "left outer join pg_catalog.pg_description d on d.objoid = c.oid and d.objsubid = 0 "
            "and d.classoid = 'pg_class'::regclass where c.relnamespace = %s "
            "and c.relkind not in ('i','I','c') order by c.relname", (public,)).fetchall()
        assert [row[2] for row in tables] == ["encounters", "patients"]
        patients = tables[1][0]
        columns = conn.execute(
            "select c.oid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), "
            "pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value, dsc.description "
            "from pg_catalog.pg_attribute a inner join pg_catalog.pg_class c on (a.attrelid = c.oid) "
            "left outer join pg_catalog.pg_attrdef ad on (a.attrelid = ad.adrelid and a.attnum = ad.adnum) "
            "left outer join pg_catalog.pg_description dsc on (c.oid = dsc.objoid and a.attnum = dsc.objsubid) "
            "where not attisdropped and c.oid = %s order by a.attnum", (patients,)).fetchall()
        assert [row[1] for row in columns] == visible_columns(server, "alice", "analytics", "patients")
        jdbc = conn.execute(
            "SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM, c.relname AS TABLE_NAME, "
            "CASE n.nspname ~ '^pg_' OR n.nspname = 'information_schema' WHEN true THEN 'SYSTEM TABLE' "
            "WHEN false THEN CASE c.relkind WHEN 'r' THEN 'TABLE' ELSE NULL END END AS TABLE_TYPE, "
            "d.description AS REMARKS FROM pg_catalog.pg_namespace n, pg_catalog.pg_class c "
            "LEFT JOIN pg_catalog.pg_description d ON (c.oid = d.objoid AND d.objsubid = 0 "
            "and d.classoid = 'pg_class'::regclass) WHERE c.relnamespace = n.oid AND c.relname LIKE %s "
            "AND c.relkind = 'r' AND n.nspname !~ '^pg_' ORDER BY TABLE_TYPE, TABLE_SCHEM, TABLE_NAME",
            ("%",)).fetchall()
        assert [(r[1], r[2], r[3]) for r in jdbc] == [("public", "encounters", "TABLE"),
                                                      ("public", "patients", "TABLE")]
        assert conn.execute("select typname from pg_catalog.pg_type where oid = %s", (1184,)).fetchone() == \
            ("timestamptz",)


def test_every_query_has_exactly_one_audit_record(server) -> None:
    before = {r.request_id for r in pgwire_records(server)}
    with connect(server, autocommit=True) as conn:
        conn.execute("select count(*) from patients where region = %s", ("EU",)).fetchall()
        with pytest.raises(errors.UndefinedColumn):
            conn.execute("select ssn from patients")
        conn.execute("set application_name = 'audit-test'")  # local: not a query, no record
        conn.execute("select table_name from information_schema.tables").fetchall()
    new = [r for r in pgwire_records(server) if r.request_id not in before]
    by_sql = {r.extra["sql"]: r for r in new if r.action in ("sql", "catalog")}
    # psycopg sends a query with parameters as Parse, Bind, Describe, Execute: Parse (validation)
    # and Describe (the result's shape, over empty views) are audited too, each once
    assert sorted((r.action, r.extra.get("sql", "")) for r in new) == sorted([
        ("connect", ""),
        ("prepare", "select count(*) from patients where region = $1"),
        ("describe", "select count(*) from patients where region = $1"),
        ("sql", "select count(*) from patients where region = $1"),
        ("sql", "select ssn from patients"),
        ("catalog", "select table_name from information_schema.tables")])
    ok = by_sql["select count(*) from patients where region = $1"]
    assert (ok.action, ok.outcome, ok.principal, ok.purpose, ok.dataset) == ("sql", "ok", "alice", "analytics",
                                                                            "patients")
    assert ok.rows == 1 and ok.extra["datasets"] == ["patients"] and ok.extra["params"] == 1
    assert ok.plan_hash and ok.extra["plans"] == {"patients": ok.plan_hash}
    refused = by_sql["select ssn from patients"]
    assert (refused.outcome, refused.status) == ("denied", 400) and "ssn" in refused.detail
    catalog = by_sql["select table_name from information_schema.tables"]
    assert catalog.extra["catalog"] is True and catalog.outcome == "ok" and catalog.rows == 2
    assert all(r.principal == "alice" and r.policy_version for r in new)
    bad = psql(server, "-c", "select 1", key="gk_00000000_wrongwrongwrongwrongwrongwrongwrongwr")
    assert bad.returncode == 2
    deadline = time.monotonic() + 10  # a refused login's record is group-committed just after the answer
    while True:
        logins = [r for r in pgwire_records(server) if r.action == "connect" and r.request_id not in before]
        if len(logins) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(r.outcome, r.principal, r.extra["user"]) for r in logins] == [("ok", "alice", "alice"),
                                                                           ("denied", None, "alice")]
    assert all("gk_" not in json.dumps(r.to_dict()) for r in new + logins)  # no key in the trail
