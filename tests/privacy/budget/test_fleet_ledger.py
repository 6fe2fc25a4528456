"""The ledger across gateway processes (issue 17): separate OS processes, each with its own
connection to one PostgreSQL, charge one budget at once; a request id is charged at most once,
whichever process retries it; a refund gives back exactly its own charge, once.

The budget test of ``test_ledger.py`` uses threads over separate connections; these use real
processes started together, which is how a fleet behind a load balancer charges.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from govern.privacy.budget.ledger import BudgetLedger
from govern.privacy.budget.store import PostgresLedgerStore
from tests.audit.conftest import PG_URL, pg_execute, require_pg
from tests.privacy.budget.test_ledger import limits

REPO = Path(__file__).resolve().parents[3]

WORKER = textwrap.dedent("""
    import sys, time, threading
    from pathlib import Path
    from govern.errors import BudgetExceeded
    from govern.privacy.budget.ledger import BudgetLedger
    from govern.privacy.budget.store import PostgresLedgerStore
    from tests.privacy.budget.test_ledger import limits

    url, prefix, name, go = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    led = BudgetLedger(PostgresLedgerStore(url, prefix), limits(epsilon=1.0))
    led.status("alice", "patients")  # connect and create the tables before the start signal
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.002)
    ok = []

    def work(t):
        for i in range(6):
            try:
                led.charge("alice", "patients", 0.07, request_id=f"{name}-{t}-{i}")
                ok.append(1)
            except BudgetExceeded:
                pass
            # the same request id from every process: charged once in all
            try:
                led.charge("alice", "patients", 0.01, request_id=f"shared-{i}")
            except BudgetExceeded:
                pass

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("ok", len(ok), flush=True)
""")


@pytest.fixture
def prefix() -> Iterator[str]:
    require_pg()
    name = f"govern_test_{uuid.uuid4().hex[:10]}_"
    yield name
    pg_execute(f"DROP TABLE IF EXISTS {name}budget_spent, {name}budget_charges")


def test_processes_charging_one_budget_never_exceed_it(prefix: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, PG_URL, prefix, f"p{k}", str(go)], cwd=REPO,
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in range(5)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        granted = 0
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            granted += int(out.split()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    rows = pg_execute(f"SELECT request_id, epsilon FROM {prefix}budget_charges")
    spent = pg_execute(f"SELECT epsilon, releases FROM {prefix}budget_spent")
    total = sum(int(e) for _, e in rows)
    assert spent == [(total, len(rows))]  # the sums are the charges
    assert total <= 10**12  # epsilon 1.0 in ledger units: never more, under 90 concurrent tries
    shared = [r for r, _ in rows if r.startswith("shared-")]
    assert len(shared) == len(set(shared))  # each shared request id charged at most once
    assert granted == sum(r.startswith("p") for r, _ in rows)
    assert granted >= 1


def test_a_retried_request_is_charged_once(prefix: str) -> None:
    one = BudgetLedger(PostgresLedgerStore(PG_URL, prefix), limits(epsilon=1.0))
    two = BudgetLedger(PostgresLedgerStore(PG_URL, prefix), limits(epsilon=1.0))
    try:
        first = one.charge("alice", "patients", 0.3, request_id="r1")
        again = two.charge("alice", "patients", 0.3, request_id="r1")  # another instance retries it
        assert first.status.spent_epsilon == again.status.spent_epsilon == pytest.approx(0.3)
        assert one.status("alice", "patients").releases == 1
        assert len(one.charges(request_id="r1")) == 1
    finally:
        one.close()
        two.close()


def test_a_refund_returns_its_own_charge_once(prefix: str) -> None:
    led = BudgetLedger(PostgresLedgerStore(PG_URL, prefix), limits(epsilon=1.0))
    try:
        led.charge("alice", "patients", 0.25, request_id="kept")
        led.charge("alice", "patients", 0.5, request_id="unseen")
        assert led.refund("unseen") is True
        assert led.refund("unseen") is False  # once
        assert led.refund("never-charged") is False
        status = led.status("alice", "patients")
        assert (status.spent_epsilon, status.releases) == (pytest.approx(0.25), 1)
        assert [c["request_id"] for c in led.charges(principal="alice")] == ["kept"]
    finally:
        led.close()
