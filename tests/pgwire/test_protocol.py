"""The wire protocol byte by byte, against an in-process server: startup (SSL refused, FATAL
codes), the extended protocol (named statements, Describe, portals suspended by a row limit,
binary values, skipping to Sync after an error), limits — and the codec pieces on their own."""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import pyarrow as pa
import pytest

from govern.pgwire.catalog import output_names, rewrite
from govern.pgwire.protocol import split_statements
from govern.pgwire.types import column_encoder, decode_param, numeric_binary
from tests.pgwire.raw import Raw, bind, cstr, data_values, execute, fields, parse

# -- startup -----------------------------------------------------------------------------------------

def test_ssl_and_gss_requests_are_declined_then_login_succeeds(wire, world) -> None:
    port, _ = wire()
    raw = Raw(port)
    for code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
        raw.sock.sendall(struct.pack("!ii", 8, code))
        assert raw._read(1) == b"N"
    messages = raw.login("alice", world.keys["alice"], "analytics")
    kinds = [k for k, _ in messages]
    assert kinds[0] == b"R" and messages[0][1] == struct.pack("!i", 0)  # AuthenticationOk
    status = dict(tuple(body.split(b"\0")[:2]) for k, body in messages if k == b"S")
    assert status[b"server_version"] == b"16.0 (govern)" and status[b"client_encoding"] == b"UTF8"
    assert status[b"DateStyle"] == b"ISO, MDY" and status[b"integer_datetimes"] == b"on"
    assert status[b"standard_conforming_strings"] == b"on" and status[b"server_encoding"] == b"UTF8"
    assert b"K" in kinds and messages[-1] == (b"Z", b"I")
    raw.close()


@pytest.mark.parametrize(("user", "key_of", "database", "code"), [
    ("alice", "bob", "analytics", "28P01"),        # someone else's key
    ("alice", None, "analytics", "28P01"),         # not a key at all
    ("alice", "alice", "research", "3D000"),       # a purpose alice may not use
    ("alice", "alice", "no-such-purpose", "3D000"),
])
def test_startup_refusals_are_fatal_with_their_sqlstate(wire, world, user, key_of, database, code) -> None:
    port, _ = wire()
    raw = Raw(port)
    raw.startup(user=user, database=database)
    assert raw.recv()[0] == b"R"
    raw.send(b"p", cstr(world.keys[key_of] if key_of else "hunter2"))
    kind, body = raw.recv()
    err = fields(body)
    assert kind == b"E" and err["S"] == "FATAL" and err["C"] == code
    if code == "3D000":
        assert err["H"] == "connect to one of: analytics, quality-improvement"
    with pytest.raises(ConnectionError):
        raw.recv()


# -- simple and extended query ----------------------------------------------------------------------

def test_simple_query_with_several_statements_and_an_empty_one(wire, world) -> None:
    port, _ = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"Q", cstr(""))
    assert [k for k, _ in raw.until_ready()] == [b"I", b"Z"]
    raw.send(b"Q", cstr("select 1 as a; -- nothing\n; select 'x;y' as b"))
    messages = raw.until_ready()
    assert [k for k, _ in messages] == [b"T", b"D", b"C", b"T", b"D", b"C", b"Z"]
    assert data_values(messages[4][1]) == [b"x;y"] and messages[2][1] == cstr("SELECT 1")
    raw.send(b"Q", cstr("select 1; select ssn from patients; select 2"))  # stops at the error
    messages = raw.until_ready()
    assert [k for k, _ in messages] == [b"T", b"D", b"C", b"E", b"Z"]
    err = fields(messages[3][1])
    assert err["C"] == "42703" and err["P"] == str(len("select 1; select ") + 1)  # 1-based, whole text
    raw.close()


def test_extended_protocol_named_statement_portal_suspension_and_describe(wire, world) -> None:
    port, _ = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    sql = "select encounter_id, cost from encounters where region = $1 order by encounter_id limit 12"
    raw.send(b"P", parse("s1", sql, [25]))
    raw.send(b"D", b"S" + cstr("s1"))
    raw.send(b"B", bind("p1", "s1", [b"EU"]))
    raw.send(b"D", b"P" + cstr("p1"))
    raw.send(b"E", execute("p1", 5))
    raw.send(b"E", execute("p1", 5))
    raw.send(b"E", execute("p1", 0))
    raw.send(b"S")
    messages = raw.until_ready()
    kinds = b"".join(k for k, _ in messages)
    assert kinds == b"1tT2T" + b"D" * 5 + b"s" + b"D" * 5 + b"s" + b"D" * 2 + b"CZ"
    assert messages[1][1] == struct.pack("!hI", 1, 25)  # one parameter, text
    assert messages[-2][1] == cstr("SELECT 12")
    assert b"encounter_id" in messages[2][1] and b"cost" in messages[2][1]
    raw.close()


