"""HTTP hardening installed by `create_app` with one call, `install(app, settings)`:

* security headers on the reviewer workstation (`/ws`) and on every response (nosniff, framing);
* cookies forced HttpOnly + SameSite=Strict, and Secure over HTTPS (`security.cookie_secure`);
* `/metrics` either moved to a separate internal port (`security.metrics_port`) or behind a bearer
  token (`security.metrics_token`);
* one-time check-in links (`ck_...`) redacted from uvicorn's access log;
* the per username+IP login throttle (`LoginThrottle`, on `app.state.login_throttle`; shared through
  Redis by every node when `redis.url` is set);
* /docs and /redoc from packaged assets, not a CDN (`media_server.api_docs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from media_server.services import Services
from media_server.settings import SecuritySettings, Settings
from media_server.tokens import bearer

log = logging.getLogger("kuzet.security")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Headers every response carries.
COMMON_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# The workstation's pages: server-rendered; the one script is the package's own /ws/static/ws.js (the
# challenge timeline seeks the video), no inline script; inline styles; evidence media from /ws.
WORKSTATION_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "media-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}
# Pages whose URL or content must never be cached or framed (the check-in page sets its own CSP).
NO_STORE_PREFIXES = ("/ws", "/checkin/", "/call/", "/api/v1/auth/")
_CHECKIN_TOKEN = re.compile(r"(/checkin/|/call/)[A-Za-z0-9._~-]+")
REDACTED = "<redacted>"


# -- login throttle -------------------------------------------------------------------------------


@dataclass
class _Failures:
    count: int
    first_at: float
    last_at: float


class FailureStore(Protocol):
    """Where failed logins are counted: in this process, or in Redis shared by every node."""

    def get(self, key: tuple[str, str], now: float) -> _Failures | None: ...

    def add(self, key: tuple[str, str], now: float) -> None: ...

    def clear(self, key: tuple[str, str]) -> None: ...


class MemoryFailures:
    """One node's failures (the embedded default): an LRU bounded by `login_throttle_max_keys`."""

    def __init__(self, settings: SecuritySettings) -> None:
        self._settings = settings
        self._entries: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def _current(self, key: tuple[str, str], now: float) -> _Failures | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last_at > self._settings.login_failure_window_s:
            del self._entries[key]
            return None
        return entry

    def get(self, key: tuple[str, str], now: float) -> _Failures | None:
        with self._lock:
            entry = self._current(key, now)
            return None if entry is None else _Failures(entry.count, entry.first_at, entry.last_at)

    def add(self, key: tuple[str, str], now: float) -> None:
        with self._lock:
            entry = self._current(key, now)
            if entry is None:
                self._entries[key] = _Failures(1, now, now)
            else:
                entry.count += 1
                entry.last_at = now
                self._entries.move_to_end(key)
            while len(self._entries) > self._settings.login_throttle_max_keys:
                self._entries.popitem(last=False)

    def clear(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)


# KEYS[1] = the pair's hash; ARGV = now (s), window (ms). One atomic step per failure on any node.
_ADD_FAILURE = """
local last = redis.call('hget', KEYS[1], 'last_at')
if (not last) or (tonumber(ARGV[1]) - tonumber(last)) * 1000 > tonumber(ARGV[2]) then
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[1], 'count', 1, 'first_at', ARGV[1], 'last_at', ARGV[1])
else
  redis.call('hincrby', KEYS[1], 'count', 1)
  redis.call('hset', KEYS[1], 'last_at', ARGV[1])
end
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
"""


