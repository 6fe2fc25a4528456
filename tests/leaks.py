"""A leak detector built from the *raw* demo data: every real name, e-mail, SSN, phone number
and exact birth date. Tests of every surface search what a principal received for these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq


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
