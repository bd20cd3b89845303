"""The login backoff holds across nodes: failures counted on one node slow the guesser on another.

Two `LoginThrottle`s stand for two serve nodes; with `redis.url` set they share their failures in the
real Redis (scripts/services starts it). The in-memory store is the embedded default (one node)."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from media_server.security import LoginThrottle, MemoryFailures, RedisFailures, build_login_throttle
from media_server.settings import SecuritySettings, Settings

pytestmark = pytest.mark.integration

URL = os.environ.get("KUZET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _nodes(kind: str, settings: SecuritySettings, clock: Clock) -> tuple[LoginThrottle, LoginThrottle]:
    if kind == "memory":
        shared = MemoryFailures(settings)
        return LoginThrottle(settings, clock, shared), LoginThrottle(settings, clock, shared)
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {URL} is not reachable (scripts/services starts it): {exc}")
    prefix = f"test-login-{uuid.uuid4().hex}:"
    return (
        LoginThrottle(settings, clock, RedisFailures(settings, URL, prefix)),
        LoginThrottle(settings, clock, RedisFailures(settings, URL, prefix)),
    )


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_failures_on_one_node_back_off_the_other(kind: str) -> None:
    settings = SecuritySettings()
    clock = Clock()
    node_a, node_b = _nodes(kind, settings, clock)
    key = LoginThrottle.key("Reviewer", "10.0.0.7")
    for _ in range(settings.login_max_failures):
        assert node_a.retry_after_s(key) == 0.0
        node_a.failed(key)
    # the guesser moves to the other node: the same wait applies there
    assert node_b.retry_after_s(key) == pytest.approx(settings.login_backoff_base_s)
    assert node_b.retry_after_s(LoginThrottle.key("reviewer", "10.0.0.8")) == 0.0  # other address
    clock.now += settings.login_backoff_base_s + 0.1
    assert node_b.retry_after_s(key) == 0.0
    node_b.failed(key)
    assert node_a.retry_after_s(key) == pytest.approx(2 * settings.login_backoff_base_s)  # doubled
    node_a.succeeded(key)
    assert node_b.retry_after_s(key) == 0.0


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_failures_expire_after_the_window(kind: str) -> None:
    settings = SecuritySettings()
    clock = Clock()
    node_a, node_b = _nodes(kind, settings, clock)
    key = LoginThrottle.key("auditor", "10.0.0.9")
    for _ in range(settings.login_max_failures):
        node_a.failed(key)
    assert node_b.retry_after_s(key) > 0
    clock.now += settings.login_failure_window_s + 1
    assert node_b.retry_after_s(key) == 0.0
    node_b.failed(key)  # a new window starts at one failure
    assert node_a.retry_after_s(key) == 0.0


def test_redis_is_chosen_when_configured_and_an_outage_throttles_per_node() -> None:
    assert isinstance(build_login_throttle(Settings())._store, MemoryFailures)  # embedded default
    shared = build_login_throttle(Settings(redis={"url": URL}))
    assert isinstance(shared._store, RedisFailures)
    settings = SecuritySettings()
    down = LoginThrottle(settings, Clock(), RedisFailures(settings, "redis://127.0.0.1:1/0"))
    key = LoginThrottle.key("officer", "10.0.0.10")
    for _ in range(settings.login_max_failures):
        down.failed(key)  # no exception reaches the login: the node counts locally
    assert down.retry_after_s(key) == pytest.approx(settings.login_backoff_base_s)
