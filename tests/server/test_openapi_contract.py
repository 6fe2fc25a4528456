"""The HTTP contract, tested by schemathesis against a real ``govern serve`` of the demo world:
every operation of ``/openapi.json``, authenticated (Bearer) and with a purpose, with valid and
invalid (negative) parameters and bodies, answers
without a server error (no 5xx), with a status the description lists for that operation, a
documented media type, and a body that matches the documented schema (problem+json for errors).

Bounded: at most :data:`EXAMPLES` generated cases per operation. Half of the cases name the real
dataset ``patients`` (the fuzzer's random names would only ever meet 404).
"""

from __future__ import annotations

import json
import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway import World, start_server, stop_server

EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]

# Who asks, by path prefix: stewards' routes need the steward's grants, the rest a data scientist.
STEWARD = ("/v1/audit", "/v1/policy", "/v1/datasets/{name}/reidentify")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def contract_server(demo_world, tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("contract") / "world"
    shutil.copytree(demo_world.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints"))
    world = World(d, json.loads((d / "keys.json").read_text()))
    server = start_server(world, "--pg-port", "0", "--flight-port", "0")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def api(contract_server):
    return schemathesis.openapi.from_url(contract_server.url + "/openapi.json")


def test_every_operation_keeps_its_contract(api, contract_server) -> None:
    """Every operation, :data:`EXAMPLES` cases each; all failures are collected, then shown."""
    failures: list[str] = []
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        try:
            _fuzz(operation, contract_server, statuses)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    print(f"schemathesis: {sum(statuses.values())} requests, statuses {sorted(statuses.items())}")
    assert statuses.get(200, 0) >= len(operations) // 2  # the cases reach data, not only refusals


def _fuzz(operation, server, statuses: dict[int, int]) -> None:
    steward = operation.path.startswith(STEWARD)
    who, purpose = ("carol", "governance") if steward else ("bob", "research")

    @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE)))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        headers = server.world.auth(who)
        if "x-purpose" not in {k.lower() for k in (case.headers or {})}:
            headers["X-Purpose"] = purpose
        if "name" in (case.path_parameters or {}) and len(str(case.path_parameters["name"])) % 2 == 0:
            case.path_parameters["name"] = "patients"
        response = case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    run()


def test_the_description_resolves_and_declares_bearer(contract_server) -> None:
    import httpx

    doc = httpx.get(contract_server.url + "/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    text = json.dumps(doc)
    assert "#/$defs/" not in text
    for ref in {r.split('"')[0] for r in text.split('"$ref": "')[1:]}:
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref
    rows = doc["paths"]["/v1/datasets/{name}/rows"]
    assert {"get", "head"} <= set(rows)
    for status in ("400", "401", "403", "404", "413", "422", "503"):
        assert rows["get"]["responses"][status]["content"] == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert rows["get"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]
