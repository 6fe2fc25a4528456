"""Result policies hold identically on every SQL surface: the same queries through HTTP
``/v1/sql`` (httpx), the PostgreSQL wire (psycopg) and Flight SQL (ADBC) give the same rows,
the same number of suppressed groups and the same refusals — one real ``govern serve``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import adbc_driver_flightsql as adbc_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import httpx
import psycopg
import pyarrow.flight as flight
import pytest

from tests.flight.test_audit import statement
from tests.gateway import Server, World, start_server, stop_server
from tests.sql.test_result_policies import configure

SURFACES = ("http", "pgwire", "flight")
QUERIES = [
    ("no-small-group", "SELECT region, count(*) AS n, count(DISTINCT patient_id) AS people FROM patients "
                       "GROUP BY region ORDER BY region"),
    ("folded", "SELECT zip, count(*) AS n FROM patients GROUP BY zip ORDER BY n DESC, zip"),
    ("join-folded", "SELECT e.department, count(*) AS visits, sum(e.cost) AS cost FROM patients p "
                    "JOIN encounters e ON p.patient_id = e.patient_id GROUP BY e.department ORDER BY 1"),
    ("filtered-after-folding", "SELECT department, count(*) AS n FROM encounters WHERE department <> 'Cardiology' "
                               "GROUP BY department HAVING count(*) > 100 ORDER BY n DESC LIMIT 4"),
]
REFUSED = [
    ("projection-output", "SELECT patient_id FROM patients", "projection-only"),
    ("projection-predicate", "SELECT count(*) AS n FROM patients WHERE patient_id = 'k1:00'", "projection-only"),
    ("max", "SELECT max(charges) AS m FROM patients", "only count, sum and avg"),
    ("non-key-filter", "SELECT count(*) AS n FROM encounters WHERE cost > 100", "WHERE may only test group keys"),
]


@dataclass
class Answer:
    rows: list[tuple] = field(default_factory=list)
    suppressed: int | None = None
    refusal: tuple[str, str] | None = None  # (SQLSTATE, message)


@pytest.fixture(scope="module")
def server(demo_world, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("results") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    configure(d / "policies", k=10, encounters_k=200)
    import json

    s = start_server(World(d, json.loads((d / "keys.json").read_text())))
    yield s
    stop_server(s)


def _round(row: tuple) -> tuple:
    return tuple(round(v, 4) if isinstance(v, float) else v for v in row)


def ask(server: Server, surface: str, sql: str, who: str = "alice", purpose: str = "analytics") -> Answer:
    key = server.world.keys[who]
    if surface == "http":
        r = httpx.post(server.url + "/v1/sql", json={"sql": sql}, timeout=60,
                       headers={"Authorization": f"Bearer {key}", "X-Purpose": purpose})
        body = r.json()
        if r.status_code != 200:  # HTTP speaks problem types; SQLSTATE is the SQL surfaces' word for it
            assert (r.status_code, body["type"].rsplit(":", 1)[-1]) == (400, "invalid-sql"), body
            return Answer(refusal=("42501", body["detail"]))
        header = r.headers.get("x-govern-suppressed-groups")
        assert body.get("suppressed_groups") == (int(header) if header is not None else None)
        return Answer([_round(tuple(row)) for row in body["rows"]], body.get("suppressed_groups"))
    if surface == "pgwire":
        notices: list[str] = []
        with psycopg.connect(host="127.0.0.1", port=server.pg_port, user=who, password=key, dbname=purpose,
                             connect_timeout=10) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            try:
                rows = conn.execute(sql).fetchall()
            except psycopg.Error as exc:
                return Answer(refusal=(exc.sqlstate or "", exc.diag.message_primary or ""))
        found = [int(n.split("=")[1].split(":")[0]) for n in notices if n.startswith("suppressed_groups=")]
        return Answer([_round(tuple(r)) for r in rows], found[0] if found else None)
    header = adbc_flightsql.DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-purpose"
    with flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True,
                           db_kwargs={"username": who, "password": key, header: purpose}) as conn, \
            conn.cursor() as cur:
        try:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        except adbc_driver_manager.Error as exc:
            text = str(exc)
            code = text.split("SQLSTATE ")[1][:5] if "SQLSTATE " in text else ""
            return Answer(refusal=(code, text))
    return Answer([_round(tuple(r.values())) for r in table.to_pylist()], flight_suppressed(server, sql, key, purpose))


def flight_suppressed(server: Server, sql: str, key: str, purpose: str) -> int | None:
    """Flight SQL reports folded groups in the metadata of the DoGet stream's schema
    (``govern.suppressed_groups``); ADBC does not surface schema metadata, so read it with
    pyarrow.flight."""
    client = flight.connect(f"grpc://127.0.0.1:{server.flight_port}")
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode()),
                                                (b"x-purpose", purpose.encode())])
    try:
        info = client.get_flight_info(statement(sql), options)
        reader = client.do_get(info.endpoints[0].ticket, options)
        reader.read_all()
        value = (reader.schema.metadata or {}).get(b"govern.suppressed_groups")
        return int(value) if value is not None else None
    finally:
        client.close()


@pytest.mark.parametrize(("sql",), [pytest.param(q, id=i) for i, q in QUERIES])
def test_the_same_answer_and_suppression_on_every_surface(server: Server, sql: str) -> None:
    answers = {surface: ask(server, surface, sql) for surface in SURFACES}
    http = answers["http"]
    assert http.refusal is None and http.rows and http.suppressed is not None
    for surface in ("pgwire", "flight"):
        assert answers[surface].refusal is None, (surface, answers[surface].refusal)
        assert answers[surface].rows == http.rows, surface
        assert answers[surface].suppressed == http.suppressed, surface


def test_folding_is_reported_where_it_happens(server: Server) -> None:
    answer = ask(server, "http", QUERIES[1][1])
    assert answer.suppressed and answer.suppressed > 0
    assert sum(1 for row in answer.rows if row[0] is None) == 1  # one remainder row
    assert all(n >= 10 for _zip, n in answer.rows)
    assert ask(server, "http", QUERIES[0][1]).suppressed == 0


@pytest.mark.parametrize(("sql", "fragment"), [pytest.param(q, f, id=i) for i, q, f in REFUSED])
def test_the_same_refusal_on_every_surface(server: Server, sql: str, fragment: str) -> None:
    answers = {surface: ask(server, surface, sql) for surface in SURFACES}
    for surface, answer in answers.items():
        assert answer.refusal is not None, surface
        code, message = answer.refusal
        assert code == "42501" and fragment in message, (surface, answer.refusal)
