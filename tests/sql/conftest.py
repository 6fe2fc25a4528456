"""SQL fixtures: the demo world (a private copy per test), an engine over it, and a leak detector
built from the *raw* demo data — every real name, e-mail, SSN, phone number and exact birth date."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from govern.access import Governor
from govern.config import load_settings
from govern.identity.principal import Principal, local_principal
from govern.sql import SqlEngine
from tests.server.conftest import World, client, make_client, world  # noqa: F401  (fixtures)

__all__ = ["Leaks", "World", "make_client", "masked_reference", "principal"]


@dataclass(frozen=True)
class Leaks:
    """Raw sensitive values of the demo data that must never reach an analyst."""

    needles: frozenset[str]

    @classmethod
    def from_world(cls, directory: Path) -> Leaks:
        raw = pq.read_table(directory / "data" / "patients.parquet").to_pydict()
        needles = set(raw["name"]) | set(raw["email"]) | set(raw["ssn"]) | set(raw["phone"])
        # Generalized birth dates read YYYY-01-01: a real birth date on 1 January is not a leak.
        needles |= {d.isoformat() for d in raw["birth_date"] if (d.month, d.day) != (1, 1)}
        return cls(frozenset(n for n in needles if n))

    def found_in(self, text: str) -> list[str]:
        return sorted(n for n in self.needles if n in text)

    def assert_none(self, *texts: str) -> None:
        for text in texts:
            hits = self.found_in(text)
            assert not hits, f"raw values leaked: {hits[:5]}"


@pytest.fixture(scope="session")
def leaks(demo_world) -> Leaks:
    return Leaks.from_world(demo_world.directory)


@pytest.fixture
def governor(world) -> Governor:  # noqa: F811 - a per-test governor over the private world
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
