"""Dataset reads, surface by surface: for every demo principal and purpose and both datasets,
the table received through HTTP ``/rows`` (arrow, parquet, csv, jsonl), ``POST /v1/sql``, the
PostgreSQL wire (psycopg), Flight SQL (ADBC), Delta Sharing (the unmodified client: pandas, and
Arrow from its file URLs) and the Python client is the same table — schema and values — after
the type mapping of docs/sharing.md#conformance. A refusal is a refusal everywhere.

The reference is ``/rows`` in Arrow. SQL answers have no row order without ``ORDER BY`` and the
rows surfaces keep scan order, so SQL answers are ordered by the dataset's key before comparing.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import adbc_driver_manager
import delta_sharing
import httpx
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from govern.client import Client
from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import GovernError
from govern.identity.principal import Principal
from govern.sharing.profile import make_profile
from tests.conformance.conftest import NO_RAW, cases
from tests.flight.conftest import HEADER
from tests.gateway import Server
from tests.sharing.conftest import read_arrow

KEYS = {"patients": "patient_id", "encounters": "encounter_id"}
Reader = Callable[[Server, str, str, str, pa.Schema], "pa.Table | None"]


def _rows(server: Server, who: str, purpose: str, dataset: str, fmt: str) -> bytes | None:
    r = httpx.get(f"{server.url}/v1/datasets/{dataset}/rows", params={"format": fmt}, timeout=60,
                  headers={**server.world.auth(who), "X-Purpose": purpose})
    return r.content if r.status_code == 200 else None


def _typed(columns: dict[str, list], schema: pa.Schema) -> pa.Table:
    """Python values laid out in ``schema``: text dates (JSON) parsed as ISO dates."""
    arrays = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_date(f.type):
            values = [dt.date.fromisoformat(v) if isinstance(v, str) else v for v in values]
        arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def rows_arrow(server, who, purpose, dataset, schema):
    body = _rows(server, who, purpose, dataset, "arrow")
    return None if body is None else pa.ipc.open_stream(body).read_all()


def rows_parquet(server, who, purpose, dataset, schema):
    body = _rows(server, who, purpose, dataset, "parquet")
    return None if body is None else pq.read_table(pa.BufferReader(body))


def rows_csv(server, who, purpose, dataset, schema):
    body = _rows(server, who, purpose, dataset, "csv")
    if body is None:
        return None
    options = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False)
    return pacsv.read_csv(io.BytesIO(body), convert_options=options)


def rows_jsonl(server, who, purpose, dataset, schema):
    body = _rows(server, who, purpose, dataset, "jsonl")
    if body is None:
        return None
    records = [json.loads(line) for line in body.splitlines()]
    return _typed({f.name: [r[f.name] for r in records] for f in schema}, schema)


def http_sql(server, who, purpose, dataset, schema):
    r = httpx.post(server.url + "/v1/sql", json={"sql": f"SELECT * FROM {dataset}", "format": "arrow"},
                   timeout=60, headers={**server.world.auth(who), "X-Purpose": purpose})
    return pa.ipc.open_stream(r.content).read_all() if r.status_code == 200 else None


def wire(server, who, purpose, dataset, schema):
    try:
        with psycopg.connect(host="127.0.0.1", port=server.pg_port, user=who, password=server.world.keys[who],
                             dbname=purpose, connect_timeout=10, autocommit=True) as conn:
            cur = conn.execute(f"SELECT * FROM {dataset}")
            names = [c.name for c in cur.description]
            data = cur.fetchall()
    except psycopg.Error:
        return None
    return _typed({n: [row[i] for row in data] for i, n in enumerate(names)}, schema)


def flight(server, who, purpose, dataset, schema):
    import adbc_driver_flightsql.dbapi as flightsql

    try:
        with flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True,
                               db_kwargs={"username": who, "password": server.world.keys[who],
                                          HEADER + "x-purpose": purpose}) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {dataset}")
            return cur.fetch_arrow_table()
    except adbc_driver_manager.Error:
        return None


_PROFILES: dict[tuple[str, str, str], Path | None] = {}


def _profile(server, who, purpose):
    """A profile for ``who`` under ``purpose`` (made in-process, as ``govern sharing profile``
    does: tests/sharing runs the command itself), or None when the purpose is not ``who``'s."""
    key = (server.url, who, purpose)
    if key not in _PROFILES:
        gov = Governor(load_settings(server.world.config))
        principal = Principal(name=who, attributes=dict(gov.state.policy.principals[who].attributes),
                              source="api-key")
        if purpose not in gov.state.decider.purposes(principal):
            _PROFILES[key] = None
        else:
            path = server.world.directory / f"conformance-{who}-{purpose}.share"
            body = make_profile(principal, purpose, server.url + "/delta-sharing", gov.keys, now=time.time(), ttl=3600)
            path.write_text(json.dumps(body))
            _PROFILES[key] = path
    return _PROFILES[key]