class RedisFailures:
    """Failures shared by every node through Redis (`redis.url` set): a guesser spreading attempts over
    several nodes meets the same backoff. Keys are hashed (no usernames in Redis) and expire with the
    window. Time is wall-clock seconds, the one clock the nodes share."""

    def __init__(self, settings: SecuritySettings, url: str, prefix: str = "kuzet:login:") -> None:
        import redis

        self._settings = settings
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._prefix = prefix
        # Redis unreachable: this node keeps throttling on its own rather than refusing every login.
        self._fallback = MemoryFailures(settings)

    def _unreachable(self, exc: Exception) -> None:
        log.warning("login throttle: Redis unreachable (%s); throttling on this node only", exc)

    def _name(self, key: tuple[str, str]) -> str:
        digest = hashlib.sha256("\x1f".join(key).encode("utf-8", "surrogatepass")).hexdigest()
        return self._prefix + digest

    def get(self, key: tuple[str, str], now: float) -> _Failures | None:
        try:
            raw = self._redis.hgetall(self._name(key))
        except self._errors as exc:
            self._unreachable(exc)
            return self._fallback.get(key, now)
        if not raw:
            return None
        entry = _Failures(int(raw[b"count"]), float(raw[b"first_at"]), float(raw[b"last_at"]))
        if now - entry.last_at > self._settings.login_failure_window_s:
            return None
        return entry

    def add(self, key: tuple[str, str], now: float) -> None:
        window_ms = int(self._settings.login_failure_window_s * 1000)
        try:
            self._redis.eval(_ADD_FAILURE, 1, self._name(key), repr(now), window_ms)
        except self._errors as exc:
            self._unreachable(exc)
            self._fallback.add(key, now)

    def clear(self, key: tuple[str, str]) -> None:
        self._fallback.clear(key)
        try:
            self._redis.delete(self._name(key))
        except self._errors as exc:
            self._unreachable(exc)


class LoginThrottle:
    """Exponential backoff per (username, client IP): after `login_max_failures` failures within
    `login_failure_window_s`, each new attempt must wait `base * 2**extra` seconds (capped) after the
    last failure. A success clears the pair. The failures live in `store`: this process's memory by
    default, Redis (shared by all nodes) when `redis.url` is configured (see `build_login_throttle`)."""

    def __init__(
        self,
        settings: SecuritySettings,
        clock: Callable[[], float] = time.monotonic,
        store: FailureStore | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._store: FailureStore = store if store is not None else MemoryFailures(settings)
        # A login flood must not run 40 argon2 hashes (64 MiB each) at once: they queue here.
        self.hash_slots = threading.BoundedSemaphore(settings.login_max_parallel_hashes)

    @staticmethod
    def key(username: str, client_ip: str | None) -> tuple[str, str]:
        """The throttled pair: the username as typed (case-folded) and the client address."""
        return username.strip().casefold(), client_ip or "-"

    def retry_after_s(self, key: tuple[str, str]) -> float:
        """Seconds before this pair may try again (0: now)."""
        s = self._settings
        now = self._clock()
        entry = self._store.get(key, now)
        if entry is None or entry.count < s.login_max_failures:
            return 0.0
        extra = entry.count - s.login_max_failures
        wait = min(s.login_backoff_base_s * 2.0 ** min(extra, 30), s.login_backoff_max_s)
        return max(0.0, entry.last_at + wait - now)

    def failed(self, key: tuple[str, str]) -> None:
        """Count a failed attempt."""
        self._store.add(key, self._clock())

    def succeeded(self, key: tuple[str, str]) -> None:
        """Forget the pair's failures."""
        self._store.clear(key)


def build_login_throttle(settings: Settings) -> LoginThrottle:
    """Shared through Redis when the deployment has it (several nodes), per process otherwise."""
    if settings.redis.url:
        return LoginThrottle(
            settings.security, clock=time.time, store=RedisFailures(settings.security, settings.redis.url)
        )
    return LoginThrottle(settings.security)


def login_throttle(app_state: Any) -> LoginThrottle:
    """The app's throttle (made by `install`; a fresh default one for apps built without it)."""
    throttle: LoginThrottle | None = getattr(app_state, "login_throttle", None)
    if throttle is None:
        throttle = LoginThrottle(SecuritySettings())
        app_state.login_throttle = throttle
    return throttle


# -- access log -----------------------------------------------------------------------------------


def redact_checkin_links(text: str) -> str:
    """`/checkin/<token>` with the token replaced: a link in a log is a usable credential."""
    return _CHECKIN_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)


class RedactCheckinLinks(logging.Filter):
    """Rewrites uvicorn access-log records (and any message) so one-time links never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_checkin_links(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "/checkin/" in record.msg:
            record.msg = redact_checkin_links(record.msg)
        return True


def install_log_redaction() -> None:
    """Attach the redaction filter to uvicorn's access and error loggers (once per process)."""
    for name in ("uvicorn.access", "uvicorn.error", "kuzet"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCheckinLinks) for f in logger.filters):
            logger.addFilter(RedactCheckinLinks())


