"""Differential privacy with OpenDP: the stages of one release, one module each.

``query`` (what the caller asks, from JSON or DP SQL) → ``sql`` (the DP SQL subset → query) →
``compile`` (against the access plan and catalog → :class:`DpPlan`, pure) → ``execute`` (OpenDP
polars context → noisy values and intervals) → ``service`` (decide, read, compute in a bounded
pool, charge the ledger). The budget ledger itself is :mod:`govern.privacy.budget.ledger`.
"""
