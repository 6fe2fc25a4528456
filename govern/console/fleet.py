"""Fleet: which policy version each gateway instance enforces, and since when.

:func:`instances` is the one place the console asks; today it reports this instance only.
Multi-instance reporting extends it (e.g. by reading the versions other instances publish),
keeping :class:`InstanceStatus` as the row the Fleet page shows.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from govern.deliver.gateway import Gateway

__all__ = ["InstanceStatus", "instances", "this_instance"]


@dataclass(frozen=True)
class InstanceStatus:
    name: str  # host:pid (or what another instance calls itself)
    policy_version: str  # the version it enforces now
    since: datetime  # when that version took effect there
    problems: tuple[str, ...] = ()  # a refused policy edit it keeps reporting (last known good serves)
    this: bool = False  # the instance serving this page
    url: str | None = None


def this_instance(gateway: Gateway, started: datetime) -> InstanceStatus:
    """This process: the policy it serves, since the reload that installed it (or ``started``)."""
    status = gateway.reloader.status() if gateway.reloader is not None else None
    version = gateway.governor.state.policy.version
    since = started
    problems: tuple[str, ...] = ()
    if status is not None:
        problems = tuple(str(p) for p in status.problems)
        if status.version == version:
            since = datetime.fromtimestamp(status.loaded_at, UTC)
    return InstanceStatus(f"{socket.gethostname()}:{os.getpid()}", version, since, problems, this=True,
                          url=f"http://{gateway.settings.host}:{gateway.settings.port}")


def instances(gateway: Gateway, started: datetime) -> list[InstanceStatus]:
    """Every instance the console knows of, this one first."""
    return [this_instance(gateway, started)]