def test_after_an_error_messages_are_skipped_until_sync(wire, world) -> None:
    port, _ = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"P", parse("", "select ssn from patients"))
    raw.send(b"B", bind("", "", []))
    raw.send(b"E", execute(""))
    raw.send(b"P", parse("", "select 1"))  # skipped: the error stands until Sync
    raw.send(b"B", bind("", "", []))
    raw.send(b"E", execute(""))
    raw.send(b"S")
    messages = raw.until_ready()
    assert [k for k, _ in messages] == [b"1", b"2", b"E", b"Z"]
    assert fields(messages[2][1])["C"] == "42703" and messages[-1][1] == b"I"
    raw.send(b"P", parse("", "select 1"))
    raw.send(b"B", bind("", "", []))
    raw.send(b"E", execute(""))
    raw.send(b"S")
    assert [k for k, _ in raw.until_ready()] == [b"1", b"2", b"D", b"C", b"Z"]
    raw.close()


def test_binary_parameters_and_binary_results(wire, world) -> None:
    port, _ = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"P", parse("", "select $1::bigint + 1 as n, $2 as d, $3 as t", [20, 1082, 25]))
    days = (dt.date(2024, 2, 29) - dt.date(2000, 1, 1)).days
    raw.send(b"B", bind("", "", [struct.pack("!q", 41), struct.pack("!i", days), "é".encode()], [1], [1]))
    raw.send(b"E", execute(""))
    raw.send(b"S")
    messages = raw.until_ready()
    row = data_values(next(body for k, body in messages if k == b"D"))
    assert row == [struct.pack("!q", 42), struct.pack("!i", days), "é".encode()]
    raw.close()


def test_transaction_status_follows_begin_error_and_rollback(wire, world) -> None:
    port, _ = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"Q", cstr("begin"))
    assert raw.until_ready()[-1] == (b"Z", b"T")
    raw.send(b"Q", cstr("select nope from patients"))
    assert raw.until_ready()[-1] == (b"Z", b"E")
    raw.send(b"Q", cstr("select 1"))
    messages = raw.until_ready()
    assert fields(messages[0][1])["C"] == "25P02"
    raw.send(b"Q", cstr("rollback"))
    assert raw.until_ready()[-1] == (b"Z", b"I")
    raw.close()


# -- limits ------------------------------------------------------------------------------------------

def test_result_row_limit_and_time_limit(wire, world) -> None:
    port, _ = wire(max_rows=3, sql_timeout=0.5)
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"Q", cstr("select patient_id from patients"))
    messages = raw.until_ready()
    assert fields(next(b for k, b in messages if k == b"E"))["C"] == "54000"
    raw.send(b"Q", cstr("select count(*) from range(100000) a, range(100000) b"))
    messages = raw.until_ready()
    assert fields(next(b for k, b in messages if k == b"E"))["C"] == "57014"
    raw.send(b"Q", cstr("select 1"))  # the session goes on
    assert [k for k, _ in raw.until_ready()] == [b"T", b"D", b"C", b"Z"]
    raw.close()


def test_oversized_message_is_refused(wire, world) -> None:
    port, _ = wire(sql_max_request_bytes=1000)
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"Q", cstr("select '" + "x" * 100_000 + "'"))
    kind, body = raw.recv()
    assert kind == b"E" and fields(body)["C"] == "54000" and fields(body)["S"] == "FATAL"
    raw.close()


# -- codec -------------------------------------------------------------------------------------------

def test_split_statements_respects_quotes_comments_and_dollar_quoting() -> None:
    text = "select ';' as a; select \"x;\" from t -- ; c\n; /* ; */ select $$;$$, $tag$ ; $tag$;; "
    assert [s.strip() for _, s in split_statements(text)] == [
        "select ';' as a", 'select "x;" from t -- ; c', "/* ; */ select $$;$$, $tag$ ; $tag$"]
    assert split_statements("  -- only a comment\n") == []
    assert split_statements("select $1; select 2")[1][0] == len("select $1;")


