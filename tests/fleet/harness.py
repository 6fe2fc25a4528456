"""The fleet harness: concurrent clients and a nemesis against gateways sharing one PostgreSQL.

:class:`Setup` builds what a run needs — a throwaway PostgreSQL cluster, a ``moto_server`` on a
fixed loopback port holding the ``encounters`` dataset (large, many row groups, so a read of it
is still streaming when S3 goes away), and ``instances`` ``govern serve`` processes over a
private copy of the demo world (instance 0 watches the policy folder, the others follow it
only through the fleet's ``LISTEN/NOTIFY``). :func:`run` then lets ``clients`` threads do small
reads, SQL, DP releases and streams against random instances while a nemesis thread walks a
schedule of faults and policy reloads; every operation lands in the history as ok, fail or
unknown (:mod:`tests.fleet.history`), which :func:`collect` checks offline against what
PostgreSQL holds afterwards.

Used by ``tests/fleet/test_harness.py`` (the short run) and ``benchmarks/fleet.py`` (the long run).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from govern.audit.log import PostgresAuditLog
from govern.deliver.fleet import fleet_status
from govern.policy.load import read_policy
from tests.fleet.cluster import Cluster, Fleet, wait_until
from tests.fleet.history import Charge, Op, Rec, Reload, Report, check
from tests.gateway import World, free_port

PREFIX = "fleet_"
EPSILON = 0.1  # per DP release
BUDGET = ("alice", "patients")
BOUND = 5.0  # policy convergence bound (seconds)
SQL = "SELECT region, COUNT(*) AS n FROM patients GROUP BY region ORDER BY region"
ACCESS, SECRET = "testing-access-key", "testing-secret-key"


class Moto:
    """A ``moto_server`` on one fixed port that can be stopped and started again (it keeps its
    objects in memory, so a restart uploads them again)."""

    def __init__(self, root: Path, files: dict[str, Path]) -> None:
        self.port = free_port()
        self.root = root
        self.files = files  # "bucket/key" -> local file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = Path(sys.executable).parent / "moto_server"
        log = (self.root / "moto.log").open("ab")
        for _ in range(50):  # the port may still be closing after a stop
            self.proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if wait_until(lambda: self.proc is not None and (self.proc.poll() is not None or self._up()), 30):
                if self.proc.poll() is None:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"moto_server did not start; see {self.root / 'moto.log'}")
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(access_key=ACCESS, secret_key=SECRET, endpoint_override=self.endpoint, scheme="http",
                               region="us-east-1", allow_bucket_creation=True)
        for target, local in self.files.items():
            fs.create_dir(target.split("/", 1)[0])
            with local.open("rb") as src, fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/moto-api/", timeout=1) as r:  # loopback
                r.read()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@dataclass
class Setup:
    world: World
    cluster: Cluster
    moto: Moto
    fleet: Fleet

    @classmethod
    def create(cls, base: World, root: Path, *, instances: int = 3, encounters_rows: int = 120_000,
               env: dict[str, str] | None = None) -> Setup:
        d = root / "world"
        shutil.copytree(base.directory, d, ignore=shutil.ignore_patterns("audit.db*", "audit.checkpoints", "*.log"))
        world = World(d, json.loads((d / "keys.json").read_text()))
        big = root / "encounters-big.parquet"
        small = pq.read_table(d / "data" / "encounters.parquet")
        copies = max(1, encounters_rows // small.num_rows)
        tables = []
        for k in range(copies):
            ids = pa.array([k * 10_000_000 + i for i in range(small.num_rows)], pa.int64())
            tables.append(small.set_column(0, "encounter_id", ids))
        pq.write_table(pa.concat_tables(tables), big, row_group_size=10_000)
        moto = Moto(root, {"fleet/encounters.parquet": big})
        moto.start()
        catalog = d / "policies" / "catalog.yaml"
        text = catalog.read_text()
        assert "location: encounters.parquet" in text
        catalog.write_text(text.replace("location: encounters.parquet", "location: s3://fleet/encounters.parquet"))
        cluster = Cluster()
        cluster.start()
        environ = {"GOVERN_S3__ENDPOINT_OVERRIDE": moto.endpoint, "GOVERN_S3__SCHEME": "http",
                   "GOVERN_S3__ACCESS_KEY": ACCESS, "GOVERN_S3__SECRET_KEY": SECRET,
                   "GOVERN_S3__CONNECT_TIMEOUT": "1", "GOVERN_S3__REQUEST_TIMEOUT": "2", "GOVERN_S3__RETRIES": "0",
                   "GOVERN_FLEET_RECHECK": "30", "GOVERN_BATCH_SIZE": "4096",
                   # streams read S3 itself, so that an S3 outage cuts them (a masked materialization
                   # on local disk would serve them through the outage: tests/deliver/test_materialize.py)
                   "GOVERN_MATERIALIZE_ON_READ": "false", **(env or {})}
        extra = tuple(() if i == 0 else ("--no-watch",) for i in range(instances))
        try:
            fleet = Fleet.start(world, cluster.url, instances, prefix=PREFIX, extra=extra, env=environ)
        except BaseException:
            moto.stop()
            cluster.close()
            raise
        return cls(world, cluster, moto, fleet)

    def close(self) -> None:
        self.fleet.close()
        self.moto.stop()
        self.cluster.close()


@dataclass
class RunConfig:
    ops: int = 1000  # client operations at least (the nemesis schedule also runs to its end)
    clients: int = 6
    timeout: float = 3.0
    impatient: float = 0.05  # share of ops with a 20 ms timeout (client timeouts)
    weights: dict[str, int] = field(default_factory=lambda: {"read": 6, "sql": 2, "dp": 2, "stream": 1})
    faults: bool = True
    seed: int = 17


class History:
    """The operations of a run, appended by many threads."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.reloads: list[Reload] = []
        self.faults: list[tuple[str, float]] = []
        self.latency: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._n = 0

    def next_id(self) -> str:
        with self._lock:
            self._n += 1
            return f"op-{self._n:06d}"

    def add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)
            if op.outcome == "ok":
                self.latency.setdefault(op.kind, []).append(op.completed - op.invoked)

    def fault(self, name: str) -> None:
        with self._lock:
            self.faults.append((name, time.monotonic()))


