"""Generated identifiers: values that look like the real ones and are none of them.

A direct identifier is never learned. At fit time govern makes, for each generated column, a
pool of fake values with Faker (the generator SDV uses for its PII sdtypes: ``email``,
``name``, ``ssn``, ``postcode``…), removes every value that also occurs in the real column, and
stores the pool with the model, together with the column's null fraction. Integer identifiers
get a range that lies entirely above (or below) every real value instead, and are drawn
without repeats. Sampling then only draws from the pool or range with the request's seeded
generator: fast, reproducible, and a real value cannot come out.

Pools hold up to :data:`MAX_POOL` values, so a synthetic set larger than that repeats text
identifiers (integer identifiers stay unique).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govern.errors import SyntheticError

__all__ = ["MAX_POOL", "IdentifierPool", "PoolBuilder", "draw"]

MAX_POOL = 20_000
MIN_POOL = 1_000
_INT_SPAN = 2**40  # width of the range integer identifiers are drawn from


@dataclass
class IdentifierPool:
    column: str
    sdtype: str
    arrow_type: str
    null_fraction: float
    values: list[str] = field(default_factory=list)  # text identifiers
    low: int | None = None  # integer identifiers: [low, high)
    high: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "sdtype": self.sdtype, "arrow_type": self.arrow_type,
                "null_fraction": self.null_fraction, "values": self.values, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IdentifierPool:
        return cls(d["column"], d["sdtype"], d["arrow_type"], float(d["null_fraction"]), list(d["values"]),
                   d.get("low"), d.get("high"))

    def describe(self) -> dict[str, Any]:
        """For reports: how the column is made, without the pool itself."""
        how = (f"integers drawn from [{self.low}, {self.high})" if self.low is not None
               else f"{len(self.values)} fake '{self.sdtype}' values (Faker), none equal to a real value")
        return {"column": self.column, "sdtype": self.sdtype, "generated": how, "null_fraction": self.null_fraction}


class PoolBuilder:
    """Builds the pool of one generated column from its real values, seen batch by batch (the
    real column is streamed once and never kept)."""

    def __init__(self, column: str, sdtype: str, arrow_type: pa.DataType, rows: int, seed: int,
                 locales: list[str] | None = None) -> None:
        self.column, self.sdtype, self.arrow_type = column, sdtype, arrow_type
        self._total = self._nulls = 0
        self._lo: int | None = None
        self._hi: int | None = None
        self._candidates: list[str] = []
        self._seen = np.zeros(0, dtype=bool)
        if not pa.types.is_integer(arrow_type):
            size = max(MIN_POOL, min(MAX_POOL, rows))
            self._candidates = _fake_values(sdtype, size, seed, locales or ["en_US"])
            self._pool = pa.array(self._candidates, pa.string())
            self._seen = np.zeros(len(self._candidates), dtype=bool)

    def update(self, chunk: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(chunk, pa.ChunkedArray):
            chunk = chunk.combine_chunks()
        self._total += len(chunk)
        self._nulls += chunk.null_count
        if len(chunk) == chunk.null_count:
            return
        if pa.types.is_integer(self.arrow_type):
            lo, hi = pc.min(chunk).as_py(), pc.max(chunk).as_py()
            self._lo = lo if self._lo is None else min(self._lo, lo)
            self._hi = hi if self._hi is None else max(self._hi, hi)
            return
        values = chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk
        found = pc.is_in(self._pool, value_set=pc.unique(values.cast(pa.string())).drop_null())
        self._seen |= found.to_numpy(zero_copy_only=False)

    def result(self) -> IdentifierPool:
        null_fraction = (self._nulls / self._total) if self._total else 0.0
        if pa.types.is_integer(self.arrow_type):
            low, high = _integer_range(self.column, self.arrow_type, self._lo, self._hi)
            return IdentifierPool(self.column, "id", str(self.arrow_type), null_fraction, low=low, high=high)
        kept = [v for v, s in zip(self._candidates, self._seen.tolist(), strict=True) if not s]
        if not kept:
            raise SyntheticError(f"could not make fake values for column '{self.column}' that differ from the real ones")
        return IdentifierPool(self.column, self.sdtype, str(self.arrow_type), null_fraction, values=kept)


def draw(pool: IdentifierPool, n: int, rng: np.random.Generator, arrow_type: pa.DataType) -> pa.Array:
    """``n`` values from ``pool`` (nulls at the learned rate), as ``arrow_type``."""
    nulls = rng.random(n) < pool.null_fraction if pool.null_fraction > 0 else None
    if pool.low is not None and pool.high is not None:
        span = pool.high - pool.low
        picks = rng.choice(span, size=n, replace=False) if n <= span else rng.integers(0, span, n)
        arr = pa.array(picks.astype(np.int64) + pool.low, pa.int64(), mask=nulls)
    else:
        values = pa.array(pool.values, pa.string())
        arr = values.take(pa.array(rng.integers(0, len(values), n)))
        if nulls is not None:
            arr = pc.if_else(pa.array(nulls), pa.scalar(None, pa.string()), arr)
    return arr.cast(arrow_type)


def _integer_range(column: str, arrow_type: pa.DataType, lo: int | None, hi: int | None) -> tuple[int, int]:
    """A range of ``_INT_SPAN`` integers above every real value (or below, if there is no room)."""
    lo_t, hi_t = _bounds(arrow_type)
    lo = 0 if lo is None else lo
    hi = -1 if hi is None else hi
    if hi_t - hi >= 2**20:
        low = hi + 1
        return int(low), int(min(hi_t + 1, low + _INT_SPAN))
    if lo - lo_t >= 2**20:
        return int(max(lo_t, lo - _INT_SPAN)), int(lo)
    raise SyntheticError(f"integer column '{column}' leaves no room for identifiers outside its real values")


def _bounds(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    if pa.types.is_signed_integer(t):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 if bits < 64 else 2**63 - 1  # unsigned 64: keep to int64's range


def _fake_values(sdtype: str, size: int, seed: int, locales: list[str]) -> list[str]:
    import faker  # a dependency of SDV (rdt); only needed when fitting

    fake = faker.Faker(locales)
    fake.seed_instance(seed)
    if sdtype == "id":
        return [f"syn-{v}" for v in _unique_tokens(fake, size)]
    fn = getattr(fake, sdtype, None)
    if fn is None or not callable(fn) or sdtype.startswith("_"):
        raise SyntheticError(f"Faker has no '{sdtype}' generator; use a Faker function name or 'id'")
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < size and tries < size * 3:
        tries += 1
        v = fn()
        s = ", ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _unique_tokens(fake: Any, size: int) -> list[str]:
    seen: set[str] = set()
    while len(seen) < size:
        seen.add(fake.hexify("^^^^^^^^^^^^"))
    return sorted(seen)
