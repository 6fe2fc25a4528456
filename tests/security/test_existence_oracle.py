"""Finding: "unknown" and "not yours" datasets got different answers.

Attack: a principal with no grant on a dataset probes names: an existing dataset answered
``403 access-denied`` (with the rule that denied it), a missing one ``404 not-found`` — an
oracle for which datasets exist. Now a dataset the caller has no grant on at all, under the
declared purpose, is answered exactly like one that does not exist, on every route.
"""

from __future__ import annotations

import pytest

from tests.gateway import make_client

ROUTES = [
    ("GET", "/v1/datasets/{name}", None),
    ("GET", "/v1/datasets/{name}/rows", None),
    ("POST", "/v1/datasets/{name}/dp", {"aggregates": [{"function": "count"}], "epsilon": 0.1}),
    ("POST", "/v1/datasets/{name}/reidentify", {"tokens": ["k1:00"]}),
    ("POST", "/v1/datasets/{name}/encrypted", {"columns": ["charges"]}),
    ("POST", "/v1/datasets/{name}/synthetic", {"rows": 10}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_dataset_without_any_grant_looks_like_no_dataset(world, method: str, path: str, body) -> None:
    # eve may act under "analytics" on encounters only; patients exists but is not hers
    policy = world.directory / "policies" / "policy.csv"
    policy.write_text(policy.read_text() + "\np, eve, dataset:encounters, read, analytics, allow\n")
    with make_client(world) as c:
        headers = {**world.auth("eve"), "X-Purpose": "analytics"}

        def ask(name: str):
            url = path.format(name=name)
            return c.get(url, headers=headers) if method == "GET" else c.post(url, headers=headers, json=body)

        existing, missing = ask("patients"), ask("no_such_set")
    assert existing.status_code == missing.status_code == 404
    one, two = existing.json(), missing.json()
    assert one["type"] == two["type"] == "urn:govern:problem:not-found"
    assert one["detail"].replace("patients", "X") == two["detail"].replace("no_such_set", "X")
    assert set(one) == set(two)  # no extra field (such as the deciding rule) tells them apart
