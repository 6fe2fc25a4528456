"""Finding: expensive parsing ran before the decision.

Attacks:
- ``POST /v1/datasets/{name}/encrypted-query`` decoded base64 and deserialized the caller's
  TenSEAL context before deciding whether the caller may use encrypted views of the dataset;
- ``POST /v1/sql`` parsed and validated the SQL text of a principal that may read nothing.

Now both are refused from the request's identity and purpose alone, before any of that work.
The observable difference: a body that cannot even be parsed gets the *authorization* answer.
"""

from __future__ import annotations

from tests.gateway import make_client


def test_encrypted_query_decides_before_it_deserializes(world) -> None:
    with make_client(world) as c:
        r = c.post("/v1/datasets/patients/encrypted-query", headers={**world.auth("alice"), "X-Purpose": "analytics"},
                   json={"computation": {"op": "linear_groups", "features": ["charges"]},
                         "context": "!!! not base64, not a TenSEAL context !!!", "weights": ["???"], "epsilon": 0.1})
    # alice has no read_encrypted grant: refused as such, not as a malformed context
    assert r.status_code == 403 and r.json()["type"] == "urn:govern:problem:access-denied", r.text


def test_sql_of_a_principal_who_may_read_nothing_is_not_parsed(world) -> None:
    policy = world.directory / "policies" / "policy.csv"
    policy.write_text(policy.read_text() + "\np, eve, dataset:encounters, query_dp, analytics, allow\n")
    with make_client(world) as c:
        r = c.post("/v1/sql", headers={**world.auth("eve"), "X-Purpose": "analytics"},
                   json={"sql": "select ((((( this is not sql"})
    assert r.status_code == 403 and r.json()["type"] == "urn:govern:problem:access-denied", r.text
