"""The unmodified ADBC Flight SQL driver against govern: connect, query, parameters, metadata.

Every call here goes through the real gRPC server and the real SQL workers."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pytest

import govern
from govern.flight import metadata
from govern.policy.model import local_principal


def test_query_and_fetch_arrow_table(flight_server) -> None:
    with flight_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT region, count(*) AS n FROM patients GROUP BY region ORDER BY region")
        table = cur.fetch_arrow_table()
    assert table.schema.names == ["region", "n"] and table.schema.field("n").type == pa.int64()
    assert table.column("region").to_pylist() == ["EU"]  # alice's row filter: her region only
    assert table.column("n")[0].as_py() > 0


def test_parameters_are_bound_with_their_types(flight_server) -> None:
    with flight_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM patients WHERE region = ? AND charges > ?", ("EU", 100.0))
        bound = cur.fetch_arrow_table().column("n")[0].as_py()
        cur.execute("SELECT count(*) AS n FROM patients WHERE region = 'EU' AND charges > 100.0")
        literal = cur.fetch_arrow_table().column("n")[0].as_py()
    assert bound == literal > 0


def test_a_large_result_streams_in_batches(flight_server) -> None:
    with flight_server.connect("bob", "model-training") as conn, conn.cursor() as cur:
        cur.execute("SELECT e.*, range AS k FROM encounters e, range(3)")
        reader = cur.fetch_record_batch()
        batches = list(reader)
    rows = sum(b.num_rows for b in batches)
    assert rows > 0 and len(batches) >= 1
    assert batches[0].schema.names[-1] == "k"


def test_withheld_columns_are_refused_with_the_reason(flight_server) -> None:
    with flight_server.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as raised:
            cur.execute("SELECT ssn FROM patients")
    text = str(raised.value)
    assert "column 'ssn' does not exist (unknown, or withheld under purpose 'analytics')" in text
    assert "42703" in text and "Traceback" not in text and ".py" not in text


def test_a_purpose_is_required_and_must_be_entitled(flight_server) -> None:
    with flight_server.connect(purpose=None) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="purpose-required"):
            cur.execute("SELECT 1 AS one")
    with pytest.raises(adbc_driver_manager.Error, match="may not act under purpose 'research'") as raised:
        flight_server.connect(purpose="research")  # the header is checked at the Handshake already
    assert "PermissionDenied" in str(raised.value) and "Traceback" not in str(raised.value)


def test_the_catalog_is_the_purpose(flight_server) -> None:
    """``adbc.connection.catalog`` (a session option) declares the purpose, no header needed."""
    with flight_server.connect("bob", None, **{"adbc.connection.catalog": "model-training"}) as conn:
        assert conn.adbc_current_catalog == "model-training"
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM encounters")
            assert cur.fetch_arrow_table().column("n")[0].as_py() > 0
        with pytest.raises(adbc_driver_manager.Error, match="may not act under purpose 'analytics'"):
            conn.adbc_current_catalog = "analytics"


def test_a_wrong_key_is_refused_at_connect(flight_server) -> None:
    with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED"):
        flight_server.connect(key=flight_server.world.keys["bob"])


def test_get_info_says_who_answers(flight_server) -> None:
    with flight_server.connect() as conn:
        info = conn.adbc_get_info()
    assert info["vendor_name"] == "govern" and info["vendor_arrow_version"] == pa.__version__
    assert info["vendor_version"] == govern.__version__


def test_get_objects_lists_purposes_tables_and_masked_columns(flight_server) -> None:
    with flight_server.connect("bob", None) as conn:
        objects = conn.adbc_get_objects().read_all().to_pylist()
    gov = flight_server.gw.governor
    bob = local_principal(gov.state.policy, "bob")
    assert [c["catalog_name"] for c in objects] == gov.state.decider.purposes(bob)
    by_purpose = {c["catalog_name"]: c for c in objects}
    schema = by_purpose["model-training"]["catalog_db_schemas"][0]
    assert schema["db_schema_name"] == "public"
    tables = {t["table_name"]: t for t in schema["db_schema_tables"]}
    expected = flight_server.gw.sql_service.tables(bob, "model-training", gov.state.policy)
    assert set(tables) == set(expected)
    for name, table in tables.items():
        assert [c["column_name"] for c in table["table_columns"]] == expected[name].names


def test_table_schema_and_types(flight_server) -> None:
    with flight_server.connect() as conn:
        schema = conn.adbc_get_table_schema("patients")
        in_catalog = conn.adbc_get_table_schema("patients", catalog_filter="analytics")
        types = conn.adbc_get_table_types()
    gov = flight_server.gw.governor
    alice = local_principal(gov.state.policy, "alice")
    assert schema == in_catalog == flight_server.gw.sql_service.tables(alice, "analytics", gov.state.policy)["patients"]
    assert "ssn" not in schema.names  # withheld from alice under analytics
    assert types == ["TABLE"]


def test_dp_sql_is_released_through_the_budget(flight_server) -> None:
    with flight_server.connect("bob", "research") as conn, conn.cursor() as cur:
        cur.execute("/*+ dp epsilon=0.5 */ SELECT region, count(*) AS n FROM patients GROUP BY region")
        table = cur.fetch_arrow_table()
    assert table.schema.names == ["region", "n"] and table.num_rows >= 1
    last = [r for r in flight_server.records() if r.action == "query_dp" and r.extra.get("route") == "DoGet"][-1]
    assert last.outcome == "ok" and last.extra["epsilon_spent"] == 0.5


def test_the_sql_info_schema_is_the_protocols() -> None:
    """The dense union of GetSqlInfo exactly as FlightSql.proto and the reference server define
    it (member names, type codes 0..5, non-nullable children): JDBC rejects anything else."""
    union = pa.dense_union([
        pa.field("string_value", pa.utf8(), False), pa.field("bool_value", pa.bool_(), False),
        pa.field("bigint_value", pa.int64(), False), pa.field("int32_bitmask", pa.int32(), False),
        pa.field("string_list", pa.list_(pa.utf8()), False),
        pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), False)])
    assert metadata.SQL_INFO == pa.schema([pa.field("info_name", pa.uint32(), False), pa.field("value", union, False)])
    assert list(union.type_codes) == [0, 1, 2, 3, 4, 5]
    table = metadata.sql_info_table(metadata.server_info(version="1", arrow_version="2", statement_timeout_ms=3,
                                                         max_statement_length=4))
    table.validate(full=True)
    assert table.schema == metadata.SQL_INFO
    values = dict(zip(table.column("info_name").to_pylist(), table.column("value").to_pylist(), strict=True))
    assert values[metadata.SqlInfo.SERVER_NAME] == "govern" and values[metadata.SqlInfo.SERVER_READ_ONLY] is True
    assert values[metadata.SqlInfo.SERVER_STATEMENT_TIMEOUT] == 3 and values[metadata.SqlInfo.MAX_STATEMENT_LENGTH] == 4
    assert values[metadata.SqlInfo.SUPPORTS_CONVERT] == [(0, [6, 19]), (7, [0, 6, 19]), (6, [19])]
    only = metadata.sql_info_table({0: "govern", 3: True}, [3, 999, 0])
    assert only.column("info_name").to_pylist() == [3, 0]  # in the order asked; unknown ids left out


@pytest.mark.parametrize("pattern,matches,misses", [
    ("pat%", ["patients"], ["encounters"]), ("%ien_s", ["patients"], ["patientss"]),
    ("p\\_x", ["p_x"], ["pax"]), (None, ["anything"], []), ("", [""], ["x"])])
def test_like_patterns(pattern, matches, misses) -> None:
    regex = metadata.like(pattern)
    for name in matches:
        assert regex is None or regex.match(name)
    for name in misses:
        assert regex is not None and not regex.match(name)
