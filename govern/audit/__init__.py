"""Append-only, hash-chained audit log, anchored by signed checkpoints: the last step of every
request (ARCHITECTURE §7.4).

``record`` is the data, ``verify`` the pure chain check, ``checkpoint`` the signed anchors kept
outside the store, ``store`` the tables and statements (over :mod:`govern.store`), ``writer``
the group commit, ``log`` the contract and the factory, ``visibility`` what a steward may see.
"""

from __future__ import annotations

from govern.audit.checkpoint import Anchor, Checkpoint
from govern.audit.log import AuditLog, PostgresAuditLog, SQLiteAuditLog, open_anchor, open_audit_log
from govern.audit.record import GENESIS_HASH, AuditRecord
from govern.audit.verify import VerifyResult, verify_chain
from govern.audit.visibility import visible

__all__ = [
    "GENESIS_HASH",
    "Anchor",
    "AuditLog",
    "AuditRecord",
    "Checkpoint",
    "PostgresAuditLog",
    "SQLiteAuditLog",
    "VerifyResult",
    "open_anchor",
    "open_audit_log",
    "verify_chain",
    "visible",
]
