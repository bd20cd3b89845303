"""Which media-server node runs the periodic jobs (schedule tick, spool flush is per node).

With several nodes behind a load balancer only one may materialise sessions and book missed windows.
With Redis configured (KUZET_REDIS__URL) the nodes elect one holder of a short lease (SET NX PX, renewed
only by its holder); without it a single node is assumed and the lease is always held.
"""

from __future__ import annotations

import secrets
from typing import Protocol

# Renew only if we still hold the lease: compare-and-extend in one atomic step.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    """A lease some node holds; `acquire` takes or renews it and says whether this node holds it."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class SingleNodeLease:
    """No coordination configured: this node is the only one."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


class RedisLease:
    """A lease in Redis: one holder at a time, lost when the holder stops renewing within `ttl_ms`."""

    def __init__(self, url: str, name: str, ttl_ms: int) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._key = f"kuzet:lease:{name}"
        self._token = secrets.token_hex(16)
        self._ttl_ms = ttl_ms

    def acquire(self) -> bool:
        if self._redis.set(self._key, self._token, nx=True, px=self._ttl_ms):
            return True
        return bool(self._redis.eval(_RENEW, 1, self._key, self._token, self._ttl_ms))

    def release(self) -> None:
        self._redis.eval(_RELEASE, 1, self._key, self._token)


def build_lease(redis_url: str, name: str, ttl_ms: int) -> Lease:
    """A Redis lease when a URL is configured, otherwise the single-node lease."""
    return RedisLease(redis_url, name, ttl_ms) if redis_url else SingleNodeLease()
