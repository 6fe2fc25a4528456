"""Finding (issue 12): stored audit JSON that is not byte-for-byte canonical verifies OK.

Attack: the ``columns`` and ``extra`` fields are stored as JSON text. Verification used to
decode the text and re-hash the decoded value, so any text that *decodes* to the sealed value
passed, although what a reader of the store sees is different. With a duplicated key, a
reader that keeps the first occurrence (jq, many JSON libraries, a human in psql) sees the
forged value, while ``json.loads`` keeps the last and the hash still matches. Verification
must compare the stored text with the canonical form byte for byte.

Runs on SQLite and on the real PostgreSQL at 127.0.0.1:5432 (fresh tables per test).
"""

from __future__ import annotations

import pytest

from govern.audit import AuditLog
from tests.audit import conftest as audit_fixtures
from tests.audit.conftest import Store, fill

store = audit_fixtures.store  # the real stores of tests/audit (SQLite file, PostgreSQL)
log = audit_fixtures.log

N = 9


@pytest.mark.parametrize(
    ("title", "field", "forged"),
    [
        ("duplicated key, forged first value", "extra",
         '{"filter":"region = \'US\'","filter":"region = \'EU\'","i":7}'),
        ("duplicated column, forged first action", "columns",
         '{"name":"keep","name":"withhold","patient_id":"keep","ssn":"mask:hash"}'),
        ("same value, other key order", "extra", '{"i":7,"filter":"region = \'EU\'"}'),
        ("same value, whitespace added", "extra", '{"filter": "region = \'EU\'", "i": 7}'),
        ("same value, escaped unicode", "columns",
         '{"name":"withhold","patient_id":"keep","ss\\u006e":"mask:hash"}'),
    ],
)
def test_non_canonical_json_is_reported_as_edited(log: AuditLog, store: Store, title: str,
                                                  field: str, forged: str) -> None:
    fill(log, N)
    store.sql(f"UPDATE {{p}}audit_log SET {field} = ? WHERE seq = 7", (forged,))
    result = log.verify()
    assert not result.ok, f"{title}: verified: {result.message}"
    assert result.first_broken == 7, result.message
    assert "record 7" in result.message and "edited" in result.message
