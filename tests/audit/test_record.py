"""The record's dict form: exactly what dataclasses.asdict gives, which the hash is made of."""

from __future__ import annotations

from dataclasses import asdict

from hypothesis import given
from hypothesis import strategies as st

from govern.audit.record import AuditRecord

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@given(columns=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4),
       extra=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
       detail=st.none() | st.text(max_size=10), version=st.none() | st.text(max_size=6))
def test_to_dict_is_asdict_and_a_copy(columns: dict, extra: dict, detail: str | None, version: str | None) -> None:
    rec = AuditRecord(seq=3, time="t", request_id="r", principal="alice", purpose="p", dataset="d",
                      action="read", outcome="ok", status=200, plan_hash="h", columns=columns, rows=1,
                      bytes=2, detail=detail, extra=extra, prev_hash="a", hash="b", policy_version=version)
    out = rec.to_dict()
    assert out == asdict(rec)
    assert list(out) == list(asdict(rec))  # same order: canonical JSON sorts, but callers may not
    before = asdict(rec)
    out["extra"]["added"] = 1
    out["columns"]["added"] = "x"
    for value in out["extra"].values():
        if isinstance(value, (list, dict)):
            value.clear()
    assert asdict(rec) == before  # the record's own values are untouched
