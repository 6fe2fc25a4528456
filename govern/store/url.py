"""The one parser of store targets, shared by ``audit_url`` and ``ledger_url``.

- ``postgresql://…`` or ``postgres://…``: PostgreSQL (tables ``<prefix>…``);
- ``sqlite:///relative/file.db`` or ``sqlite:////absolute/file.db`` (SQLAlchemy's convention),
  or a plain path: SQLite.
"""

from __future__ import annotations

from pathlib import Path

from govern.errors import InvalidRequest


def parse_target(target: str | Path, what: str) -> Path | str:
    """A SQLite file's path, or a PostgreSQL DSN (a ``str``). ``what`` names the setting in
    error messages ("audit", "ledger")."""
    if isinstance(target, Path):
        return target
    if target.startswith(("postgresql://", "postgres://")):
        return target
    if target.startswith("sqlite://"):
        path = target.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise InvalidRequest(f"a SQLite {what} URL looks like sqlite:///relative.db or "
                                 "sqlite:////absolute/path.db")
        return Path(path[1:])
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise InvalidRequest(f"unsupported {what} store {scheme!r}: use sqlite:/// or postgresql://")
    return Path(target)

