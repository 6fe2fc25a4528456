"""No free oracle in encrypted-view releases (issue 18): the padding attack as a regression test.

The attack: a caller who knows 9 rows (here: read through bob's masked view, standing in for
background knowledge) pads her view's filter with them and adds one condition about a chosen
person. The selection then has 10 rows when the condition holds and 9 when it does not. When
the gateway refuses "fewer than he_min_rows rows" exactly, before any charge or rate limit, each
release answers one exact yes/no question about that person, for free. The gateway must answer
both sides alike (same status, same shape), charge both, and count both against the rate limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest

from tests.gateway import World, make_client
from tests.privacy.he.conftest import copy_world

RESEARCH = {"X-Purpose": "research"}
EPSILON = 0.001


@pytest.fixture(scope="module")
def oracle_world(demo_world, tmp_path_factory) -> World:
    return copy_world(demo_world, tmp_path_factory.mktemp("he-oracle") / "world")


@pytest.fixture(scope="module")
def he_client(oracle_world: World) -> Iterator:
    with make_client(oracle_world) as c:
        yield c


def view_token(client, world: World, filter: str) -> str:
    r = client.post("/v1/datasets/patients/encrypted", headers={**world.auth("bob"), **RESEARCH},
                    json={"columns": ["charges"], "filter": filter})
    assert r.status_code == 200, r.text
    schema = pa.ipc.open_stream(pa.BufferReader(r.content)).schema
    return json.loads(schema.metadata[b"govern.he"])["token"]


def release(client, world: World, token: str, computation: dict | None = None):  # type: ignore[no-untyped-def]
    return client.post("/v1/he/release", headers={**world.auth("bob"), **RESEARCH},
                       json={"view_token": token, "computation": computation or {"op": "count"},
                             "epsilon": EPSILON})


def spent(client) -> float:
    return sum(c["epsilon"] for c in client.app.state.gateway.ledger.charges(principal="bob", limit=10_000))


def known_rows(client, world: World) -> list[tuple[str, float]]:
    r = client.get("/v1/datasets/patients/rows", headers={**world.auth("bob"), **RESEARCH},
                   params={"columns": "patient_id,charges", "format": "jsonl", "limit": 200})
    assert r.status_code == 200, r.text
    rows = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    return [(row["patient_id"], row["charges"]) for row in rows if row["charges"] is not None]


def test_the_padding_attack_gets_the_same_answer_whether_the_condition_holds_or_not(he_client,
                                                                                   oracle_world: World) -> None:
    rows = known_rows(he_client, oracle_world)
    (target, charges), padding = rows[0], rows[1:10]
    pad = ", ".join(f"'{pid}'" for pid, _ in padding)
    holds = f"patient_id IN ({pad}) OR (patient_id = '{target}' AND charges > {charges - 1})"  # 10 rows
    fails = f"patient_id IN ({pad}) OR (patient_id = '{target}' AND charges > {charges + 1})"  # 9 rows
    answers = []
    for condition in (holds, fails):
        before = spent(he_client)
        r = release(he_client, oracle_world, view_token(he_client, oracle_world, condition))
        answers.append((r.status_code, sorted(r.json()), spent(he_client) - before))
    # the same status and the same fields on both sides, and both charged: no free exact bit
    assert answers[0][:2] == answers[1][:2], answers
    assert answers[0][2] == pytest.approx(EPSILON) and answers[1][2] == pytest.approx(EPSILON), answers
    assert answers[0][0] == 200
