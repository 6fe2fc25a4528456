"""A differentially private release inside the lifecycle, shared by every surface that offers
one (``POST /v1/datasets/{name}/dp``, DP SQL over HTTP and over the PostgreSQL wire).

Order, so that nothing is charged for an answer the caller does not get and nothing is
recorded as served when it was not::

    authorize (query_dp) → plan + DP plan + budget pre-check → slot, deadline, audit reserve
      → compute (bounded pool) → check the result can be represented (finite numbers)
      → charge the ledger → the caller's representation → the one ``ok`` record

Bounds that could overflow are refused from the request before anything is read. Any failure
once the data is being read (a 5xx, a result that is not a finite number) is charged before it
is raised: a failure that depends on the data is an answer about it and never free (issue 18).
A charge that fails (over budget, ledger down) leaves the computed result unseen. If rendering or the ``ok`` record then fails, no byte of the result has
left the process, so the charge is refunded (``BudgetLedger.refund``, once per request id);
after the record is written the charge stays, whatever happens to the connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa

from govern.deliver.governor import Governor
from govern.deliver.lifecycle import Exchange
from govern.errors import AccessDenied, GovernError, InvalidRequest
from govern.plan.model import AccessPlan
from govern.plan.predicates import referenced_columns
from govern.privacy.dp import sql as dp_sql
from govern.privacy.dp.query import DpQuery
from govern.privacy.dp.service import DpRelease, DpService
from govern.privacy.dp.sql import DpSql

__all__ = ["check_result_policy", "describe_sql", "release_dp", "release_table", "sql_types",
           "suppress_small_groups", "translate_sql"]

R = TypeVar("R")
log = logging.getLogger("govern.deliver")


def release_dp(ex: Exchange, dp: DpService, query: DpQuery, render: Callable[[DpRelease], R]) -> tuple[DpRelease, R]:
    """Release ``query`` for the exchange's principal and purpose; ``render`` builds what the
    surface sends (JSON bytes, wire rows) from the charged release. Blocking."""
    ex.action = "query_dp"
    ex.extra["dp"] = query.describe()
    ex.extra.update(epsilon_spent=0.0, delta_spent=0.0)  # until the charge succeeds
    ex.authorize(query.dataset, "query_dp")
    assert ex.principal is not None and ex.purpose is not None  # authorize() checked both
    prepared = dp.prepare(ex.principal, ex.purpose, query, state=ex.state)
    ex.plan = prepared.access_plan
    check_result_policy(prepared.access_plan, query)  # from the request and the plan only
    ex.admit()
    try:
        result = dp.compute(prepared)
    except BaseException as exc:
        if _failed_on_data(exc):
            _charge_failure(ex, dp, prepared)
        raise
    if not _representable({"rows": result.rows, "privacy": result.privacy()}):
        _charge_failure(ex, dp, prepared)  # computed on the data: the refusal is an answer, so it is paid for
        raise InvalidRequest("the release has a value that is not a finite number (an overflow): use narrower "
                             "bounds; it was computed on the data, so it was charged")
    charged = dp.charge(prepared, ex.request_id)
    ex.extra.update(epsilon_spent=query.epsilon, delta_spent=query.delta,
                    budget_left=charged.status.to_dict()["left"], keys=prepared.plan.key_source,
                    threshold=result.threshold)
    suppressed = suppress_small_groups(prepared.access_plan, query, result.rows)
    if suppressed is not None:
        ex.extra["suppressed_groups"] = suppressed
    release = DpRelease(prepared, result, charged, {**prepared.timings, **result.timings})
    try:
        out = render(release)
        ex.finish(rows=len(result.rows))
    except BaseException:
        _refund(dp, ex.request_id)  # nothing left the process: the release was never seen
        raise
    return release, out


def check_result_policy(plan: AccessPlan, query: DpQuery) -> None:
    """The dataset's result policy on a DP release, decided from the request alone (before
    anything is read or charged): a projection-only column may not be a group key (its values
    would be output) nor appear in the filter (a predicate on it); under ``min_group`` the
    release must include a ``count``, the noisy figure small groups are judged by."""
    policy = plan.result
    if policy is None:
        return
    hidden = set(policy.projection)
    keyed = sorted(hidden & set(query.group_by))
    if keyed:
        raise AccessDenied(f"column(s) {', '.join(keyed)} are projection-only: a release cannot be grouped by them "
                           "(their values would be output)")
    if query.filter and hidden & set(referenced_columns(query.filter)):
        raise AccessDenied("the filter tests a projection-only column: a predicate on it answers questions about "
                           "its values")
    if policy.min_group is not None and not any(a.function == "count" for a in query.aggregates):
        raise InvalidRequest(f"this dataset has a minimum group size ({policy.min_group.k}): include a count "
                             "aggregate — small groups are judged by its noisy value")


def suppress_small_groups(plan: AccessPlan, query: DpQuery, rows: list[dict[str, Any]]) -> int | None:
    """Drop, after the charge, the groups whose *released* noisy count is below ``min_group``'s
    k (whatever its ``semantics``: a charged release cannot be refused without the refusal
    becoming an oracle, and a remainder would need a second release). The decision uses only
    released DP values, so it is post-processing: it costs no budget and reveals nothing the
    release did not. ``None`` when no ``min_group`` applies."""
    policy = plan.result
    if policy is None or policy.min_group is None:
        return None
    k = policy.min_group.k
    counts = [a.output_name for a in query.aggregates if a.function == "count"]
    per_unit = query.contributions if policy.min_group.count == "units" else 1

    def small(row: dict[str, Any]) -> bool:
        values = [v.get("value") if isinstance(v, dict) else v for v in (row.get(c) for c in counts)]
        return any(v is None or v / per_unit < k for v in values)

    kept = [row for row in rows if not small(row)]
    suppressed = len(rows) - len(kept)
    rows[:] = kept
    return suppressed


def _failed_on_data(exc: BaseException) -> bool:
    """Whether a failure of the compute step may depend on the data, and so must be paid for:
    anything but a refusal decided from the request, the plan or the load (4xx: bad bounds or
    keys, no slot, the deadline)."""
    if isinstance(exc, GovernError):
        return exc.status >= 500
    return isinstance(exc, Exception)


def _charge_failure(ex: Exchange, dp: DpService, prepared: Any) -> None:
    """Charge a release that failed once the data was being read: a failure that depends on the
    data is an answer about it, so it is never free (over-counting is the safe direction)."""
    try:
        dp.charge(prepared, ex.request_id)
    except GovernError:  # over budget or the ledger down: the original failure is what the caller sees
        log.warning("a failed release could not be charged", extra={"request_id": ex.request_id})
        return
    ex.extra.update(epsilon_spent=prepared.query.epsilon, delta_spent=prepared.query.delta, charged_failure=True)


def _refund(dp: DpService, request_id: str) -> None:
    try:
        dp.ledger.refund(request_id)
    except GovernError:  # the ledger is down too: the charge stays (over-counting is safe)
        log.warning("a charge for an unreleased result could not be refunded", extra={"request_id": request_id})


def _representable(release: dict[str, Any]) -> bool:
    """Whether every value of a computed release — a statistic, an interval or a noise scale —
    is a finite number a surface can send (JSON has no infinity or NaN, and neither should a
    release). Bounds that could overflow are refused from the request before anything is read
    (``dp.compile``), so this is defence in depth."""
    try:
        json.dumps(release, allow_nan=False, default=str)
    except ValueError:
        return False
    return True


def translate_sql(ex: Exchange, text: str, *, epsilon: float | None, delta: float = 0.0, contributions: int = 1,
                  bounds: dict[str, list[float]] | None = None) -> DpSql:
    """DP SQL → the query (``SqlError`` outside the subset), under the exchange's policy."""
    return dp_sql.translate(text, set(ex.state.policy.datasets), epsilon=epsilon, delta=delta,
                            contributions=contributions, bounds=bounds)


