"""govern_spark: govern's access plans enforced in Spark.

Tier 1: ``spark.read.format("govern")`` (:mod:`govern_spark.source`, after :func:`register`)
reads through the gateway: the gateway masks, Spark's executors fetch fragments with
plan-bound tickets and never hold an API key, storage credentials or masking keys. It is the
security boundary against whoever runs the cluster.

Tier 2: :func:`apply_plan` turns an :class:`~govern.plan.model.AccessPlan`
into Spark Column expressions over a raw DataFrame — one projection, masks Spark cannot compute
exactly run as govern's own Arrow kernels in ``mapInArrow`` — with the gateway's exact bytes.
Keys are read on the executors from a :class:`KeySource`, never placed in the query plan. It is
for trusted operator clusters, *not* a boundary against the cluster's owner (see README.md).
"""

from __future__ import annotations

from govern_spark.apply import Assignment, apply_plan, assign, explain_assignment, to_arrow
from govern_spark.keys import KeySource
from govern_spark.source import GatewayError, GovernDataSource, register
from govern_spark.types import arrow_type, cast_to_plan, spark_schema, spark_type

__all__ = [
    "Assignment",
    "GatewayError",
    "GovernDataSource",
    "KeySource",
    "apply_plan",
    "arrow_type",
    "assign",
    "cast_to_plan",
    "explain_assignment",
    "register",
    "spark_schema",
    "spark_type",
    "to_arrow",
]
