"""Only one media-server node runs the scheduler: a lease in the real Redis (scripts/services starts it)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis

from media_server.leader import RedisLease, SingleNodeLease, build_lease

pytestmark = pytest.mark.integration

URL = os.environ.get("KUZET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def lease_name() -> str:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {URL} is not reachable (scripts/services starts it): {exc}")
    return f"test-{uuid.uuid4().hex}"


def test_one_holder_renewal_and_release(lease_name: str) -> None:
    a, b = RedisLease(URL, lease_name, 5000), RedisLease(URL, lease_name, 5000)
    assert a.acquire() is True
    assert b.acquire() is False
    assert a.acquire() is True  # the holder renews
    a.release()
    assert b.acquire() is True
    assert a.acquire() is False
    b.release()


def test_a_silent_holder_loses_the_lease(lease_name: str) -> None:
    a, b = RedisLease(URL, lease_name, 200), RedisLease(URL, lease_name, 200)
    assert a.acquire() and not b.acquire()
    time.sleep(0.35)
    assert b.acquire() is True
    a.release()  # a no longer holds it: releasing must not drop b's lease
    assert a.acquire() is False
    b.release()


def test_without_redis_this_node_is_the_only_one() -> None:
    lease = build_lease("", "scheduler", 1000)
    assert isinstance(lease, SingleNodeLease) and lease.acquire()
