"""A charge is refunded only when no byte of the result left the process (issue 17).

The audit store accepts the reservation but not the ``ok`` record (its log table is gone, as
when a peer's DBA renamed it mid-flight): the release is computed and charged, the record
cannot be written, so nothing is sent — and the charge is given back. A release that was
delivered keeps its charge.
"""

from __future__ import annotations

import sqlite3

from tests.gateway import World, make_client
from tests.privacy.dp.test_http import COUNT_MEAN, headers


def test_a_release_whose_record_cannot_be_written_is_not_sent_and_is_refunded(world: World) -> None:
    with make_client(world) as c:
        gw = c.app.state.gateway
        ok = c.post("/v1/datasets/patients/dp", headers=headers(world, "alice"), json=COUNT_MEAN)
        assert ok.status_code == 200, ok.text
        db = sqlite3.connect(gw.settings.state_dir / "audit.db", isolation_level=None)
        try:
            db.execute("ALTER TABLE audit_log RENAME TO audit_log_gone")
            r = c.post("/v1/datasets/patients/dp", headers=headers(world, "alice"), json=COUNT_MEAN)
        finally:
            db.execute("ALTER TABLE audit_log_gone RENAME TO audit_log")
            db.close()
        assert r.status_code == 503 and "rows" not in r.json(), r.text
        assert r.json()["type"] == "urn:govern:problem:audit-unavailable"
        charged = [row["request_id"] for row in gw.ledger.charges()]
        assert charged == [ok.headers["x-request-id"]]  # the delivered one only
        assert gw.ledger.status("alice", "patients").spent_epsilon == COUNT_MEAN["epsilon"]
