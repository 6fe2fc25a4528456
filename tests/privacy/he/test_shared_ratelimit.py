"""The HE release rate limit holds across gateway processes sharing PostgreSQL (issue 17): two
limiters on separate connections (as two instances behind a load balancer) share one window."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from govern.errors import RateLimited
from govern.privacy.he.ratelimit import SharedRateLimiter
from tests.audit.conftest import PG_URL, pg_execute, require_pg


@pytest.fixture
def prefix() -> Iterator[str]:
    require_pg()
    name = f"govern_test_{uuid.uuid4().hex[:10]}_"
    yield name
    pg_execute(f"DROP TABLE IF EXISTS {name}release_events, {name}release_principals")


def test_two_instances_share_one_window(prefix: str) -> None:
    one = SharedRateLimiter(PG_URL, prefix, 3, window=1.5)
    two = SharedRateLimiter(PG_URL, prefix, 3, window=1.5)
    try:
        one.take("alice")
        two.take("alice")
        one.take("alice")
        with pytest.raises(RateLimited) as refused:
            two.take("alice")  # an in-process limiter per instance would have allowed 6
        assert refused.value.status == 429 and refused.value.extra["retry_after"] >= 1
        two.take("bob")  # per principal
        time.sleep(1.6)
        two.take("alice")  # the window slid
    finally:
        one.close()
        two.close()
