"""Items 5 and 10: logins (timing, backoff, concurrency, logout), log redaction, headers, cookies,
/metrics exposure. Database-dependent cases run on both profiles."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from media_server.app import create_app
from media_server.cli import proxy_options
from media_server.db.enums import Role
from media_server.security import LoginThrottle, redact_checkin_links
from media_server.settings import Settings
from tests.api.conftest import PASSWORD, Api
from tests.security.conftest import LiveApi, seed_staff
from tests.security.support import new_checkin
from tests.support.webrtc import ServerThread

LOGIN = "/api/v1/auth/login"


def _login(client: httpx.Client, username: str, password: str, **kw: object) -> httpx.Response:
    return client.post(LOGIN, json={"username": username, "password": password}, **kw)  # type: ignore[arg-type]


def _median_s(calls: list[float]) -> float:
    return statistics.median(calls)


def test_unknown_username_takes_as_long_as_a_wrong_password(api: Api) -> None:
    known, unknown = [], []
    for i in range(4):  # below the backoff limit (5)
        t0 = time.perf_counter()
        assert _login(api.client, "officer", f"wrong-{i}").status_code == 401
        known.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert _login(api.client, f"nobody-{i}", "wrong").status_code == 401
        unknown.append(time.perf_counter() - t0)
    # Both pay one argon2 verification; before the fix the unknown user answered ~30x faster.
    assert _median_s(unknown) > 0.5 * _median_s(known), (known, unknown)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_back_off_per_username_and_address(api: Api) -> None:
    clock = FakeClock()
    app = api.client.app
    app.state.login_throttle = LoginThrottle(api.settings.security, clock=clock)  # type: ignore[attr-defined]
    limit = api.settings.security.login_max_failures
    for i in range(limit):
        assert _login(api.client, "reviewer", f"guess-{i}").status_code == 401
    blocked = _login(api.client, "reviewer", PASSWORD)  # even the right password waits
    assert blocked.status_code == 429 and "try again in" in blocked.json()["message"]
    assert _login(api.client, "auditor", PASSWORD).status_code == 200  # other accounts unaffected
    clock.now += api.settings.security.login_backoff_base_s + 0.1
    assert _login(api.client, "reviewer", "still-wrong").status_code == 401
    clock.now += api.settings.security.login_backoff_base_s + 0.1
    assert _login(api.client, "reviewer", PASSWORD).status_code == 429  # the wait doubled
    clock.now += 2 * api.settings.security.login_backoff_base_s
    assert _login(api.client, "reviewer", PASSWORD).status_code == 200
    # A success clears the failures: `limit` new ones are needed again before the next wait.
    for i in range(limit):
        assert _login(api.client, "reviewer", f"again-{i}").status_code == 401
    assert _login(api.client, "reviewer", PASSWORD).status_code == 429


def test_logout_revokes_the_token(api: Api) -> None:
    token = api.token(Role.OFFICER)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/v1/reviews/queue", headers=headers).status_code == 200
    assert api.client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    again = api.client.get("/api/v1/reviews/queue", headers=headers)
    assert again.status_code == 401 and "logged out" in again.json()["message"]
    assert api.client.post("/api/v1/auth/logout", headers=headers).status_code == 401
    # A new login works.
    assert api.client.get("/api/v1/reviews/queue", headers=api.as_(Role.OFFICER)).status_code == 200


def test_workstation_logout_revokes_the_cookie(api: Api) -> None:
    r = api.client.post(
        "/ws/login", data={"username": "reviewer", "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303
    cookie = api.client.cookies.get("kuzet_session")
    assert cookie and api.client.get("/ws/queue", follow_redirects=False).status_code == 200
    api.client.get("/ws/logout", follow_redirects=False)
    api.client.cookies.set("kuzet_session", cookie)  # a stolen copy of the cookie
    after = api.client.get("/api/v1/reviews/queue")
    assert after.status_code == 401
    api.client.cookies.clear()


@pytest.mark.slow  # 50 argon2id verifications: about a minute on a shared 2-core machine
def test_fifty_concurrent_logins_all_succeed(live_api: LiveApi) -> None:
    def one(_: int) -> int:
        with httpx.Client(base_url=live_api.url, timeout=120) as client:
            return _login(client, "officer", PASSWORD).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(one, range(50)))
    assert codes == [200] * 50, sorted(set(codes))


# -- not database-dependent: SQLite only ---------------------------------------------------------


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", models={"dir": Path("var/models").resolve()})


def _client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _served(settings: Settings) -> Iterator[LiveApi]:
    """The app under uvicorn as `kuzet serve` runs it (its proxy options, no log config of uvicorn's own),
    access log on, staff seeded."""
    app = create_app(settings)
    options = {"log_config": None, "log_level": "info", **proxy_options(settings)}
    with ServerThread(app, **options) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        seed_staff(app.state.services)
        yield LiveApi(client=client, services=app.state.services, settings=settings, url=server.url)  # type: ignore[arg-type]


def test_checkin_links_are_redacted_from_the_access_log(sqlite_settings: Settings) -> None:
    made_up = "ck_" + "A" * 43
    kept = _Keep()
    kept.addFilter(
        lambda record: not record.name.startswith("httpx")
    )  # the test's own client, not the server
    root = logging.getLogger()  # every record reaches it: the lifespan routes uvicorn's loggers here
    with _served(sqlite_settings) as live:
        root.addHandler(kept)
        try:
            _, token = new_checkin(live)
            assert live.client.get(f"/checkin/{token}?lang=ru").status_code == 200
            assert live.client.get(f"/checkin/{made_up}").status_code == 404
            deadline = time.monotonic() + 10  # uvicorn logs the line after the response went out
            while sum("/checkin/" in line for line in kept.lines) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            root.removeHandler(kept)
    checkin_lines = [line for line in kept.lines if "/checkin/" in line]
    assert any('"GET /checkin/<redacted>?lang=ru HTTP/1.1" 200' in line for line in checkin_lines), kept.lines
    assert any('"GET /checkin/<redacted> HTTP/1.1" 404' in line for line in checkin_lines), kept.lines
    assert not [line for line in kept.lines if token in line or made_up in line]
    assert redact_checkin_links(f"GET /checkin/{token} then /call/{token}") == (
        "GET /checkin/<redacted> then /call/<redacted>"
    )


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted-peer", "trusted-proxy"])
def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    sqlite_settings: Settings, trusted: bool
) -> None:
    """Failed logins are counted per username and client address. X-Forwarded-For names that address only
    when the peer is a trusted proxy (`security.forwarded_allow_ips`); from anyone else it is ignored, so a
    guesser cannot dodge the backoff by claiming a new address each try. The test's peer is 127.0.0.1."""
    security = sqlite_settings.security.model_copy(
        update={"forwarded_allow_ips": "127.0.0.1" if trusted else "192.0.2.10", "login_max_failures": 2}
    )
    settings = sqlite_settings.model_copy(update={"security": security})

    with _served(settings) as live:

        def login(password: str, forwarded_for: str) -> int:
            return _login(
                live.client, "reviewer", password, headers={"X-Forwarded-For": forwarded_for}
            ).status_code

        assert login("guess-1", "203.0.113.1") == 401
        assert login("guess-2", "203.0.113.1") == 401
        assert login(PASSWORD, "203.0.113.1") == 429
        # The same account from another address the proxy vouches for has its own count.
        assert login(PASSWORD, "203.0.113.2") == (200 if trusted else 429)


def test_pages_send_security_headers(api: Api) -> None:
    _, token = new_checkin(api)
    for path in ("/ws/login", f"/checkin/{token}"):
        r = api.client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
        assert r.headers["cache-control"] == "no-store", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["x-content-type-options"] == "nosniff", path
    assert api.client.get("/healthz").headers["x-frame-options"] == "DENY"


def test_cookies_are_httponly_samesite_and_secure_over_https(api: Api) -> None:
    plain = _login(api.client, "officer", PASSWORD)
    cookie = plain.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    behind_tls = _login(api.client, "officer", PASSWORD, headers={"X-Forwarded-Proto": "https"})
    assert "; secure" in behind_tls.headers["set-cookie"].lower()
    lang = api.client.get("/ws/login?lang=en")
    for value in lang.headers.get_list("set-cookie"):
        assert "httponly" in value.lower() and "samesite" in value.lower(), value
    api.client.cookies.clear()


def test_metrics_behind_a_token(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        models={"dir": Path("var/models").resolve()},
        security={"metrics_token": "s3cret-metrics"},
    )
    for client in _client(settings):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Basic s3cret-metrics"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-metric"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
        assert ok.status_code == 200 and "kuzet_http_requests_total" in ok.text
        # The one bearer parser (`tokens.bearer`): the scheme is case-insensitive and spaces are trimmed.
        for header in ("bearer s3cret-metrics", "BEARER s3cret-metrics", "Bearer    s3cret-metrics  "):
            assert client.get("/metrics", headers={"Authorization": header}).status_code == 200, header


def test_metrics_on_a_separate_internal_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        data_dir=tmp_path / "var",
        models={"dir": Path("var/models").resolve()},
        security={"metrics_port": port},
    )
    for client in _client(settings):
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 404
        for _ in range(50):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        else:
            pytest.fail("the metrics port never opened")
        assert r.status_code == 200 and "kuzet_http_requests_total" in r.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/persons", timeout=5).status_code == 404