def sharing_pandas(server, who, purpose, dataset, schema):
    profile = _profile(server, who, purpose)
    if profile is None:
        return None
    df = delta_sharing.load_as_pandas(f"{profile}#{purpose}.default.{dataset}")
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def sharing_arrow(server, who, purpose, dataset, schema):
    profile = _profile(server, who, purpose)
    if profile is None:
        return None
    from delta_sharing.protocol import DeltaSharingProfile, Table
    from delta_sharing.rest_client import DataSharingRestClient

    rest = DataSharingRestClient(DeltaSharingProfile.read_from_file(str(profile)))
    answer = rest.list_files_in_table(Table(name=dataset, share=purpose, schema="default"))
    return pa.concat_tables([read_arrow(f.url) for f in answer.add_files])


def python_client(server, who, purpose, dataset, schema):
    try:
        with Client(server.url, token=server.world.keys[who], purpose=purpose) as c:
            return c.read(dataset)
    except GovernError:
        return None


# surface -> (reader, exact: same Arrow types without a cast, ordered: keeps scan order)
SURFACES: dict[str, tuple[Reader, bool, bool]] = {
    "rows-parquet": (rows_parquet, True, True),
    "rows-csv": (rows_csv, False, True),
    "rows-jsonl": (rows_jsonl, False, True),
    "sql-http": (http_sql, False, False),
    "pg-wire": (wire, False, False),
    "flight-sql": (flight, False, False),
    "delta-sharing-pandas": (sharing_pandas, False, True),
    "delta-sharing-arrow": (sharing_arrow, True, True),
    "python-client": (python_client, True, True),
}


def test_every_surface_delivers_the_same_table(served, demo_world, leaks) -> None:
    compared = refused = 0
    spent: dict[str, float] = {}
    for who, purpose in cases(demo_world):
        for dataset, key in KEYS.items():
            reference = rows_arrow(served, who, purpose, dataset, None)
            if reference is not None and (who, purpose) in NO_RAW:  # every surface equals it, below
                leaks.assert_none(str(reference.to_pylist()))
            for surface, (read, exact, ordered) in SURFACES.items():
                start = time.perf_counter()
                got = read(served, who, purpose, dataset, reference.schema if reference is not None else None)
                spent[surface] = spent.get(surface, 0.0) + time.perf_counter() - start
                if reference is None:
                    assert got is None, (surface, who, purpose, dataset)
                    refused += 1
                    continue
                assert got is not None, (surface, who, purpose, dataset)
                got = got.replace_schema_metadata(None)
                want = reference.replace_schema_metadata(None)
                if exact:
                    assert got.schema.equals(want.schema), (surface, got.schema, want.schema)
                else:
                    assert got.schema.names == want.schema.names, (surface, who, dataset)
                    got = got.cast(want.schema)
                if not ordered:
                    got, want = got.sort_by(key), want.sort_by(key)
                assert got.equals(want), (surface, who, purpose, dataset)
                compared += 1
    assert compared >= 10 * len(SURFACES) and refused == 2 * len(SURFACES)
    print("seconds per surface:", {k: round(v, 1) for k, v in spent.items()})
