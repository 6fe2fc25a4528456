"""SQLAlchemy 2 (sync, psycopg2 and psycopg 3) and pandas against a real ``govern serve``:
reflection through the emulated catalog (qualified column references, ``regclass`` casts,
``json_build_object``…) and reading tables and queries."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.pgwire.clients.conftest import dsn


@pytest.fixture(scope="module", params=["postgresql+psycopg2", "postgresql+psycopg"])
def engine(request, pg):
    e = sa.create_engine(dsn(pg, scheme=request.param))
    yield e
    e.dispose()


def test_inspect_lists_the_tables_and_the_visible_columns(engine) -> None:
    inspector = sa.inspect(engine)
    assert inspector.get_table_names() == ["encounters", "patients"]
    columns = {c["name"]: c for c in inspector.get_columns("patients")}
    assert "ssn" not in columns and "phone" not in columns  # withheld under the purpose
    assert isinstance(columns["birth_date"]["type"], sa.Date)
    assert isinstance(columns["charges"]["type"], sa.Float)
    assert inspector.get_pk_constraint("patients")["constrained_columns"] == []
    assert inspector.get_foreign_keys("patients") == []


def test_pandas_reads_a_table_and_a_query(engine) -> None:
    frame = pd.read_sql_table("patients", engine)
    assert len(frame) > 0 and "ssn" not in frame.columns
    assert frame["patient_id"].str.startswith("k1:").all()  # tokenized, never the raw identifier
    counts = pd.read_sql("SELECT region, count(*) AS n FROM patients GROUP BY region", engine)
    assert counts["n"].sum() == len(frame)
    with engine.connect() as con:
        n = con.execute(sa.text("SELECT count(*) FROM patients WHERE region = :r"),
                        {"r": counts["region"][0]}).scalar()
    assert n == counts["n"][0]