def test_values_are_encoded_like_postgresql() -> None:
    def text(values, type_, tz=dt.UTC):
        return column_encoder(type_, False, tz)(pa.array(values, type_))

    assert text([1.0, 0.1, 1e20, float("inf"), None], pa.float64()) == [b"1", b"0.1", b"1e+20", b"Infinity", None]
    assert text([0.1], pa.float32()) == [b"0.1"]
    assert text([True, False], pa.bool_()) == [b"t", b"f"]
    assert text([b"\x00\xff"], pa.binary()) == [b"\\x00ff"]
    assert text([dt.datetime(2024, 1, 2, 3, 4, 5, 500000)], pa.timestamp("us")) == [b"2024-01-02 03:04:05.5"]
    stamp = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert text([stamp], pa.timestamp("us", tz="UTC")) == [b"2024-01-02 03:04:05+00"]
    assert text([[1, None, 3]], pa.list_(pa.int64())) == [b"{1,NULL,3}"]
    assert text([Decimal("-12.340")], pa.decimal128(10, 3)) == [b"-12.340"]


@pytest.mark.parametrize("value", ["0", "1", "-12.340", "12345678.9", "0.0001", "1000000", "NaN", "-0.5"])
def test_binary_numeric_round_trips(value: str) -> None:
    number = Decimal(value)
    back = decode_param(1700, True, numeric_binary(number), 1)
    assert (back.is_nan() and number.is_nan()) or (back == number and str(back) == str(number))


def test_text_parameters_decode_by_type() -> None:
    assert decode_param(20, False, b"42", 1) == 42
    assert decode_param(16, False, b"t", 1) is True
    assert decode_param(1082, False, b"2024-02-29", 1) == dt.date(2024, 2, 29)
    assert decode_param(1184, False, b"2024-02-29 10:00:00+02", 1) == dt.datetime(
        2024, 2, 29, 8, tzinfo=dt.UTC)
    assert decode_param(0, False, b"EU", 1) == "EU"
    assert decode_param(25, False, None, 1) is None


# -- catalog rewriting -------------------------------------------------------------------------------

def test_psql_catalog_constructs_are_rewritten_for_duckdb() -> None:
    sql, columns = rewrite("SELECT c.oid::pg_catalog.regclass, pg_catalog.format_type(a.atttypid, a.atttypmod) "
                           "FROM pg_catalog.pg_class c, pg_catalog.pg_attribute a, pg_catalog.pg_inherits i "
                           "WHERE c.relname OPERATOR(pg_catalog.~) '^(patients)$' COLLATE pg_catalog.default "
                           "AND i.inhrelid = '1'::pg_catalog.oid")
    assert columns == ["oid", "format_type"]
    assert "govern_catalog.pg_class" in sql and "govern_catalog.pg_attribute" in sql
    assert "PGC_REGCLASS_NAME(c.oid)" in sql and "PGC_FORMAT_TYPE(" in sql and "REGEXP_MATCHES" in sql
    assert "COLLATE" not in sql and "pg_inherits" not in sql and "WHERE FALSE" in sql  # empty stand-in


def test_output_names_follow_postgresql() -> None:
    assert output_names("select region, count(*), avg(x) as mean, cast(y as int), 1 from t") == [
        "region", "count", "mean", "y", "?column?"]
    assert output_names("select * from t") is None


def test_a_portal_closed_before_its_end_is_audited_once_as_aborted(wire, world) -> None:
    port, gw = wire()
    raw = Raw(port)
    raw.login("alice", world.keys["alice"], "analytics")
    raw.send(b"P", parse("", "select encounter_id from encounters"))
    raw.send(b"B", bind("p", "", []))
    raw.send(b"E", execute("p", 2))
    raw.send(b"C", b"P" + cstr("p"))
    raw.send(b"S")
    assert [k for k, _ in raw.until_ready()] == [b"1", b"2", b"D", b"D", b"s", b"3", b"Z"]
    raw.send(b"Q", cstr("select 1 as done"))
    raw.until_ready()
    records = [r for r in gw.audit.records(limit=1000) if r.extra.get("surface") == "pgwire"]
    assert [(r.action, r.extra.get("sql"), r.outcome, r.rows) for r in records] == [
        ("connect", None, "ok", None),
        ("prepare", "select encounter_id from encounters", "ok", None),  # validated at Parse
        ("sql", "select encounter_id from encounters", "aborted", 2),
        ("sql", "select 1 as done", "ok", 1)]
    raw.close()
