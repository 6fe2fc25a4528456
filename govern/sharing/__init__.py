"""Delta Sharing (delta-io/delta-sharing ``PROTOCOL.md``) over masked materializations.

A recipient is a principal with a purpose: **a share is a purpose** the principal may act under,
with one schema (:data:`SCHEMA`) whose tables are the datasets it may ``read`` under that
purpose. Files are masked materializations (:mod:`govern.deliver.materialize`) served by govern
itself under short-lived plan-bound tickets (:mod:`govern.identity.tickets`). The HTTP routes are
in :mod:`govern.server.routes.sharing`; this package holds the protocol's pieces (schemas, ids,
versions, response lines) and the recipient's profile file. See docs/sharing.md.
"""

from __future__ import annotations

from govern.sharing.protocol import FILE_TICKET, PROFILE_TICKET, SCHEMA

__all__ = ["FILE_TICKET", "PROFILE_TICKET", "SCHEMA"]
