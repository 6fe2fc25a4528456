"""Append-only, hash-chained audit log: the last step of every request (ARCHITECTURE §7.4).

``record`` is the data, ``verify`` the pure chain check, ``log`` the contract and the factory;
``sqlite`` (embedded default) and ``postgres`` (shared by several gateway processes) store it.
"""

from __future__ import annotations

from govern.audit.log import AuditLog, PostgresAuditLog, SQLiteAuditLog, open_audit_log
from govern.audit.record import GENESIS_HASH, AuditRecord
from govern.audit.verify import VerifyResult, verify_chain

__all__ = [
    "GENESIS_HASH",
    "AuditLog",
    "AuditRecord",
    "PostgresAuditLog",
    "SQLiteAuditLog",
    "VerifyResult",
    "open_audit_log",
    "verify_chain",
]
