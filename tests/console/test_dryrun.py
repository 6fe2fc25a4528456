"""The dry run's replay on hand-made audit records: what each kind of record becomes under a
proposed policy (served → refused, refused → served, other columns, skipped and why)."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq

from govern.audit.record import AuditRecord
from govern.console import dryrun
from govern.console.access import effective_access, subjects
from govern.policy.decide import Decider
from govern.policy.load import load_policy
from tests.conftest import edit


def rec(principal: str | None, purpose: str | None, dataset: str | None, action: str = "read", outcome: str = "ok",
        status: int = 200, columns: dict | None = None, extra: dict | None = None) -> AuditRecord:
    return AuditRecord(seq=1, time="2026-12-06T10:00:00.000000Z", request_id="r", principal=principal,
                       purpose=purpose, dataset=dataset, action=action, outcome=outcome, status=status,
                       plan_hash=None, columns=columns or {}, extra=extra or {}, prev_hash="", hash="")


def test_replay_sorts_each_record(world) -> None:
    proposed = world.directory / "proposed"
    shutil.copytree(world.directory / "policies", proposed)
    edit(proposed / "policy.csv", "p, analyst, group:clinical, read, analytics, allow",
         "p, analyst, dataset:encounters, read, analytics, allow")
    edit(proposed / "policy.csv", "p, clinician, tag:phi, unmask, treatment, allow\n", "")
    edit(proposed / "policy.csv", "g, carol, steward", "g, carol, steward\np, data-scientist, dataset:encounters, query_dp, research, allow")
    policy = load_policy(proposed)
    decider = Decider(policy)
    schemas = {n: pq.read_schema(world.directory / "data" / f"{n}.parquet") for n in ("patients", "encounters")}
    records = [
        rec("alice", "analytics", "patients", columns={"zip": "mask:generalize"}),  # refused now
        rec("alice", "analytics", None, action="sql", extra={"datasets": ["patients", "encounters"]}),
        rec("dave", "treatment", "patients", columns={"diagnosis": "keep", "zip": "keep"}),  # phi masked now
        rec("bob", "research", "encounters", action="query_dp", outcome="denied", status=403),  # served now
        rec("alice", "analytics", "patients", outcome="denied", status=401),  # not a policy refusal
        rec(None, None, None, action="request", outcome="denied", status=401),
        rec("oidc:x", "analytics", "patients"),
        rec("carol", "governance", None, action="console_view"),
    ]
    for known in (None, dryrun.read_plans(effective_access(policy, decider, schemas, subjects(policy)))):
        result = dryrun.replay(records, policy, decider, schemas, known=known)
        assert (result.considered, result.replayed) == (8, 4)
        assert {(g.principal, g.dataset, g.action, g.records) for g in result.refused} == {
            ("alice", "patients", "read", 1), ("alice", "patients", "sql", 1)}
        assert result.breaking == ["alice"]
        assert [(g.principal, g.columns) for g in result.changed] == [
            ("dave", {"diagnosis": ("keep", "mask:randomized_response")})]
        assert [(g.principal, g.dataset) for g in result.admitted] == [("bob", "encounters")]
        assert result.skipped == {"refused for another reason than policy": 1, "not a data request": 2,
                                  "identity-provider principal (attributes come with its token)": 1}
        assert dryrun.column_kind("keep", "mask:randomized_response") == "loss"
