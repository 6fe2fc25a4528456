"""Attacks on Delta Sharing file URLs and profiles: a URL replayed with another principal's
credentials, for another file, tampered, after a policy change, after a data change and after
expiry — each refused, nothing of the file sent, and each refusal audited."""

from __future__ import annotations

import datetime
import json
import time

import httpx
import pyarrow.parquet as pq
import pytest
from delta_sharing.protocol import DeltaSharingProfile

from tests.conftest import edit
from tests.gateway import stop_server
from tests.sharing.conftest import problem, start_shared, write_profile

TTL = 10  # seconds a file URL lives on this server (long enough for the steps before expiry under load)


@pytest.fixture
def attacked(world):
    s = start_shared(world, env={"GOVERN_SHARING_FILE_TTL": str(TTL)})
    yield s
    stop_server(s.server)


def _url(shared, who: str, purpose: str, table: str = "patients") -> str:
    [action] = shared.files(who, purpose, table).add_files
    return action.url


def _refused(shared, response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert problem(response) == slug
    assert b"PAR1" not in response.content
    # a refusal before authentication (a bad or expired ticket) is handed to the audit log without
    # waiting (group commit): it is there moments later, exactly once
    rid, deadline = response.headers["x-request-id"], time.monotonic() + 10
    while not (found := [r for r in shared.records() if r.request_id == rid]) and time.monotonic() < deadline:
        time.sleep(0.1)
    [record] = found
    assert (record.outcome, record.status) == ("denied", status)


def test_replayed_and_forged_file_urls_are_refused_and_audited(attacked) -> None:
    world = attacked.world
    bob = _url(attacked, "bob", "research")
    assert httpx.get(bob).status_code == 200  # the genuine fetch works

    # another principal presenting bob's URL with its own credentials
    _refused(attacked, httpx.get(bob, headers=world.auth("alice")), 403, "access-denied")
    # alice's ticket on bob's file (ids are public in query answers)
    alice = _url(attacked, "alice", "analytics")
    bob_id = bob.split("/files/", 1)[1].split("?", 1)[0]
    swapped = alice.replace(alice.split("/files/", 1)[1].split("?", 1)[0], bob_id)
    _refused(attacked, httpx.get(swapped), 403, "access-denied")
    # a forged ticket: bob's with one character of the payload changed
    head, _, ticket = bob.partition("?ticket=")
    parts = ticket.split(".")
    parts[2] = parts[2][:-2] + ("A" if parts[2][-2] != "A" else "B") + parts[2][-1]
    _refused(attacked, httpx.get(f"{head}?ticket={'.'.join(parts)}"), 401, "unauthenticated")
    # a profile ticket is not a file ticket, and a file ticket is not a profile
    token = json.loads(attacked.profile("bob", "research").read_text())["bearerToken"]
    _refused(attacked, httpx.get(f"{head}?ticket={token}"), 401, "unauthenticated")
    r = httpx.get(f"{attacked.server.url}/delta-sharing/shares", headers={"Authorization": f"Bearer {ticket}"})
    _refused(attacked, r, 401, "unauthenticated")
    # bob's profile opens only its own share
    r = httpx.get(f"{attacked.server.url}/delta-sharing/shares/analytics/schemas/default/tables",
                  headers={"Authorization": f"Bearer {token}"})
    _refused(attacked, r, 404, "not-found")


def test_urls_go_stale_with_policy_and_data_changes_and_expire(attacked) -> None:
    world = attacked.world
    before = _url(attacked, "bob", "research")
    edit(world.directory / "policies" / "masking.yaml", "{scale: 100}", "{scale: 50}")
    deadline = time.time() + 15
    while _url(attacked, "bob", "research").split("/files/")[1][:48] == before.split("/files/")[1][:48]:
        assert time.time() < deadline, "the policy edit was not reloaded"
        time.sleep(0.3)
    _refused(attacked, httpx.get(before), 403, "ticket-stale")

    fresh = _url(attacked, "bob", "research")
    path = world.directory / "data" / "patients.parquet"
    pq.write_table(pq.read_table(path).slice(0, 50), path)
    _refused(attacked, httpx.get(fresh), 403, "ticket-stale")
    assert httpx.get(_url(attacked, "bob", "research")).status_code == 200  # a new query works

    late = _url(attacked, "bob", "research")
    time.sleep(TTL + 0.5)
    _refused(attacked, httpx.get(late), 401, "ticket-expired")


def test_an_expired_profile_is_refused(attacked) -> None:
    path = write_profile(attacked.server, "alice", "analytics", "--days", "0.0001")  # ~9 seconds
    token = json.loads(path.read_text())["bearerToken"]
    expires = DeltaSharingProfile.read_from_file(str(path)).expiration_time
    shares = f"{attacked.server.url}/delta-sharing/shares"
    assert httpx.get(shares, headers={"Authorization": f"Bearer {token}"}).json()["items"][0]["name"] == "analytics"
    while datetime.datetime.now(datetime.UTC).isoformat() <= expires.replace("Z", "+00:00"):
        time.sleep(0.5)
    time.sleep(1)
    _refused(attacked, httpx.get(shares, headers={"Authorization": f"Bearer {token}"}), 401, "ticket-expired")


def test_hostile_ranges_and_a_fragment_ticket_on_a_file_url(attacked) -> None:
    """A Range whose numbers are too long for Python's int() (4,300 digits) is a 416, not a
    crash; a ticket for a Spark fragment does not open a shared file."""
    url = _url(attacked, "bob", "research")
    huge = "9" * 5000
    for value in (f"bytes={huge}-", f"bytes=0-{huge}", f"bytes=-{huge}"):
        r = httpx.get(url, headers={"Range": value})
        assert r.status_code in (206, 416), (value[:20], r.status_code, r.text[:200])
        if r.status_code == 416:
            assert b"PAR1" not in r.content
    world = attacked.world
    scan = httpx.post(f"{attacked.server.url}/v1/datasets/patients/scan",
                      headers={**world.auth("bob"), "X-Purpose": "research"}, json={})
    assert scan.status_code == 200, scan.text
    fragment_ticket = scan.json()["fragments"][0]["ticket"]
    head = url.partition("?ticket=")[0]
    _refused(attacked, httpx.get(f"{head}?ticket={fragment_ticket}"), 401, "unauthenticated")