class Unknown(Exception):
    pass


def perform(setup: Setup, history: History, kind: str, instance: int, *, timeout: float,
            on_first_bytes: Callable[[], None] | None = None, slow: float = 0.0,
            limit: int | None = 2_000) -> Op:
    """One client operation, classified: ``fail`` only when the gateway certainly produced no
    result (the connection was refused, or a complete error response arrived)."""
    world = setup.world
    server = setup.fleet.servers[instance]
    op_id = history.next_id()
    headers = {**world.auth("alice"), "X-Purpose": "analytics", "X-Request-Id": op_id}
    started = time.monotonic()
    budget = "/".join(BUDGET) if kind == "dp" else None
    rows: int | None = None
    note = ""
    outcome = "fail"
    try:
        with httpx.Client(base_url=server.url, timeout=timeout) as client:
            if kind == "read":
                r = client.get("/v1/datasets/patients/rows", params={"limit": 20, "format": "jsonl"}, headers=headers)
                outcome = "ok" if r.status_code == 200 and r.text.count("\n") == 20 else "fail"
            elif kind == "sql":
                r = client.post("/v1/sql", json={"sql": SQL}, headers=headers)
                outcome = "ok" if r.status_code == 200 and r.json()["row_count"] >= 1 else "fail"
            elif kind == "dp":
                r = client.post("/v1/datasets/patients/dp", headers=headers,
                                json={"aggregates": [{"function": "count"}], "epsilon": EPSILON})
                outcome = "ok" if r.status_code == 200 and r.json().get("rows") else "fail"
            elif kind == "stream":
                params: dict[str, Any] = {"format": "arrow"}
                if limit is not None:
                    params["limit"] = limit
                with client.stream("GET", "/v1/datasets/encounters/rows", params=params, headers=headers) as r:
                    if r.status_code != 200:
                        r.read()
                        outcome = "fail"
                    else:
                        body = bytearray()
                        for chunk in r.iter_raw(1 << 16):
                            if not body and on_first_bytes is not None:
                                on_first_bytes()
                            body += chunk
                            if slow:
                                time.sleep(slow)
                        rows = pa.ipc.open_stream(bytes(body)).read_all().num_rows
                        outcome = "ok"
            else:
                raise ValueError(kind)
            note = str(r.status_code)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        outcome, note = "fail", type(exc).__name__  # nothing reached the gateway
    except (httpx.HTTPError, pa.ArrowInvalid, ValueError, KeyError) as exc:
        outcome, note = "unknown", f"cut: {type(exc).__name__}"
    op = Op(op_id, kind, instance, outcome, started, time.monotonic(), EPSILON if kind == "dp" else 0.0, budget,
            rows, note)
    history.add(op)
    return op


