"""No free oracle, as a property (issue 18): over neighbouring datasets — one person added or
removed, including a person whose values are NaN, ±inf or huge, or who has many rows — every
DP, DP SQL, HE and synthetic route answers with the same status code and, when it refuses, the
same error body. Only noisy values (charged, ε-DP) may differ.

Small worlds (a 40-person dataset ``people``), one in-process gateway per world, shared by all
routes; each pair compares a world with its neighbour.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.gateway import World, make_client

PEOPLE_CATALOG = """
  people:
    location: people.parquet
    format: parquet
    level: internal
    privacy_unit: pid
    description: A small world for the neighbouring-dataset property.
    budget: {epsilon: 1000, delta: 1.0e-3, period: month}
    synthesizer: {type: gaussian_copula}
    columns:
      pid: {tags: [identifier]}
      region: {public_values: true}
      kind: {}
      x: {bounds: [0, 100]}
      y: {bounds: [0, 1]}
"""
PEOPLE_POLICY = """
p, data-scientist, dataset:people, query_dp, research, allow
p, data-scientist, dataset:people, read_encrypted, research, allow
p, data-scientist, dataset:people, read_synthetic, research, allow
p, data-scientist, dataset:people, read, research, allow
"""
BOB = {"X-Purpose": "research"}
TARGET = 999  # the person added to (or removed from) the world


def base_rows() -> dict[str, list[Any]]:
    rng = np.random.default_rng(18)
    pid = [i // 2 if i < 20 else i - 10 for i in range(50)]  # 10 people with two rows, 30 with one
    return {"pid": pid, "region": [["EU", "US"][i % 2] for i in range(50)],
            "kind": [["a", "b", "c"][i % 3] for i in range(50)],
            "x": rng.uniform(0, 100, 50).round(2).tolist(), "y": rng.integers(0, 2, 50).tolist()}


NEIGHBOURS: dict[str, Callable[[dict[str, list[Any]]], dict[str, list[Any]]]] = {
    "plain": lambda d: _add(d, [(TARGET, "EU", "a", 50.0, 1)]),
    "nan": lambda d: _add(d, [(TARGET, "EU", "a", float("nan"), 1)]),
    "inf": lambda d: _add(d, [(TARGET, "EU", "a", float("inf"), 1)]),
    "minus-inf": lambda d: _add(d, [(TARGET, "US", "b", float("-inf"), 0)]),
    "huge": lambda d: _add(d, [(TARGET, "EU", "c", 1e308, 1)]),
    "many-rows": lambda d: _add(d, [(TARGET, "EU", "a", 99.0, 1)] * 30),
    "removed": lambda d: _remove(d, 0),
}


def _add(d: dict[str, list[Any]], rows: list[tuple]) -> dict[str, list[Any]]:
    out = {k: list(v) for k, v in d.items()}
    for row in rows:
        for k, v in zip(out, row, strict=True):
            out[k].append(v)
    return out


def _remove(d: dict[str, list[Any]], pid: int) -> dict[str, list[Any]]:
    keep = [i for i, p in enumerate(d["pid"]) if p != pid]
    return {k: [v[i] for i in keep] for k, v in d.items()}


def make_world(demo_world, directory: Path, data: dict[str, list[Any]]) -> World:
    shutil.copytree(demo_world.directory, directory, ignore=shutil.ignore_patterns("audit.db*", "ledger.db*",
                                                                                 "he_keys", "synthetic"))
    table = pa.table({"pid": pa.array(data["pid"], pa.int64()), "region": data["region"], "kind": data["kind"],
                      "x": pa.array(data["x"], pa.float64()), "y": pa.array(data["y"], pa.int64())})
    pq.write_table(table, directory / "data" / "people.parquet")
    with (directory / "policies" / "catalog.yaml").open("a") as fh:
        fh.write(PEOPLE_CATALOG)
    with (directory / "policies" / "policy.csv").open("a") as fh:
        fh.write(PEOPLE_POLICY)
    return World(directory, json.loads((directory / "keys.json").read_text()))


# -- the requests, each made the same way in every world ------------------------------------------
DP_BODIES = [
    {"aggregates": [{"function": "sum", "column": "x"}, {"function": "mean", "column": "x"},
                    {"function": "count", "column": "x"}, {"function": "count"}], "epsilon": 0.5},
    {"aggregates": [{"function": "quantile", "column": "x", "q": 0.5},
                    {"function": "histogram", "column": "x", "bins": [0, 50, 100]}], "group_by": ["region"],
     "epsilon": 0.5},
    {"aggregates": [{"function": "sum", "column": "x"}, {"function": "mean", "column": "x"}],
     "filter": f"pid = {TARGET} AND region = 'EU'", "epsilon": 0.5},
    {"aggregates": [{"function": "count"}], "group_by": ["kind"], "contributions": 2, "epsilon": 0.5,
     "delta": 1e-6},  # keys that are not public: a noisy threshold
    {"aggregates": [{"function": "sum", "column": "x", "bounds": [0, 1e-300]}], "epsilon": 0.5},
    {"aggregates": [{"function": "mean", "column": "x", "bounds": [0, 1e308]}], "epsilon": 0.5},
    {"aggregates": [{"function": "histogram", "column": "kind"}], "epsilon": 0.5},  # not public: refused
]
SQL = [
    "/*+ dp epsilon=0.5 */ SELECT region, SUM(x), AVG(x), COUNT(*) FROM people GROUP BY region",
    f"/*+ dp epsilon=0.5 */ SELECT AVG(x), MEDIAN(x) FROM people WHERE pid = {TARGET}",
    "/*+ dp epsilon=0.5 delta=1e-6 contributions=3 */ SELECT kind, COUNT(*) FROM people GROUP BY kind",
    "/*+ dp epsilon=1-2 */ SELECT COUNT(*) FROM people",
]
HE = [
    ({"columns": ["x"]}, {"op": "sum", "column": "x"}),
    ({"columns": ["x"], "filter": f"pid = {TARGET}"}, {"op": "mean", "column": "x"}),  # pid is tokenized: 400
    ({"columns": ["x"], "filter": "x > 99 OR x < 0.5"}, {"op": "count"}),  # the odd values, and few rows
    ({"columns": ["x", "y"], "group_by": "region", "groups": ["EU", "US"]}, {"op": "sum", "column": "x",
                                                                             "by_group": True}),
    ({"columns": ["x", "y"]}, {"op": "dot", "columns": ["x", "y"]}),
]


def _outcome(r) -> tuple:  # type: ignore[no-untyped-def]
    """What may not differ between neighbours: the status, and a refusal's body (less its id)."""
    if r.status_code < 300:
        return (r.status_code,)
    body = r.json()
    return (r.status_code, body.get("type"), body.get("title"), body.get("detail"))