def sql_types(translated: DpSql, release: DpRelease) -> list[str]:
    """Arrow type names of the DP SQL result columns (counts are integers, the rest doubles)."""
    functions = {a.output_name: a.function for a in translated.query.aggregates}
    types = release.prepared.plan.types
    return [types.get(src) or ("int64" if functions.get(src) == "count" else "double")
            for _display, src in translated.outputs]


def release_table(ex: Exchange, dp: DpService, translated: DpSql) -> pa.Table:
    """Release DP SQL as the rows a SQL surface sends (the PostgreSQL wire, Flight SQL): group
    columns, then one noisy value per aggregate, typed as :func:`sql_types` says."""

    def render(release: DpRelease) -> pa.Table:
        names, values, _intervals = dp_sql.result_table(translated, release.result.rows)
        types = [_arrow(t) for t in sql_types(translated, release)]
        columns = [pa.array([row[i] for row in values], types[i]) for i in range(len(names))]
        return pa.Table.from_arrays(columns, schema=pa.schema([pa.field(n, t) for n, t in zip(names, types,
                                                                                               strict=True)]))

    _release, table = release_dp(ex, dp, translated.query, render)
    return table


def describe_sql(ex: Exchange, governor: Governor, translated: DpSql) -> pa.Schema:
    """The result schema of DP SQL without releasing anything (nothing is computed or charged)."""
    ex.authorize(translated.query.dataset, "query_dp")
    schema = governor.schema(translated.query.dataset, ex.state)
    functions = {a.output_name: a.function for a in translated.query.aggregates}
    fields = []
    for display, src in translated.outputs:
        if src in schema.names and src not in functions:
            fields.append(pa.field(display, schema.field(src).type))
        else:
            fields.append(pa.field(display, pa.int64() if functions.get(src) == "count" else pa.float64()))
    return pa.schema(fields)


def _arrow(name: str) -> pa.DataType:
    try:
        return pa.type_for_alias(name)
    except ValueError:
        return pa.string()
