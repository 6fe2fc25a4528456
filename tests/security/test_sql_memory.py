"""Finding: analyst SQL could grow the gateway without bound, and one deadline did not cover it.

The attacks: DuckDB's ``memory_limit`` bounds its operators, not one value, so
``replace(repeat('a', 100000), 'a', repeat('b', 100000))`` (10¹⁰ characters) or
``list_transform(range(N), lambda i: repeat('x', 100000))`` built multi-GB values inside the
gateway (4.7 GB seen), and ``SELECT repeat('a', 1500000000)`` through the PostgreSQL catalog
path, which has no size checks, grew it by 6.2 GB. Work stuck in Python ignored the query's
DuckDB interrupt.

Now every analyst query runs in a worker process (:class:`govern.sql.isolation.SqlService`)
with an OS memory limit and one deadline. Each attack below must end in a clear error —
``LimitExceeded`` (SQLSTATE 53200) or ``QueryTimeout`` (57014) — while this process, which
plays the gateway, grows by less than ``RSS_BUDGET`` (its VmRSS, not the worker's); the next
query must work. Before the fix, the same single-value attacks run through the in-process
engine grew the process by gigabytes (see the branch's report).
"""

from __future__ import annotations

import inspect
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pyarrow as pa
import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import GovernError, LimitExceeded, QueryTimeout
from govern.pgwire.catalog import Catalog, CatalogContext
from govern.policy.model import local_principal
from govern.sql.isolation import SqlService, WorkerEnv
from tests.gateway import start_server, stop_server

RSS_BUDGET = 100 * 2**20  # bytes the gateway may grow by over all the attacks
DEADLINE = 8.0  # seconds each attack may run