def answers(client, world: World) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    h = {**world.auth("bob"), **BOB}
    out: dict[str, tuple] = {}
    for i, body in enumerate(DP_BODIES):
        out[f"dp[{i}]"] = _outcome(client.post("/v1/datasets/people/dp", headers=h, json=body))
    for i, sql in enumerate(SQL):
        out[f"sql[{i}]"] = _outcome(client.post("/v1/sql", headers=h, json={"sql": sql}))
    for i, (view, computation) in enumerate(HE):
        r = client.post("/v1/datasets/people/encrypted", headers=h, json=view)
        out[f"he-view[{i}]"] = _outcome(r)
        if r.status_code != 200:
            continue
        token = json.loads(pa.ipc.open_stream(pa.BufferReader(r.content)).schema.metadata[b"govern.he"])["token"]
        r = client.post("/v1/he/release", headers=h, json={"view_token": token, "computation": computation,
                                                          "epsilon": 0.5})
        out[f"he-release[{i}]"] = _outcome(r)
    out["he-query"] = _outcome(client.post("/v1/datasets/people/encrypted-query", headers=h, json={
        "computation": {"op": "linear_groups", "features": ["x"]}, "context": _client_context(),
        "weights": _weights(), "epsilon": 0.5, "group_by": "region", "groups": ["EU", "US"]}))
    return out


_KEY: list[Any] = []


def _client_key():  # type: ignore[no-untyped-def]
    if not _KEY:
        from govern.client.encrypted import PrivateKey

        _KEY.append(PrivateKey())
    return _KEY[0]


def _client_context() -> str:
    return base64.b64encode(_client_key().public()).decode()


def _weights() -> list[str]:
    return [base64.b64encode(_client_key().encrypt([w, w])).decode() for w in (0.5, 1.0)]


def synthetic_answers(client, world: World) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    """Fit in-process (as ``govern synth fit`` does), then ask for rows and the status."""
    from govern.privacy.synthetic.service import SyntheticService

    gw = client.app.state.gateway
    svc: SyntheticService = gw.synthetic
    out: dict[str, tuple] = {}
    try:
        svc.fit_now(svc.reference("people"))
        out["synthetic-fit"] = ("ok",)
    except Exception as exc:  # the property compares what happened, whatever it was
        out["synthetic-fit"] = (type(exc).__name__, str(exc))
    h = {**world.auth("bob"), **BOB}
    out["synthetic"] = _outcome(client.post("/v1/datasets/people/synthetic", headers=h, json={"rows": 50, "seed": 1}))
    status = client.get("/v1/datasets/people/synthetic/status", headers=h)
    out["synthetic-status"] = (status.status_code, status.json().get("state"))
    return out


@pytest.fixture(scope="module")
def outcomes(demo_world, tmp_path_factory) -> Iterator[dict[str, dict[str, tuple]]]:
    root = tmp_path_factory.mktemp("neighbours")
    base = base_rows()
    worlds = {"base": base, **{name: make(base) for name, make in NEIGHBOURS.items()}}
    synthetic = pytest.importorskip("sdv", reason="synthetic routes need the synthetic extra") is not None
    out: dict[str, dict[str, tuple]] = {}
    for name, data in worlds.items():
        world = make_world(demo_world, root / name, data)
        with make_client(world) as client:
            out[name] = answers(client, world)
            if synthetic and name in ("base", "nan", "huge", "removed"):
                out[name].update(synthetic_answers(client, world))
    yield out


@pytest.mark.parametrize("neighbour", list(NEIGHBOURS))
def test_neighbouring_datasets_get_the_same_status_and_errors_on_every_route(outcomes, neighbour) -> None:
    base, other = outcomes["base"], outcomes[neighbour]
    differ = {route: (base[route], other.get(route)) for route in base if route in other
              and base[route] != other[route]}
    assert not differ, differ
    assert all(a[0] != 500 for a in base.values()), base  # and no route fails on the data


def test_the_routes_exercised_are_all_there(outcomes) -> None:
    routes = {r.split("[")[0] for r in outcomes["base"]}
    assert {"dp", "sql", "he-view", "he-release", "he-query"} <= routes
    assert outcomes["base"]["dp[0]"] == (200,) and outcomes["base"]["he-release[0]"] == (200,)