def client_loop(setup: Setup, history: History, config: RunConfig, stop: threading.Event, rng: random.Random) -> None:
    kinds = [k for k, w in config.weights.items() for _ in range(w)]
    while not stop.is_set():
        kind = rng.choice(kinds)
        instance = rng.randrange(len(setup.fleet.servers))
        timeout = 0.02 if rng.random() < config.impatient else config.timeout * (3 if kind == "stream" else 1)
        perform(setup, history, kind, instance, timeout=timeout)


def serving(setup: Setup) -> list[str]:
    """The versions the running instances serve, from the fleet table (each instance updates its
    row the moment it installs a version, then every heartbeat): one query, not a readiness
    probe each. Rows of killed instances (their pid is gone) do not count."""
    pids = {s.process.pid for s in setup.fleet.servers if s.process.poll() is None}
    try:
        rows = fleet_status(setup.cluster.url, PREFIX, stale_after=300)
    except psycopg.Error:
        return []
    return sorted(i.policy_version for i in rows if i.pid in pids)


def reload_policy(setup: Setup, history: History, n: int) -> None:
    """Edit the shared policy folder (instance 0 notices; the others follow its NOTIFY) and time
    until every instance serves the new version."""
    catalog = setup.world.directory / "policies" / "catalog.yaml"
    catalog.write_text(catalog.read_text() + f"\n# fleet reload {n}\n")
    at = time.monotonic()
    policy, problems = read_policy(setup.world.directory / "policies")
    assert policy is not None and not problems, problems
    version = policy.version
    n = len(setup.fleet.servers)
    done = wait_until(lambda: serving(setup) == [version] * n, BOUND * 3, step=0.02)
    converged = time.monotonic() if done else None
    if done:  # and what the instances say themselves agrees
        try:
            said = {setup.fleet.readyz(i, timeout=30)["policy_version"] for i in range(n)}
        except (httpx.HTTPError, ValueError, KeyError):
            said = set()
        converged = converged if said == {version} else None
    history.reloads.append(Reload(version, at, converged))


def mid_stream(setup: Setup, history: History, instance: int, fault: Callable[[], None]) -> Op:
    """Start a slow, full read of the S3 dataset on ``instance``; inject ``fault`` once its first
    bytes arrived; return the operation (expected: cut, so unknown)."""
    first = threading.Event()
    result: list[Op] = []
    t = threading.Thread(target=lambda: result.append(perform(setup, history, "stream", instance, timeout=10,
                                                              on_first_bytes=first.set, slow=0.02, limit=None)))
    t.start()
    if first.wait(20):
        fault()
    t.join(60)
    return result[0] if result else Op("lost", "stream", instance, "unknown")


