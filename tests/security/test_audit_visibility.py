"""Finding: stewards saw audit records about datasets they do not administer.

Attack: a steward who administers only ``encounters`` reads ``GET /v1/audit`` and finds the
records of SQL queries over ``patients`` — with their text, literal e-mail addresses included —
because records of multi-dataset queries, and of queries refused before their tables were
resolved, had ``dataset = null`` and null passed the filter. Now a record is shown only if the
caller administers every dataset it touches; a record that touches none is shown redacted.
"""

from __future__ import annotations

from tests.gateway import make_client

EMAIL = "someone.private@example.org"


def test_a_steward_sees_only_records_of_datasets_they_administer(world) -> None:
    policy = world.directory / "policies" / "policy.csv"
    policy.write_text(policy.read_text() + "\ng, frank, encounters-steward\n"
                      "p, encounters-steward, dataset:encounters, administer, governance, allow\n"
                      "p, encounters-steward, dataset:encounters, read, governance, allow\n")
    principals = world.directory / "policies" / "principals.yaml"
    principals.write_text(principals.read_text().replace(
        "principals:\n", "principals:\n  frank:\n    attributes: {clearance: confidential}\n", 1))
    from govern.identity.apikeys import add_key_to_principals

    frank_key = add_key_to_principals(principals, "frank")
    with make_client(world) as c:
        alice = {**world.auth("alice"), "X-Purpose": "analytics"}
        joined = c.post("/v1/sql", headers=alice, json={
            "sql": f"select count(*) from patients p join encounters e using (patient_id) where p.email = '{EMAIL}'"})
        assert joined.status_code == 200, joined.text
        unresolved = c.post("/v1/sql", headers=alice, json={"sql": f"select * from nowhere where email = '{EMAIL}'"})
        assert unresolved.status_code >= 400
        own = c.get("/v1/datasets/encounters/rows", headers=alice, params={"limit": 1})
        assert own.status_code == 200
        c.app.state.gateway.audit.flush()
        r = c.get("/v1/audit", headers={"Authorization": f"Bearer {frank_key}", "X-Purpose": "governance"},
                  params={"limit": 1000})
    assert r.status_code == 200, r.text
    records = {rec["request_id"]: rec for rec in r.json()["records"]}
    assert joined.headers["x-request-id"] not in records  # touches patients too
    assert own.headers["x-request-id"] in records  # only encounters: his
    shown = records.get(unresolved.headers["x-request-id"])
    assert shown is not None and EMAIL not in str(shown)  # no dataset resolved: redacted
    assert EMAIL not in r.text
