"""No free oracle in DP releases (issue 18): errors never depend on the data.

A NaN in a float column made ``sum`` and ``mean`` fail with a 500 that charged nothing, so
``patient_id = X AND region = 'EU'`` (500) against ``… 'US'`` (200) told, for free, where one
person lives. Malformed privacy parameters (``epsilon=1-2`` in a DP SQL hint) and degenerate
bounds (``[0, 1e-300]``) gave 500s too. Non-finite values are now handled inside the mechanism
(NaN is missing, ±∞ is clamped to the bounds) and parameters are refused from the request alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.gateway import World, make_client

BOB = {"X-Purpose": "research"}


@pytest.fixture(scope="module")
def nan_world(demo_world, tmp_path_factory) -> World:
    """The demo world with a NaN, +inf and -inf in the charges of three EU patients."""
    d = tmp_path_factory.mktemp("dp-oracle") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "ledger.db*"))
    path = d / "data" / "patients.parquet"
    table = pq.read_table(path)
    eu = [i for i, r in enumerate(table.column("region").to_pylist()) if r == "EU"][:3]
    charges = table.column("charges").to_pylist()
    for i, v in zip(eu, (float("nan"), float("inf"), float("-inf")), strict=True):
        charges[i] = v
    table = table.set_column(table.schema.get_field_index("charges"), "charges", pa.array(charges, pa.float64()))
    pq.write_table(table, path)
    assert pc.sum(pc.is_nan(table.column("charges"))).as_py() == 1
    return World(d, json.loads((d / "keys.json").read_text()))


@pytest.fixture(scope="module")
def dp_client(nan_world: World) -> Iterator:
    with make_client(nan_world) as c:
        yield c


def odd_patients(world: World) -> list[int]:
    table = pq.read_table(world.directory / "data" / "patients.parquet", columns=["patient_id", "charges"])
    values = table.column("charges").to_pylist()
    return [pid for pid, v in zip(table.column("patient_id").to_pylist(), values, strict=True)
            if v is not None and (v != v or v in (float("inf"), float("-inf")))]


def spent(client) -> float:
    return sum(c["epsilon"] for c in client.app.state.gateway.ledger.charges(principal="bob", limit=10_000))


AGGREGATES = [
    {"function": "sum", "column": "charges"},
    {"function": "mean", "column": "charges"},
    {"function": "count", "column": "charges"},
    {"function": "quantile", "column": "charges", "q": 0.5},
    {"function": "histogram", "column": "charges", "bins": [0, 1000, 50000]},
]


@pytest.mark.parametrize("aggregate", AGGREGATES, ids=lambda a: a["function"])
def test_a_non_finite_value_answers_like_any_other(dp_client, nan_world: World, aggregate) -> None:
    answers = []
    for pid in odd_patients(nan_world):
        for region in ("EU", "US"):  # the person lives in EU: the two questions differ only in that
            before = spent(dp_client)
            r = dp_client.post("/v1/datasets/patients/dp", headers={**nan_world.auth("bob"), **BOB},
                               json={"aggregates": [aggregate], "epsilon": 0.01,
                                     "filter": f"patient_id = {pid} AND region = '{region}'"})
            answers.append((r.status_code, spent(dp_client) - before))
    assert answers == [(200, pytest.approx(0.01))] * len(answers), answers


def test_non_finite_values_are_missing_or_clamped() -> None:
    """NaN counts as missing (like NULL); ±inf is clamped to the bounds. Engine level (no budget)."""
    from tests.privacy.dp.conftest import run

    table = pa.table({"pid": [1, 2, 3, 4], "x": [float("nan"), float("inf"), float("-inf"), 5.0]})
    result = run(table, {"aggregates": [{"function": "count", "column": "x"}, {"function": "sum", "column": "x"},
                                        {"function": "mean", "column": "x"}], "epsilon": 90.0},
                 bounds={"x": (0.0, 10.0)})
    row = result.rows[0]
    # per statistic epsilon 30: count scale 1/30, sum scale 10/30; 15 scales is p < 1e-6
    assert abs(row["count_x"]["value"] - 3) <= 0.5  # +inf, -inf and 5 count; NaN does not
    assert abs(row["sum_x"]["value"] - 15.0) <= 5.0  # +inf → 10, -inf → 0, 5
    assert 0 <= row["mean_x"]["value"] <= 10


@pytest.mark.parametrize(("sql", "bounds"), [
    ("/*+ dp epsilon=1-2 */ SELECT count(*) FROM patients", None),
    ("/*+ dp epsilon=0.1 contributions=1e400 */ SELECT count(*) FROM patients", None),
    ("/*+ dp epsilon=nan */ SELECT count(*) FROM patients", None),
    ("/*+ dp epsilon=0.1 delta=-- */ SELECT count(*) FROM patients", None),
])
def test_malformed_privacy_parameters_are_a_400_from_the_request_alone(dp_client, nan_world: World, sql,
                                                                       bounds) -> None:
    r = dp_client.post("/v1/sql", headers={**nan_world.auth("bob"), **BOB}, json={"sql": sql})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("bounds", [[0, 1e-300], [-1e-300, 1e-300], [0, 5e-324]])
@pytest.mark.parametrize("function", ["sum", "mean"])
def test_degenerate_bounds_release_or_refuse_without_a_500(dp_client, nan_world: World, bounds, function) -> None:
    r = dp_client.post("/v1/datasets/patients/dp", headers={**nan_world.auth("bob"), **BOB},
                       json={"aggregates": [{"function": function, "column": "charges", "bounds": bounds}],
                             "epsilon": 0.01})
    assert r.status_code in (200, 400), r.text
    sql = f"/*+ dp epsilon=0.01 */ SELECT {function.replace('mean', 'avg')}(charges) FROM patients"
    r = dp_client.post("/v1/sql", headers={**nan_world.auth("bob"), **BOB},
                       json={"sql": sql, "bounds": {"charges": bounds}})
    assert r.status_code in (200, 400), r.text


def test_a_nan_key_of_a_public_group_column_is_the_null_group() -> None:
    """NaN in a ``public_values`` float column would become a NaN group key that no surface can
    send (JSON has no NaN): a refusal only when the data holds a NaN. It is the NULL group."""
    from tests.privacy.dp.conftest import run

    table = pa.table({"pid": [1, 2, 3, 4], "g": [1.0, 2.0, float("nan"), None], "x": [1.0, 2.0, 3.0, 4.0]})
    result = run(table, {"aggregates": [{"function": "count"}], "group_by": ["g"], "epsilon": 1.0}, public=("g",))
    keys = [r["g"] for r in result.rows]
    assert sorted(keys, key=lambda k: (k is None, k)) == [1.0, 2.0, None]
    json.dumps(result.rows, allow_nan=False)


def test_a_failure_while_reading_the_data_is_charged_like_an_answer(demo_world, tmp_path) -> None:
    """Whatever fails once the data is being read (here: a corrupt data page, the footer intact)
    is an answer that may depend on the data, so it costs the release's epsilon: no failure of
    the compute step is free."""
    d = tmp_path / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "ledger.db*"))
    path = d / "data" / "patients.parquet"
    meta = pq.ParquetFile(path).metadata
    column = meta.schema.names.index("charges")
    start = meta.row_group(0).column(column).data_page_offset
    raw = bytearray(path.read_bytes())
    raw[start + 16:start + 400] = b"\xff" * 384  # scribble over the charges page
    path.write_bytes(bytes(raw))
    world = World(d, json.loads((d / "keys.json").read_text()))
    with make_client(world) as c:
        r = c.post("/v1/datasets/patients/dp", headers={**world.auth("bob"), **BOB},
                   json={"aggregates": [{"function": "sum", "column": "charges"}], "epsilon": 0.25})
        assert r.status_code >= 500, r.text
        assert [ch["epsilon"] for ch in c.app.state.gateway.ledger.charges(principal="bob")] == [0.25]