def nemesis(setup: Setup, history: History, rng: random.Random) -> list[str]:
    """Every fault at least once, with policy reloads between them (while every instance is up)."""
    fleet = setup.fleet
    n = len(fleet.servers)
    cuts: list[str] = []
    reloads = 0

    def pause() -> None:
        time.sleep(rng.uniform(0.5, 1.0))

    def reload() -> None:
        nonlocal reloads
        reloads += 1
        reload_policy(setup, history, reloads)

    pause()
    reload()
    # kill -9 of a gateway in the middle of a request (a stream being sent)
    victim = rng.randrange(n)
    history.fault("kill -9")
    mid_stream(setup, history, victim, lambda: fleet.kill(victim))
    pause()
    fleet.restart(victim)
    reload()
    # SIGSTOP / SIGCONT: a gateway frozen while clients wait on it (their timeouts fire)
    frozen = rng.randrange(n)
    history.fault("SIGSTOP")
    fleet.pause(frozen)
    time.sleep(2.0)
    fleet.resume(frozen)
    pause()
    reload()
    # PostgreSQL restart under load
    history.fault("postgres restart")
    setup.cluster.restart()
    time.sleep(1.5)  # the fleet's listeners reconnect (their backoff is at most one heartbeat)
    reload()
    # S3 outage mid-stream: the stream must end unlike a complete one
    history.fault("moto stop")
    op = mid_stream(setup, history, rng.randrange(n), setup.moto.stop)
    cuts.append(op.id)
    setup.moto.start()
    pause()
    reload()
    return cuts


def run(setup: Setup, config: RunConfig) -> tuple[History, list[str]]:
    history = History()
    stop = threading.Event()
    rng = random.Random(config.seed)
    clients = [threading.Thread(target=client_loop, args=(setup, history, config, stop, random.Random(rng.random())),
                                daemon=True) for _ in range(config.clients)]
    for t in clients:
        t.start()
    cuts: list[str] = []
    try:
        if config.faults:
            cuts = nemesis(setup, history, rng)
        while len(history.ops) < config.ops:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    return history, cuts


def collect(setup: Setup, history: History) -> tuple[Report, dict[str, Any]]:
    """Stop the fleet gracefully (its writers flush), then read back the shared state and check."""
    setup.fleet.close()
    url = setup.cluster.url
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT seq, prev_hash, hash, request_id, outcome, extra, action, rows, policy_version "
                            f"FROM {PREFIX}audit_log ORDER BY seq").fetchall()
        charged = conn.execute(f"SELECT request_id, principal, dataset, epsilon FROM {PREFIX}budget_charges").fetchall()
        pending = conn.execute(f"SELECT COUNT(*) FROM {PREFIX}audit_pending").fetchone()
    records = [Rec(int(r[0]), r[1], r[2], r[3], r[4], json.loads(r[5]).get("client_request_id"), r[6],
                   None if r[7] is None else int(r[7]), r[8]) for r in rows]
    charges = [Charge(r[0], f"{r[1]}/{r[2]}", int(r[3]) / 1e12) for r in charged]
    log = PostgresAuditLog(url, PREFIX)
    try:
        verified = log.verify()
    finally:
        log.close()
    report = check(history.ops, records, charges, {"alice/patients": 5.0}, history.reloads, bound=BOUND)
    if not verified.ok:
        report.violations.append(f"the store's own verification failed: {verified.message}")
    by_client = {r.client_id: r for r in records if r.client_id}
    extra = {"pending": pending[0] if pending else 0, "verified": verified.count,
             "by_client": by_client, "faults": [f for f, _ in history.faults],
             "spent": sum(c.epsilon for c in charges)}
    return report, extra


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


__all__ = ["BOUND", "History", "Moto", "RunConfig", "Setup", "collect", "percentile", "perform", "run"]
