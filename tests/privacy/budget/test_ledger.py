"""The privacy budget ledger on both real stores (SQLite file, PostgreSQL at 127.0.0.1:5432).

Every test that takes ``ledger`` runs once per backend. PostgreSQL tables get a fresh prefix
and are dropped afterwards; the tests skip only when the server cannot be reached.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from govern.errors import BudgetExceeded, InvalidRequest, LedgerError
from govern.identity.principal import Principal
from govern.policy.decide import Decider
from govern.policy.load import load_policy
from govern.privacy.budget.ledger import BudgetLedger
from govern.privacy.budget.limits import Budget, period_end, period_key, resolve_budget
from govern.privacy.budget.store import PostgresLedgerStore, SQLiteLedgerStore, SqlLedgerStore
from tests.audit.conftest import PG_URL, pg_execute, require_pg


def limits(epsilon: float = 1.0, delta: float = 1e-6, period: str = "month") -> Callable[[Principal, str], Budget | None]:
    return lambda principal, dataset: Budget(epsilon, delta, period, "catalog.yaml:1") if dataset == "patients" else None


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], SqlLedgerStore]]:
    if request.param == "sqlite":
        yield lambda: SQLiteLedgerStore(tmp_path / "state" / "ledger.db")
        return
    require_pg()
    prefix = f"govern_test_{uuid.uuid4().hex[:10]}_"
    try:
        yield lambda: PostgresLedgerStore(PG_URL, prefix)
    finally:
        pg_execute(f"DROP TABLE IF EXISTS {prefix}budget_spent, {prefix}budget_charges")


@pytest.fixture
def ledger(store_factory: Callable[[], SqlLedgerStore]) -> Iterator[BudgetLedger]:
    led = BudgetLedger(store_factory(), limits())
    yield led
    led.close()


def test_charges_add_up_exactly_and_refusals_charge_nothing(ledger: BudgetLedger) -> None:
    # ten charges of 0.1 fill a budget of 1.0 exactly (integer units: no float drift)
    for i in range(10):
        charge = ledger.charge("alice", "patients", 0.1, 1e-7, request_id=f"r{i}")
    assert charge.status.spent_epsilon == 1.0 and charge.status.left_epsilon == 0.0
    assert charge.status.spent_delta == pytest.approx(1e-6) and charge.status.releases == 10
    with pytest.raises(BudgetExceeded) as refused:
        ledger.charge("alice", "patients", 0.1, request_id="r-over")
    assert refused.value.status == 403 and "nothing was charged" in refused.value.detail
    assert refused.value.extra["budget"]["left"]["epsilon"] == 0.0
    status = ledger.status("alice", "patients")
    assert (status.spent_epsilon, status.releases) == (1.0, 10)
    rows = ledger.charges(principal="alice")
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(10)]
    assert all(r["epsilon"] == 0.1 and r["kind"] == "dp" for r in rows)


def test_delta_is_a_budget_too(ledger: BudgetLedger) -> None:
    ledger.charge("bob", "patients", 0.1, 9e-7, request_id="a")
    with pytest.raises(BudgetExceeded):
        ledger.charge("bob", "patients", 0.1, 2e-7, request_id="b")
    assert ledger.status("bob", "patients").spent_epsilon == pytest.approx(0.1)


def test_budgets_are_per_principal_and_dataset(ledger: BudgetLedger) -> None:
    ledger.charge("alice", "patients", 1.0, request_id="a")
    assert ledger.status("bob", "patients").left_epsilon == 1.0
    with pytest.raises(BudgetExceeded, match="no privacy budget is set"):
        ledger.charge("alice", "encounters", 0.1, request_id="b")
    assert ledger.status("alice", "encounters").budget is None


def test_check_is_a_preflight_that_charges_nothing(ledger: BudgetLedger) -> None:
    assert ledger.check("alice", "patients", 0.6).left_epsilon == 1.0
    ledger.charge("alice", "patients", 0.6, request_id="a")
    with pytest.raises(BudgetExceeded):
        ledger.check("alice", "patients", 0.6)
    assert ledger.status("alice", "patients").releases == 1


def test_a_new_period_starts_whole(store_factory: Callable[[], SqlLedgerStore]) -> None:
    now = [datetime(2025, 1, 31, 23, 59, tzinfo=UTC)]
    led = BudgetLedger(store_factory(), limits(), clock=lambda: now[0])
    try:
        led.charge("alice", "patients", 1.0, request_id="jan")
        with pytest.raises(BudgetExceeded):
            led.charge("alice", "patients", 0.1, request_id="jan-2")
        now[0] = datetime(2025, 2, 1, 0, 0, tzinfo=UTC)
        status = led.charge("alice", "patients", 0.25, request_id="feb").status
        assert (status.period, status.spent_epsilon, status.resets) == ("2025-02", 0.25, datetime(2025, 3, 1, tzinfo=UTC))
    finally:
        led.close()


def test_concurrent_chargers_never_overspend(store_factory: Callable[[], SqlLedgerStore]) -> None:
    # 4 ledger instances (separate connections, like separate processes) × 10 threads each
    ledgers = [BudgetLedger(store_factory(), limits(epsilon=1.0)) for _ in range(4)]
    ok, refused = [], []
    lock = threading.Lock()

    def work(led: BudgetLedger, i: int) -> None:
        try:
            led.charge("alice", "patients", 0.15, request_id=f"t{i}")
            with lock:
                ok.append(i)
        except BudgetExceeded:
            with lock:
                refused.append(i)

    threads = [threading.Thread(target=work, args=(ledgers[i % 4], i)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = ledgers[0].status("alice", "patients")
    assert len(ok) == 6 and len(refused) == 34  # 6 × 0.15 = 0.9 ≤ 1.0 < 7 × 0.15
    assert status.spent_epsilon == pytest.approx(0.9) and status.releases == 6
    assert len(ledgers[0].charges(principal="alice")) == 6
    for led in ledgers:
        led.close()


def test_state_survives_reopening(store_factory: Callable[[], SqlLedgerStore]) -> None:
    first = BudgetLedger(store_factory(), limits())
    first.charge("alice", "patients", 0.4, request_id="a")
    first.close()
    second = BudgetLedger(store_factory(), limits())
    assert second.status("alice", "patients").spent_epsilon == pytest.approx(0.4)
    second.close()


@pytest.mark.parametrize("epsilon, delta", [(-1.0, 0.0), (0.0, 0.0), (float("nan"), 0.0), (float("inf"), 0.0),
                                            (0.1, 1.0), (0.1, -1e-9)])
def test_invalid_amounts_are_refused(ledger: BudgetLedger, epsilon: float, delta: float) -> None:
    with pytest.raises(InvalidRequest):
        ledger.charge("alice", "patients", epsilon, delta, request_id="x")
    assert ledger.status("alice", "patients").releases == 0


def test_an_unwritable_store_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").mkdir()  # a folder where the file should be
    led = BudgetLedger(SQLiteLedgerStore(tmp_path / "ledger.db"), limits())
    with pytest.raises(LedgerError) as failed:
        led.charge("alice", "patients", 0.1, request_id="x")
    assert failed.value.status == 503 and str(tmp_path) not in failed.value.detail


def test_an_unreachable_postgres_fails_closed_without_the_password() -> None:
    led = BudgetLedger(PostgresLedgerStore("postgresql://postgres:s3cret-pw@127.0.0.1:1/test", connect_timeout=1),
                       limits())
    with pytest.raises(LedgerError) as failed:
        led.charge("alice", "patients", 0.1, request_id="x")
    assert "s3cret-pw" not in failed.value.detail and "s3cret-pw" not in repr(led)


# -- which budget applies (pure) -------------------------------------------------------------------

def test_budget_resolution_principal_then_smallest_role_then_dataset(policy_dir: Path) -> None:
    catalog = policy_dir / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace(
        "        data-scientist: {epsilon: 10, delta: 1.0e-5}",
        "        data-scientist: {epsilon: 10, delta: 1.0e-5}\n        analyst: {epsilon: 2}\n"
        "        staff: {epsilon: 3}\n        alice: {epsilon: 4}"))
    policy_csv = policy_dir / "policy.csv"
    policy_csv.write_text(policy_csv.read_text() + "\ng, analyst, staff\ng, dave, staff\n")
    policy = load_policy(policy_dir)
    decider = Decider(policy)

    def budget(name: str, dataset: str = "patients") -> Budget | None:
        return resolve_budget(policy, decider, Principal(name), dataset)

    assert budget("alice").epsilon == 4  # the principal's own line wins over its roles
    assert (budget("bob").epsilon, budget("bob").delta) == (10, 1e-5)  # role data-scientist
    assert budget("dave").epsilon == 3  # role staff
    assert budget("carol").epsilon == 5 and budget("carol").source.startswith("catalog.yaml:")
    assert budget("carol", "encounters").epsilon == 3
    assert Principal("x", roles=("analyst", "staff")) and resolve_budget(
        policy, decider, Principal("x", roles=("analyst", "staff")), "patients").epsilon == 2  # the smallest


def test_periods() -> None:
    at = datetime(2025, 12, 31, 22, 0, tzinfo=UTC)
    assert [period_key(p, at) for p in ("day", "week", "month", "year", "total")] == [
        "2025-12-31", "2026-W01", "2025-12", "2025", "total"]
    assert period_end("month", at) == datetime(2026, 1, 1, tzinfo=UTC)
    assert period_end("week", at) == datetime(2026, 1, 5, tzinfo=UTC)
    assert period_end("total", at) is None
