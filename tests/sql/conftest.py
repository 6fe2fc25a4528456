"""SQL fixtures: a governor and an engine over a private copy of the demo world, and the masked
reference answers the engine must reproduce."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.identity.principal import Principal
from govern.policy.model import local_principal
from govern.sql import SqlEngine
from tests.gateway import World, make_client

__all__ = ["World", "make_client", "masked_reference", "principal"]


@pytest.fixture
def governor(world) -> Governor:
    return Governor(load_settings(world.config, watch_policies=False))


@pytest.fixture
def engine(governor: Governor) -> SqlEngine:
    return SqlEngine(governor, governor.settings)


def principal(governor: Governor, name: str) -> Principal:
    return local_principal(governor.state.policy, name)


def masked_reference(governor: Governor, who: str, purpose: str, sql: str) -> pa.Table:
    """What ``sql`` returns in plain DuckDB over the *whole* masked views (the ground truth the
    engine must reproduce: it prunes and pushes down, but must not change answers)."""
    p = principal(governor, who)
    con = duckdb.connect()
    try:
        for name in ("patients", "encounters"):
            con.register(name, governor.read(p, name, purpose).reader.read_all())
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def rows(table: pa.Table) -> list[str]:
    """Rows as sorted JSON lines: order-insensitive, floats to 6 decimals (a parallel sum may
    add in another order)."""

    def value(v: object) -> object:
        return round(v, 6) if isinstance(v, float) else v

    return sorted(json.dumps([value(v) for v in r.values()], default=str) for r in table.to_pylist())
