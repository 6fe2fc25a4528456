"""``visible(record, administered)``: which audit records a steward sees, as a truth table.

A steward administering ``encounters`` only must not see what a request did to ``patients``,
not through a multi-dataset SQL record (``dataset`` is null there) and not through the literals
of a request refused before its datasets were known.
"""

from __future__ import annotations

from typing import Any

import pytest

from govern.audit import AuditRecord, visible
from govern.audit.visibility import REDACTED, touched
from tests.audit.conftest import make_record

ENC = frozenset({"encounters"})
BOTH = frozenset({"encounters", "patients"})
NONE: frozenset[str] = frozenset()

SQL = "select * from patients p join encounters e using (patient_id) where email = 'ann@x.org'"


def rec(dataset: str | None, **extra: Any) -> AuditRecord:
    return make_record(1, dataset=dataset, extra=extra, purpose="analytics",
                       detail="invalid-sql: column 'ann@x.org' not found")


# (title, record, administered, expected: "shown" | "hidden" | "redacted")
TABLE = [
    # one dataset in the `dataset` field
    ("own dataset", rec("encounters"), ENC, "shown"),
    ("another dataset", rec("patients"), ENC, "hidden"),
    ("a dataset that does not exist (any more)", rec("ghost"), BOTH, "hidden"),
    ("administers nothing", rec("encounters"), NONE, "hidden"),
    # multi-dataset SQL: dataset is null, the list is in extra
    ("SQL over both, administers one", rec(None, sql=SQL, datasets=["patients", "encounters"]), ENC, "hidden"),
    ("SQL over both, administers both", rec(None, sql=SQL, datasets=["patients", "encounters"]), BOTH, "shown"),
    ("SQL over own only", rec(None, sql="select 1 from encounters", datasets=["encounters"]), ENC, "shown"),
    ("plans name another dataset", rec(None, datasets=["encounters"], plans={"patients": "h"}), ENC, "hidden"),
    ("read names another dataset", rec("encounters", read={"patients": {"ssn": "keep"}}), ENC, "hidden"),
    ("cached view of another dataset", rec("encounters", cached=["patients"]), ENC, "hidden"),
    ("dataset field own, list names another", rec("encounters", datasets=["patients"]), ENC, "hidden"),
    # malformed lists count as unknown datasets (fail closed)
    ("datasets is a string", rec(None, datasets="encounters"), BOTH, "hidden"),
    ("datasets holds a non-string", rec(None, datasets=["encounters", 7]), BOTH, "hidden"),
    ("datasets holds an empty name", rec(None, datasets=[""]), BOTH, "hidden"),
    ("plans is a list", rec(None, plans=["encounters"]), BOTH, "hidden"),
    # no dataset at all: shown, redacted
    ("refused before resolution", rec(None, sql=SQL, format="arrow", params=2), ENC, "redacted"),
    ("refused before resolution, administers nothing", rec(None, sql=SQL), NONE, "redacted"),
    ("failed login on the wire", rec(None, protocol="pgwire", user="ann@x.org", database="x"), ENC, "redacted"),
    ("empty datasets list", rec(None, datasets=[]), ENC, "redacted"),
]


@pytest.mark.parametrize(("title", "record", "administered", "expected"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_truth_table(title: str, record: AuditRecord, administered: frozenset[str],
                     expected: str) -> None:
    seen = visible(record, administered)
    if expected == "hidden":
        assert seen is None
    elif expected == "shown":
        assert seen == record  # unchanged, SQL text and all
    else:
        assert seen is not None and seen != record
        assert "ann@x.org" not in repr(seen)


def test_what_redaction_keeps_and_replaces() -> None:
    record = make_record(
        3, dataset=None, principal="alice", purpose="a purpose with ann@x.org", plan_hash=None,
        detail="invalid-sql: column 'ann@x.org' not found", policy_version="pv1",
        extra={"sql": SQL, "filter": "email = 'ann@x.org'", "columns": ["email"],
               "user": "ann@x.org", "database": "analytics", "client_request_id": "ann-x-org",
               "format": "arrow", "protocol": "pgwire", "params": 2, "limit": 10,
               "epsilon": 0.5, "seed": 7, "returned": 0,
               "format_typo": "ann@x.org", "limit_text": "ann"})
    seen = visible(record, ENC)
    assert seen is not None
    assert seen.detail == f"invalid-sql: {REDACTED}"  # the problem slug stays
    assert seen.purpose == REDACTED
    assert seen.extra == {
        "sql": REDACTED, "filter": REDACTED, "columns": REDACTED, "user": REDACTED,
        "database": REDACTED, "client_request_id": REDACTED, "format_typo": REDACTED,
        "limit_text": REDACTED,
        "format": "arrow", "protocol": "pgwire", "params": 2, "limit": 10, "epsilon": 0.5,
        "seed": 7, "returned": 0,
    }
    # who, when, what happened, and the chain fields are untouched
    for name in ("seq", "time", "request_id", "principal", "action", "outcome", "status",
                 "plan_hash", "rows", "bytes", "policy_version", "prev_hash", "hash", "columns"):
        assert getattr(seen, name) == getattr(record, name), name


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        (None, None),
        ("unauthenticated: unknown API key", f"unauthenticated: {REDACTED}"),
        ("no slug here", REDACTED),
        ("Upper-case: is not a slug", REDACTED),
        ("a-b: c", f"a-b: {REDACTED}"),
    ],
)
def test_detail_keeps_only_the_problem_slug(detail: str | None, expected: str | None) -> None:
    seen = visible(make_record(1, dataset=None, detail=detail, extra={}), ENC)
    assert seen is not None and seen.detail == expected


def test_a_request_text_value_under_a_numeric_key_is_redacted() -> None:
    seen = visible(make_record(1, dataset=None, extra={"limit": "ann@x.org", "format": "ann"}), ENC)
    assert seen is not None and seen.extra == {"limit": REDACTED, "format": REDACTED}


def test_a_coalesced_record_keeps_its_summary() -> None:
    summary = {"coalesced": 40, "first_request_id": "r1", "last_request_id": "r40",
               "first_time": "t1", "last_time": "t2", "statuses": {"denied 401": 40}}
    seen = visible(make_record(1, dataset=None, principal=None, extra=summary), ENC)
    assert seen is not None and seen.extra == summary


def test_touched_lists_every_named_dataset() -> None:
    record = rec("a", datasets=["b"], plans={"c": "h"}, read={"d": {}}, cached=["e"])
    assert touched(record) == frozenset("abcde")
    assert touched(rec(None)) == frozenset()
