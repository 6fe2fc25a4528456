"""Every Flight call leaves exactly one audit record: each refusal and each data response,
for every RPC and command govern answers (the Flight counterpart of
tests/deliver/test_one_record_per_request.py). Calls are made with pyarrow.flight directly,
one RPC at a time, so each record can be attributed to its call."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from govern.flight.messages import Messages, pack

M = Messages.build()


def command(name: str, **fields: object) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(pack(M.new(name, **fields)))


def records_of(server, call: Callable[[], object], *, settle: float = 0.0) -> tuple[object, list]:
    """Run ``call``; return its result (or the exception it raised) and the records it left."""
    before = server.last_seq()
    try:
        result: object = call()
    except (flight.FlightError, pa.ArrowException) as exc:
        result = exc
    server.gw.audit.flush()
    deadline = time.monotonic() + 5
    new = server.records(before)
    while not new and time.monotonic() < deadline:  # a stream's record: when the server sees its end
        time.sleep(0.05)
        new = server.records(before)
    if settle:
        time.sleep(settle)
        new = server.records(before)
    return result, new


def one(server, call: Callable[[], object], outcome: str, action: str, route: str, **settle: float) -> tuple:
    result, new = records_of(server, call, **settle)
    assert len(new) == 1, [(r.action, r.outcome, r.extra.get("route")) for r in new]
    record = new[0]
    assert (record.outcome, record.action, record.extra["route"], record.extra["surface"]) == \
        (outcome, action, route, "flight"), (record.outcome, record.action, record.extra, record.detail)
    return result, record


def statement(sql: str) -> flight.FlightDescriptor:
    return command("CommandStatementQuery", query=sql)


def test_handshake(flight_server) -> None:
    client = flight_server.client()
    token, record = one(flight_server, lambda: client.authenticate_basic_token("alice", flight_server.world.keys["alice"]),
                        "ok", "connect", "Handshake")
    assert record.principal == "alice" and token[1].startswith(b"Bearer gf_")
    refused, record = one(flight_server, lambda: client.authenticate_basic_token("alice", "gk_wrong"),
                          "denied", "connect", "Handshake")
    assert isinstance(refused, flight.FlightUnauthenticatedError) and record.status == 401
    none, record = one(flight_server, lambda: client.authenticate_basic_token("", ""), "denied", "connect", "Handshake")
    assert isinstance(none, flight.FlightUnauthenticatedError)


def test_statement_info_and_data(flight_server, leaks) -> None:
    client, options = flight_server.client(), flight_server.options()
    sql = "SELECT * FROM patients ORDER BY patient_id"
    info, record = one(flight_server, lambda: client.get_flight_info(statement(sql), options), "ok", "describe",
                       "GetFlightInfo")
    assert record.extra["sql"] == sql and record.purpose == "analytics"
    schema, _ = one(flight_server, lambda: client.get_schema(statement(sql), options), "ok", "describe", "GetSchema")
    assert schema.schema == info.schema and "ssn" not in info.schema.names
    ticket = info.endpoints[0].ticket
    table, record = one(flight_server, lambda: client.do_get(ticket, options).read_all(), "ok", "sql", "DoGet")
    assert table.schema == info.schema and record.rows == table.num_rows > 0
    assert record.plan_hash and record.columns.get("email", "").startswith("mask:")
    leaks.assert_none(str(table.to_pylist()))
    # the same ticket, presented by someone whose purpose does not allow it, is refused
    refused, record = one(flight_server, lambda: client.do_get(ticket, flight_server.options("bob", "research")),
                          "denied", "sql", "DoGet")
    assert isinstance(refused, flight.FlightUnauthorizedError) and record.principal == "bob"


def test_statement_refusals(flight_server) -> None:
    client, options = flight_server.client(), flight_server.options()
    refused, record = one(flight_server, lambda: client.get_flight_info(statement("SELECT ssn FROM patients"), options),
                          "denied", "describe", "GetFlightInfo")
    assert "withheld" in str(refused) and record.status == 400
    refused, record = one(flight_server, lambda: client.get_flight_info(statement("SELECT 1"),
                                                                        flight_server.options("eve", "analytics")),
                          "denied", "describe", "GetFlightInfo")
    assert isinstance(refused, flight.FlightUnauthorizedError)
    bad = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer gk_nope")])
    refused, record = one(flight_server, lambda: client.get_schema(statement("SELECT 1"), bad), "denied", "describe",
                          "GetSchema")
    # pyarrow reports GetSchema's refusals as UNKNOWN with a frame list: no server path, no source
    assert "invalid API key" in str(refused) and "govern/" not in str(refused) and record.principal is None
    refused, _ = one(flight_server, lambda: client.get_flight_info(command("CommandStatementUpdate", query="DELETE"),
                                                                   options), "denied", "describe", "GetFlightInfo")
    assert "not supported" in str(refused) and "Traceback" not in str(refused)
    refused, _ = one(flight_server, lambda: client.do_get(flight.Ticket(b"junk"), options), "denied", "sql", "DoGet")
    assert "not a Flight SQL message" in str(refused)


def test_a_stream_the_client_leaves_is_recorded_as_aborted(flight_server) -> None:
    client, options = flight_server.client(), flight_server.options("bob", "model-training")
    info = client.get_flight_info(statement("SELECT e.*, range AS k FROM encounters e, range(200)"), options)

    def read_one_batch() -> int:
        reader = client.do_get(info.endpoints[0].ticket, options)
        chunk = reader.read_chunk()
        reader.cancel()
        return chunk.data.num_rows

    _, record = one(flight_server, read_one_batch, "aborted", "sql", "DoGet", settle=0.5)
    assert record.status == 499


@pytest.mark.parametrize("name,fields,rows", [
    ("CommandGetSqlInfo", {}, None), ("CommandGetCatalogs", {}, ["analytics", "quality-improvement"]),
    ("CommandGetDbSchemas", {}, ["analytics"]), ("CommandGetTables", {"include_schema": True}, None),
    ("CommandGetTableTypes", {}, ["TABLE"])])
def test_metadata_commands(flight_server, name, fields, rows) -> None:
    client, options = flight_server.client(), flight_server.options()
    info, _ = one(flight_server, lambda: client.get_flight_info(command(name, **fields), options), "ok", "catalog",
                  "GetFlightInfo")
    table, record = one(flight_server, lambda: client.do_get(info.endpoints[0].ticket, options).read_all(), "ok",
                        "catalog", "DoGet")
    assert table.schema == info.schema and record.rows == table.num_rows and record.extra["command"] == name
    if rows is not None:
        assert table.column(0).to_pylist() == rows
    # without credentials the ticket is never read: the record cannot say what it asked for
    refused, record = one(flight_server, lambda: client.do_get(info.endpoints[0].ticket), "denied", "sql", "DoGet")
    assert isinstance(refused, flight.FlightUnauthenticatedError) and "command" not in record.extra


def test_get_tables_of_a_purpose_not_entitled_is_refused(flight_server) -> None:
    client = flight_server.client()
    descriptor = command("CommandGetTables", catalog="treatment")
    refused, _record = one(flight_server, lambda: client.get_flight_info(descriptor, flight_server.options()),
                          "denied", "catalog", "GetFlightInfo")
    assert isinstance(refused, flight.FlightUnauthorizedError) and "may not act under purpose" in str(refused)


def test_prepared_statements(flight_server) -> None:
    client, options = flight_server.client(), flight_server.options()
    sql = "SELECT count(*) AS n FROM patients WHERE region = ?"
    body = pack(M.new("ActionCreatePreparedStatementRequest", query=sql))
    results, record = one(flight_server, lambda: list(client.do_action(flight.Action("CreatePreparedStatement", body),
                                                                       options)), "ok", "prepare",
                          "DoAction:CreatePreparedStatement")
    wrapper = M.parse("ActionCreatePreparedStatementResult", _any_value(results[0].body.to_pybytes()))
    handle = wrapper.prepared_statement_handle
    assert pa.ipc.read_schema(pa.py_buffer(wrapper.dataset_schema)).names == ["n"]
    params = pa.record_batch([pa.array(["EU"])], names=["1"])
    descriptor = command("CommandPreparedStatementQuery", prepared_statement_handle=handle)

    def bind() -> bytes:
        writer, reader = client.do_put(descriptor, params.schema, options)
        writer.write_batch(params)
        writer.done_writing()
        answer = reader.read()
        writer.close()
        return answer.to_pybytes()

    answer, record = one(flight_server, bind, "ok", "bind", "DoPut")
    bound = M.parse("DoPutPreparedStatementResult", answer).prepared_statement_handle
    info, _ = one(flight_server, lambda: client.get_flight_info(
        command("CommandPreparedStatementQuery", prepared_statement_handle=bound), options), "ok", "describe",
        "GetFlightInfo")
    table, record = one(flight_server, lambda: client.do_get(info.endpoints[0].ticket, options).read_all(), "ok",
                        "sql", "DoGet")
    assert table.column("n")[0].as_py() > 0 and record.extra["params"] == 1
    close = pack(M.new("ActionClosePreparedStatementRequest", prepared_statement_handle=bound))
    one(flight_server, lambda: list(client.do_action(flight.Action("ClosePreparedStatement", close), options)),
        "ok", "close", "DoAction:ClosePreparedStatement")
    refused, _ = one(flight_server, lambda: list(client.do_action(
        flight.Action("CreatePreparedStatement", pack(M.new("ActionCreatePreparedStatementRequest",
                                                            query="SELECT ssn FROM patients"))), options)),
        "denied", "prepare", "DoAction:CreatePreparedStatement")
    assert "withheld" in str(refused)


def test_other_actions_and_listings(flight_server) -> None:
    client, options = flight_server.client(), flight_server.options()
    actions, _ = one(flight_server, lambda: client.list_actions(options), "ok", "catalog", "ListActions")
    assert {a.type for a in actions} >= {"CreatePreparedStatement", "SetSessionOptions"}
    refused, _ = one(flight_server, lambda: list(client.list_flights(options=options)), "denied", "catalog",
                     "ListFlights")
    assert "not supported" in str(refused)
    refused, _ = one(flight_server, lambda: list(client.do_action(flight.Action("BeginTransaction", b""), options)),
                     "denied", "session", "DoAction:unknown")  # 501: refused by design
    assert "not supported" in str(refused)


def test_session_options_need_a_session_and_an_entitled_purpose(flight_server) -> None:
    client = flight_server.client()
    request = M.new("SetSessionOptionsRequest")
    request.session_options["catalog"].string_value = "analytics"
    action = flight.Action("SetSessionOptions", request.SerializeToString())
    refused, _ = one(flight_server, lambda: list(client.do_action(action, flight_server.options())), "denied",
                     "session", "DoAction:SetSessionOptions")
    assert "need a session" in str(refused)
    header = client.authenticate_basic_token("bob", flight_server.world.keys["bob"])
    session = flight.FlightCallOptions(headers=[header])
    result, _ = one(flight_server, lambda: list(client.do_action(action, session)), "denied", "session",
                    "DoAction:SetSessionOptions")
    assert isinstance(result, flight.FlightUnauthorizedError)  # bob may not use analytics
    request.session_options["catalog"].string_value = "research"
    ok = flight.Action("SetSessionOptions", request.SerializeToString())
    results, _ = one(flight_server, lambda: list(client.do_action(ok, session)), "ok", "session",
                     "DoAction:SetSessionOptions")
    assert not M.parse("SetSessionOptionsResult", results[0].body.to_pybytes()).errors
    table = client.do_get(client.get_flight_info(statement("SELECT count(*) AS n FROM patients"), session)
                          .endpoints[0].ticket, session).read_all()
    assert table.column("n")[0].as_py() > 0  # the session's catalog is the purpose
    one(flight_server, lambda: list(client.do_action(flight.Action("CloseSession", b""), session)), "ok", "session",
        "DoAction:CloseSession")
    refused, _record = one(flight_server, lambda: client.get_schema(statement("SELECT 1"), session), "denied",
                          "describe", "GetSchema")
    assert "session has ended" in str(refused)  # a closed session's token is dead


def test_basic_credentials_on_every_call_work_too(flight_server) -> None:
    basic = base64.b64encode(f"dave:{flight_server.world.keys['dave']}".encode())
    options = flight.FlightCallOptions(headers=[(b"authorization", b"Basic " + basic), (b"x-purpose", b"treatment")])
    client = flight_server.client()
    info = client.get_flight_info(statement("SELECT count(*) AS n FROM patients"), options)
    assert client.do_get(info.endpoints[0].ticket, options).read_all().column("n")[0].as_py() > 0


def _any_value(data: bytes) -> bytes:
    from google.protobuf import any_pb2

    wrapper = any_pb2.Any()
    wrapper.ParseFromString(data)
    return wrapper.value
