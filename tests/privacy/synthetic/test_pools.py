"""Generated identifiers reveal nothing by their absence (issue 18).

The attack: the pool of fake values of a generated column was made by Faker seeded from the
model key — which every report and header shows — minus every value that occurs in the real
column. Regenerating the pool from the key and removing everything seen in a large sample leaves
exactly the real values that happened to be in Faker's stream: real zips, names, SSNs, recovered
with certainty. Now pools come from a secret seed and never look at the real values, so what is
"missing" is no better a guess at a real value than any Faker value: collisions at chance level.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from govern.privacy.synthetic.identifiers import MAX_POOL, MIN_POOL, PoolBuilder
from tests.gateway import make_client
from tests.privacy.synthetic.conftest import (
    GENERATED,
    arrow,
    headers,
    real_patients,
    report_of,
    unmask_everything_for_bob,
)

faker = pytest.importorskip("faker")  # comes with SDV (the synthetic extra)

URL = "/v1/datasets/patients/synthetic"


def faker_stream(sdtype: str, size: int, seed: int) -> list[str]:
    """The values Faker gives for ``seed``: what an attacker regenerates from a known seed."""
    fake = faker.Faker(["en_US"])
    fake.seed_instance(seed)
    fn = getattr(fake, sdtype)
    out: list[str] = []
    for _ in range(size * 3):
        v = str(fn())
        if v not in out:
            out.append(v)
        if len(out) == size:
            break
    return out


def test_the_pool_minus_sample_attack_finds_no_more_real_values_than_chance(world) -> None:
    unmask_everything_for_bob(world)
    real = real_patients(world)
    real_zips = set(real.column("zip").to_pylist())
    with make_client(world) as client:
        table = arrow(client.post(URL, headers=headers(world), json={"rows": 40_000, "seed": 5}))
    key = report_of(table)["model"]["key"]
    sampled = set(table.column("zip").to_pylist())
    size = max(MIN_POOL, min(MAX_POOL, real.num_rows))
    # the old recipe: seed = int(key[:8], 16) + the column's position; the attacker keeps the
    # stream that best matches what she sampled, and takes what never came out as real
    streams = [set(faker_stream("postcode", size, int(key[:8], 16) + i)) for i in range(len(GENERATED))]
    best = max(streams, key=lambda s: len(s & sampled))
    missing = best - sampled
    guessed = missing & real_zips
    # chance: how often any Faker postcode is a real zip (a stream the attacker could not tie to the model)
    baseline = faker_stream("postcode", size, 987_654_321)
    chance = len(set(baseline) & real_zips) / len(baseline)
    precision = len(guessed) / max(len(missing), 1)
    assert precision <= 3 * chance + 0.01, (len(guessed), len(missing), precision, chance)


def test_pools_never_look_at_the_real_values() -> None:
    """Two columns with different real values give the same pool for the same seed: the pool is
    a function of the seed alone (and the null fraction, a count, of the nulls alone)."""
    pools = []
    for values in (["11111", "22222", None], ["33333", "44444", None]):
        b = PoolBuilder("zip", "postcode", pa.string(), 1_000, seed=42)
        b.update(pa.chunked_array([pa.array(values)]))
        pools.append(b.result())
    assert pools[0].values == pools[1].values and pools[0].null_fraction == pools[1].null_fraction == 1 / 3
    ids = []
    for values in ([1, 2, 3], [10**12, 5, 7]):
        b = PoolBuilder("patient_id", "id", pa.int64(), 1_000, seed=42)
        b.update(pa.chunked_array([pa.array(values, pa.int64())]))
        ids.append(b.result())
    assert (ids[0].low, ids[0].high) == (ids[1].low, ids[1].high)


def test_synthetic_identifiers_collide_with_real_ones_at_chance_level_only(world) -> None:
    unmask_everything_for_bob(world)
    real = real_patients(world)
    with make_client(world) as client:
        table = arrow(client.post(URL, headers=headers(world), json={"rows": 5_000, "seed": 9}))
    # 5-digit zips: the chance a Faker postcode is one of the ~2,000 real zips is about 2,000 / 90,000
    distinct_real = pc.count_distinct(real.column("zip")).as_py()
    rate = pc.mean(pc.is_in(table.column("zip"), value_set=real.column("zip").combine_chunks()).cast(pa.int8()))
    assert rate.as_py() <= 3 * distinct_real / 90_000 + 0.01
    # integer ids come from a secret window of 2^40 values placed at random in int64: no collision
    assert pc.sum(pc.is_in(table.column("patient_id"), value_set=real.column("patient_id").combine_chunks())
                  .cast(pa.int8())).as_py() == 0
