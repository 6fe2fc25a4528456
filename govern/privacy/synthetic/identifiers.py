"""Generated identifiers: values that look like the real ones and are none of them.

A direct identifier is never learned. At fit time govern makes, for each generated column, a
pool of fake values with Faker (the generator SDV uses for its PII sdtypes: ``email``,
``name``, ``ssn``, ``postcode``…) seeded from a **secret** drawn for that fit, and stores the
pool with the model, together with the column's null fraction. Integer identifiers get a window
of ``2^40`` integers placed at a secret random offset in the type's range, drawn without repeats.
Sampling then only draws from the pool or window with the request's seeded generator: fast and
reproducible for one model.

The generator never looks at the real values (issue 18). Removing real values from the pool —
what this module once did, to guarantee no real value comes out — made the pool *minus* a large
sample spell out exactly the real values that Faker happened to produce, and the pool could be
regenerated from the model key shown in every report. Now the pool is a function of the secret
seed alone; the only thing read from the real column is how many values are null. A synthetic
identifier equals a real one only by chance: for a text column, about (distinct real values) /
(size of Faker's space for that sdtype) — ~2 % for 2,000 five-digit zips, far less for names,
e-mails and SSNs; for an integer column, (real values inside the window) / 2^40. Measured in
``tests/privacy/synthetic/test_pools.py``.

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
        """For reports: how the column is made, without the pool or the window itself."""
        how = ("distinct integers from a secret window of 2^40 values, placed independently of the real ones"
               if self.low is not None
               else f"{len(self.values)} fake '{self.sdtype}' values (Faker, secret seed), made without looking "
                    "at the real values: one equals a real value only by chance")
        return {"column": self.column, "sdtype": self.sdtype, "generated": how, "null_fraction": self.null_fraction}


class PoolBuilder:
    """Builds the pool of one generated column: values from ``seed`` alone; of the real column,
    streamed once, only the null count is kept (the values are never looked at)."""

    def __init__(self, column: str, sdtype: str, arrow_type: pa.DataType, rows: int, seed: int,
                 locales: list[str] | None = None) -> None:
        self.column, self.sdtype, self.arrow_type = column, sdtype, arrow_type
        self._seed = seed
        self._total = self._nulls = 0
        self._candidates: list[str] = []
        if not pa.types.is_integer(arrow_type):
            size = max(MIN_POOL, min(MAX_POOL, rows))
            self._candidates = _fake_values(sdtype, size, seed, locales or ["en_US"])

    def update(self, chunk: pa.Array | pa.ChunkedArray) -> None:
        """Count rows and nulls of one batch of the real column (nothing else is read)."""
        self._total += len(chunk)
        self._nulls += chunk.null_count

    def result(self) -> IdentifierPool:
        null_fraction = (self._nulls / self._total) if self._total else 0.0
        if pa.types.is_integer(self.arrow_type):
            low, high = _integer_window(self.column, self.arrow_type, self._seed)
            return IdentifierPool(self.column, "id", str(self.arrow_type), null_fraction, low=low, high=high)
        if not self._candidates:
            raise SyntheticError(f"could not make fake values for column '{self.column}'")
        return IdentifierPool(self.column, self.sdtype, str(self.arrow_type), null_fraction,
                              values=list(self._candidates))


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


def _integer_window(column: str, arrow_type: pa.DataType, seed: int) -> tuple[int, int]:
    """A window of ``_INT_SPAN`` integers at an offset drawn from ``seed`` in the type's
    non-negative range (all of it, for types narrower than the span): no real value is read."""
    lo_t, hi_t = _bounds(arrow_type)
    lo_t = max(lo_t, 0)
    room = hi_t + 1 - lo_t
    if room <= _INT_SPAN:
        if room < 2**16:
            raise SyntheticError(f"integer column '{column}' ({arrow_type}) is too narrow for generated identifiers")
        return int(lo_t), int(hi_t + 1)
    offset = int(np.random.default_rng(seed).integers(0, room - _INT_SPAN))
    return int(lo_t + offset), int(lo_t + offset + _INT_SPAN)


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