def rss() -> int:
    """This process's resident memory (VmRSS), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Gateway:
    service: SqlService
    governor: Governor

    def run(self, sql: str, *, who: str = "alice", purpose: str = "analytics", seconds: float = DEADLINE) -> pa.Table:
        principal = local_principal(self.governor.state.policy, who)
        result = self.service.run(principal, purpose, sql, None, self.governor.state.policy,
                                  time.monotonic() + seconds)
        try:
            return result.reader.read_all()
        finally:
            result.close()


@pytest.fixture(scope="module")
def gateway(demo_world) -> Iterator[Gateway]:
    settings = load_settings(demo_world.config, watch_policies=False, sql_workers=2)
    service = SqlService(settings)
    service.start()
    assert service.ready(120)
    yield Gateway(service, Governor(settings))
    service.close()


VALUE_ATTACKS = [
    ("replace of repeats", "SELECT length(replace(repeat('a', 100000), 'a', repeat('b', 100000))) AS n"),
    ("list_transform of repeats",
     "SELECT sum(length(x)) AS n FROM (SELECT unnest(list_transform(range(20000), lambda i: repeat('x', 100000))) AS x)"),
    ("string_agg of repeats", "SELECT length(string_agg(repeat('x', 100000), '')) AS n FROM range(100000)"),
    ("a list of huge strings joined",
     "SELECT length(array_to_string(list_transform(range(100000), lambda i: repeat('y', 100000)), '')) AS n"),
]


@pytest.mark.parametrize("title,sql", VALUE_ATTACKS, ids=[a[0] for a in VALUE_ATTACKS])
def test_single_huge_values_cost_a_worker_not_the_gateway(gateway: Gateway, title: str, sql: str) -> None:
    before = rss()
    start = time.monotonic()
    with pytest.raises((LimitExceeded, QueryTimeout)) as info:
        gateway.run(sql)
    assert time.monotonic() - start < DEADLINE + 5
    assert info.value.extra.get("sqlstate") in ("53200", "57014"), info.value.extra
    assert rss() - before < RSS_BUDGET, f"{title}: the gateway grew by {(rss() - before) / 2**20:.0f} MiB"
    assert gateway.run("SELECT region, count(*) AS n FROM patients GROUP BY 1").to_pylist() == [
        {"region": "EU", "n": gateway.run("SELECT count(*) AS n FROM patients").column("n")[0].as_py()}]


def test_the_catalog_path_is_bounded_too(gateway: Gateway) -> None:
    """``repeat('a', 1500000000)`` through the PostgreSQL catalog emulation (no size checks)."""
    state = gateway.governor.state
    alice = local_principal(state.policy, "alice")
    tables = gateway.service.tables(alice, "analytics", state.policy)
    assert set(tables) == {"patients", "encounters"} and "ssn" not in tables["patients"].names
    context = CatalogContext(user="alice", database="analytics", databases=("analytics",), tables=tables,
                             settings={}, pid=1)
    catalog = Catalog(context, timeout=DEADLINE, memory_limit="1GB", service=gateway.service)
    before = rss()
    with pytest.raises((LimitExceeded, QueryTimeout)):  # the worker's memory, or the message size
        catalog.run("SELECT repeat('a', 1500000000) AS a FROM pg_catalog.pg_class")
    assert rss() - before < RSS_BUDGET
    names = catalog.run("SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r' ORDER BY 1").column(0).to_pylist()
    assert names == ["encounters", "patients"]


def test_a_long_query_is_stopped_at_its_deadline(gateway: Gateway) -> None:
    start = time.monotonic()
    with pytest.raises(QueryTimeout) as info:
        gateway.run("SELECT count(*) AS n FROM range(1000000) a, range(1000000) b", seconds=2.0)
    elapsed = time.monotonic() - start
    assert 1.9 < elapsed < 4.0, elapsed
    assert info.value.extra.get("sqlstate") == "57014" and info.value.status == 408
    assert gateway.run("SELECT 42 AS answer").to_pylist() == [{"answer": 42}]


@dataclass(frozen=True)
class Stuck:
    """A job stuck in Python (as a hostile parse would be): nothing but a kill stops it."""

    seconds: float

    def run(self, env: WorkerEnv) -> str:
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            pass
        return "finished"


def test_work_stuck_in_python_is_killed_at_the_deadline(gateway: Gateway) -> None:
    pids = set(gateway.service.workers())
    start = time.monotonic()
    with pytest.raises(QueryTimeout):
        gateway.service.submit(Stuck(60), None, time.monotonic() + 1.5)
    assert time.monotonic() - start < 3.5
    assert gateway.run("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    assert gateway.service.ready(60)
    assert pids != set(gateway.service.workers())  # the stuck worker was replaced


def test_closing_a_result_early_stops_the_query_and_frees_the_worker(gateway: Gateway,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The cancel path under test, not the race against its fallback: on a loaded CI machine a
    # cancel took longer than CANCEL_WAIT (5 s) twice, and the worker was killed and replaced
    # as designed. A broken cancel still fails here (after 60 s, released as unhealthy).
    monkeypatch.setattr("govern.sql.isolation.CANCEL_WAIT", 60.0)
    state = gateway.governor.state
    alice = local_principal(state.policy, "alice")
    assert gateway.service.ready(60)
    # every worker serves this policy and has its view before the test (a worker the previous
    # test replaced would otherwise spend its first job starting up while it is being cancelled)
    with ThreadPoolExecutor(gateway.service.size) as pool:
        list(pool.map(lambda _: gateway.run("SELECT count(*) AS n FROM patients p"), range(4 * gateway.service.size)))
    results = []
    for _ in range(gateway.service.size):  # every worker busy streaming a result nobody reads
        result = gateway.service.run(alice, "analytics", "SELECT * FROM range(100000000) r, patients p", None,
                                     state.policy, time.monotonic() + 60)
        assert result.datasets == ["patients"] and set(result.plans) == {"patients"}
        next(iter(result.reader))
        results.append(result)
    # How each worker comes back: healthy (the query stopped, the worker serves again) or not
    # (killed and replaced). Not the set of worker pids: a worker started for a busy moment of
    # the warm-up may join the pool late and be stopped as surplus, by design (CI saw that once).
    released: list[bool] = []
    release = SqlService._release
    monkeypatch.setattr(SqlService, "_release", lambda service, worker, *, healthy: (
        released.append(healthy), release(service, worker, healthy=healthy))[1])
    for result in results:
        result.close()  # the client went away
    assert released == [True] * gateway.service.size  # drained and given back, none killed
    start = time.monotonic()
    assert gateway.run("SELECT count(*) AS n FROM encounters").column("n")[0].as_py() > 0
    assert time.monotonic() - start < 5  # a freed worker answered; none had to start


def test_errors_keep_their_type_position_and_state(gateway: Gateway) -> None:
    with pytest.raises(GovernError) as info:
        gateway.run("SELECT ssn FROM patients")
    assert info.value.slug == "invalid-sql"
    assert info.value.extra["position"] == 7 and info.value.extra["sqlstate"] == "42703"


@dataclass(frozen=True)
class Dies:
    """A worker that dies under a job, as one killed by the kernel for its memory would."""

    def run(self, env: WorkerEnv) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        return "unreachable"


def test_a_worker_that_dies_is_a_clear_error_and_is_replaced(gateway: Gateway) -> None:
    with pytest.raises(LimitExceeded) as info:
        gateway.service.submit(Dies(), None, time.monotonic() + DEADLINE)
    assert info.value.extra.get("sqlstate") == "53200" and "worker process died" in info.value.detail
    assert gateway.run("SELECT 2 AS two").to_pylist() == [{"two": 2}]


def wired() -> bool:
    """Whether the gateway runs analyst SQL in SqlService workers (the lead wires it into the
    request lifecycle as ``Gateway.sql_service``)."""
    from govern.deliver import gateway

    return "sql_service" in inspect.getsource(gateway)


def process_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not wired(), reason="POST /v1/sql does not run in SqlService workers yet (lead: Gateway.sql_service)")
def test_through_a_real_gateway(world) -> None:
    """The same attacks over HTTP against ``govern serve``: clear errors, a bounded gateway."""
    server = start_server(world, "--pg-port", "0")
    try:
        headers = {**world.auth("alice"), "X-Purpose": "analytics"}
        assert httpx.post(server.url + "/v1/sql", headers=headers, json={"sql": "SELECT 1 AS one"},
                          timeout=60).status_code == 200
        before = process_rss(server.process.pid)
        for _title, sql in VALUE_ATTACKS:
            response = httpx.post(server.url + "/v1/sql", headers=headers, json={"sql": sql}, timeout=120)
            assert response.status_code in (408, 413), response.text
            assert response.headers["content-type"].startswith("application/problem+json")
        assert process_rss(server.process.pid) - before < RSS_BUDGET
        response = httpx.post(server.url + "/v1/sql", headers=headers,
                              json={"sql": "SELECT count(*) AS n FROM patients"}, timeout=60)
        assert response.status_code == 200 and response.json()["row_count"] == 1
    finally:
        stop_server(server)
