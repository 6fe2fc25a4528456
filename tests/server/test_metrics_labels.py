"""The HTTP metrics' label sets are bounded: whatever a client sends, ``method`` is one of the
HTTP methods govern knows or ``other``, and ``route`` is a route template (or ``unmatched``),
never a raw path — so a scanner cannot grow /metrics without bound."""

from __future__ import annotations

import re
import uuid

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def _labels(text: str, metric: str) -> list[dict[str, str]]:
    out = []
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            out.append(dict(re.findall(r'(\w+)="([^"]*)"', line.rsplit("}", 1)[0])))
    return out


def test_arbitrary_methods_and_paths_do_not_grow_the_label_sets(client, world) -> None:
    bob = {**world.auth("bob"), "X-Purpose": "research"}
    for i in range(30):
        client.request(f"X{uuid.uuid4().hex[:8].upper()}", f"/v1/datasets/{uuid.uuid4().hex}/rows", headers=bob)
        client.get(f"/v1/{uuid.uuid4().hex}/{i}", headers=bob)
        client.get(f"/v1/datasets/ds{i}", headers=bob)
    client.get("/v1/datasets/patients/rows", headers=bob, params={"limit": 1})
    text = client.get("/metrics").text
    requests = _labels(text, "govern_requests_total")
    assert requests
    assert {r["method"] for r in requests} <= METHODS
    assert "other" in {r["method"] for r in requests}
    routes = {r["route"] for r in requests} | {r["route"] for r in _labels(text, "govern_request_seconds_count")}
    assert "/v1/datasets/{name}/rows" in routes and "/v1/datasets/{name}" in routes
    assert all(r == "unmatched" or "{" in r or r.count("/") <= 2 for r in routes), routes
    assert len(routes) < 10, routes  # templates, not the 90 distinct paths sent
