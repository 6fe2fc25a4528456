"""One conformance suite for every surface: a real ``govern serve`` per module (HTTP, the
PostgreSQL wire and Flight SQL, Delta Sharing under /delta-sharing), the demo's principals and
purposes, and readers that turn each protocol's answer into an Arrow table by the type mapping
documented in docs/sharing.md#conformance."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.policy.model import local_principal
from tests.flight.conftest import copy_world
from tests.gateway import Server, start_server, stop_server

# Principals and purposes that never see raw names, e-mails, SSNs or birth dates (dave treats
# his own region's patients and sees them; carol administers).
NO_RAW = {("alice", "analytics"), ("bob", "model-training"), ("bob", "research")}


@pytest.fixture(scope="module")
def served(demo_world, tmp_path_factory) -> Iterator[Server]:
    world = copy_world(demo_world.directory, tmp_path_factory.mktemp("conformance") / "world")
    server = start_server(world)
    yield server
    stop_server(server)


def cases(demo_world) -> list[tuple[str, str]]:
    """Every demo principal with every purpose it may use, and eve (no purpose at all)."""
    gov = Governor(load_settings(demo_world.config, watch_policies=False))
    out = [(who, purpose) for who in sorted(gov.state.policy.principals)
           for purpose in gov.state.decider.purposes(local_principal(gov.state.policy, who))]
    return [*out, ("eve", "analytics")]  # eve may use no purpose: refused everywhere