# -- headers, cookies, /metrics ---------------------------------------------------------------------


def _is_https(scope: Scope) -> bool:
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-proto":
            return bool(value.split(b",")[0].strip().lower() == b"https")
    return False


def harden_cookie(value: bytes, secure: bool) -> bytes:
    """A Set-Cookie value with HttpOnly and SameSite=Strict (unless it names a SameSite), and Secure."""
    lowered = value.lower()
    out = value
    if b"httponly" not in lowered:
        out += b"; HttpOnly"
    if b"samesite" not in lowered:
        out += b"; SameSite=strict"
    if secure and b"; secure" not in lowered:
        out += b"; Secure"
    return out


class SecurityMiddleware:
    """Pure ASGI (bodies stream through untouched): headers, cookie flags and the /metrics guard."""

    def __init__(self, app: ASGIApp, settings: SecuritySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == "/metrics":
            refusal = self._metrics_refusal(scope)
            if refusal is not None:
                await _send_json(send, *refusal)
                return
        https = _is_https(scope)
        secure = self.settings.cookie_secure == "always" or (self.settings.cookie_secure == "auto" and https)
        extra = dict(COMMON_HEADERS)
        if path.startswith(NO_STORE_PREFIXES):
            extra["Cache-Control"] = "no-store"
        if path == "/ws" or path.startswith("/ws/"):
            extra.update(WORKSTATION_HEADERS)

        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = []
                present = set()
                for name, value in message.get("headers", []):
                    if name.lower() == b"set-cookie":
                        value = harden_cookie(value, secure)
                    present.add(name.lower())
                    headers.append((name, value))
                for name_s, value_s in extra.items():
                    name_b = name_s.lower().encode()
                    if name_b == b"cache-control" and name_b in present:
                        headers = [(n, v) for n, v in headers if n.lower() != name_b]
                    elif name_b in present:
                        continue  # the route's own (e.g. the check-in page's CSP) wins
                    headers.append((name_b, value_s.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_hardened)

    def _metrics_refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        if self.settings.metrics_port is not None:
            return 404, "not_found", "metrics are served on the internal metrics port"
        token = self.settings.metrics_token.get_secret_value()
        if not token:
            return None
        header: str | None = None
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                header = value.decode("latin-1")
        presented = bearer(header)
        if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
            return 401, "unauthorized", "metrics need the metrics bearer token"
        return None


async def _send_json(send: Send, status: int, code: str, message: str) -> None:
    import json

    body = json.dumps({"error": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the separate metrics port ----------------------------------------------------------------------


def metrics_app(registry_of: Callable[[], CollectorRegistry]) -> ASGIApp:
    """A tiny ASGI app answering GET /metrics from the registry `registry_of()` returns."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") != "/metrics":
            await _send_json(send, 404, "not_found", "only /metrics is served here")
            return
        body = generate_latest(registry_of())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _install_metrics_port(app: FastAPI, settings: SecuritySettings) -> None:
    import uvicorn

    port = settings.metrics_port
    if port is None:
        return
    holder: dict[str, Any] = {}

    async def start(services: Services) -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                metrics_app(lambda: services.metrics.registry),
                host=settings.metrics_host,
                port=port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
        )
        # The main server owns the process's signals: this one must not capture them.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        holder["server"] = server
        holder["task"] = asyncio.create_task(server.serve())
        app.state.metrics_server = server
        log.info("metrics served on a separate port", extra={"host": settings.metrics_host, "port": port})

    async def stop(services: Services) -> None:
        server = holder.get("server")
        if server is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(holder["task"], timeout=5)

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)


def install(app: FastAPI, settings: Settings) -> None:
    """Everything above, on an app made by `create_app` (call after `app.state.*_hooks` exist)."""
    from media_server.api_docs import install_offline_docs

    install_offline_docs(app)
    app.state.login_throttle = build_login_throttle(settings)
    app.add_middleware(SecurityMiddleware, settings=settings.security)
    install_log_redaction()
    _install_metrics_port(app, settings.security)
