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

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["MAX_POOL", "IdentifierPool", "make_pool", "draw"]

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


def make_pool(column: str, sdtype: str, arrow_type: pa.DataType, real: Iterable[pa.Array], rows: int,
              seed: int, locales: list[str] | None = None) -> IdentifierPool:
    """Build the pool for one generated column from a stream of its real values (read once)."""
    chunks = list(real)
    total = sum(len(c) for c in chunks)
    nulls = sum(c.null_count for c in chunks)
    null_fraction = (nulls / total) if total else 0.0
    if pa.types.is_integer(arrow_type):
        return _integer_pool(column, arrow_type, chunks, null_fraction)
    size = max(MIN_POOL, min(MAX_POOL, rows))
    candidates = _fake_values(sdtype, size, seed, locales or ["en_US"])
    pool = pa.array(candidates, pa.string())
    seen = np.zeros(len(pool), dtype=bool)
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary
        text = chunk.cast(pa.string())
        seen |= pc.is_in(pool, value_set=pc.unique(text).drop_null()).to_numpy(zero_copy_only=False)
    kept = [v for v, s in zip(candidates, seen.tolist(), strict=True) if not s]
    if not kept:
        raise ValueError(f"could not make fake values for column '{column}' that differ from the real ones")
    return IdentifierPool(column, sdtype, str(arrow_type), null_fraction, values=kept)


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


def _integer_pool(column: str, arrow_type: pa.DataType, chunks: list[pa.Array],
                  null_fraction: float) -> IdentifierPool:
    lo_t, hi_t = _bounds(arrow_type)
    lo = min((pc.min(c).as_py() for c in chunks if len(c) - c.null_count), default=None)
    hi = max((pc.max(c).as_py() for c in chunks if len(c) - c.null_count), default=None)
    lo = 0 if lo is None else lo
    hi = -1 if hi is None else hi
    if hi_t - hi >= 2**20:  # room above every real value
        low = hi + 1
        high = min(hi_t + 1, low + _INT_SPAN)
    elif lo - lo_t >= 2**20:  # room below
        high = lo
        low = max(lo_t, high - _INT_SPAN)
    else:
        raise ValueError(f"integer column '{column}' leaves no room for identifiers outside its real values")
    return IdentifierPool(column, "id", str(arrow_type), null_fraction, low=int(low), high=int(high))


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
        raise ValueError(f"Faker has no '{sdtype}' generator; use a Faker function name or 'id'")
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
