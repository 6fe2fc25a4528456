"""``govern serve`` starts the Flight SQL server on ``flight_port`` next to HTTP and the wire."""

from __future__ import annotations

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from tests.flight.conftest import HEADER
from tests.gateway import start_server, stop_server


@pytest.mark.slow
def test_govern_serve_answers_flight_sql_and_flight_port_0_disables_it(world) -> None:
    server = start_server(world)
    try:
        assert server.flight_port
        assert f"govern Flight SQL on grpc://127.0.0.1:{server.flight_port}" in server.log.read_text()
        with flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}",
                               db_kwargs={"username": "dave", "password": world.keys["dave"],
                                          HEADER + "x-purpose": "treatment"}, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) AS n FROM patients")
                assert cur.fetch_arrow_table().column("n")[0].as_py() > 0
    finally:
        stop_server(server)
    off = start_server(world, "--flight-port", "0")
    try:
        assert off.flight_port is None and "Flight SQL" not in off.log.read_text()
    finally:
        stop_server(off)
