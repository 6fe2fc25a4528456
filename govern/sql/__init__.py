"""Analyst SQL over masked views: validate, resolve, prune, run in a DuckDB sandbox.

See :mod:`govern.sql.engine` for the pipeline and docs/sql.md for what analysts can do.
"""

from govern.sql.engine import SqlEngine, SqlResult

__all__ = ["SqlEngine", "SqlResult"]
