"""E2E fixtures: a real server on 127.0.0.1 with a swappable sink and authenticator, and Chromium.

The lead swaps `checkin_sink` / `whip_authenticator` (or `checkin_app`) for the real pipeline and auth.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from media_server.settings import Settings
from media_server.webrtc.capture import SessionSink
from media_server.webrtc.credentials import OneTimeTokens, WhipAuthenticator
from tests.api.conftest import Profile, resolve_profile
from tests.support.webrtc import FakeSink, ServerThread, TestMedia, build_whip_app, make_test_media

CHROMIUM = "/usr/bin/chromium"
# Chromium's --disable-features is last-wins: Playwright's own list is merged into ours.
_DISABLED_FEATURES = ",".join(
    [
        "WebRtcHideLocalIpsWithMdns",
        "AvoidUnnecessaryBeforeUnloadCheckSync",
        "DestroyProfileOnBrowserClose",
        "HttpsUpgrades",
        "HttpsFirstBalancedModeAutoEnable",
        "MediaRouter",
        "PaintHolding",
        "ThirdPartyStoragePartitioning",
        "OptimizationHints",
        "NetworkTimeServiceQuerying",
    ]
)


def chromium_args(media: TestMedia) -> list[str]:
    """Flags that give headless Chromium a fake camera/microphone and loopback WebRTC (ENVIRONMENT.md)."""
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={media.video_y4m}",
        f"--use-file-for-fake-audio-capture={media.speech_wav}",
        "--allow-loopback-in-peer-connection",
        f"--disable-features={_DISABLED_FEATURES}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ]


@pytest.fixture(scope="session")
def test_media(tmp_path_factory: pytest.TempPathFactory) -> TestMedia:
    return make_test_media(tmp_path_factory.mktemp("e2e-media"), seconds=6.0)


@pytest.fixture
def e2e_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        media={"loopback_only": True, "no_media_timeout_s": 20, "outcome_linger_s": 5},
        liveness={"motion_window_s": 1.5, "read_digits_window_s": 3.0, "lead_in_s": 1.0, "step_gap_s": 0.5},
    )


@pytest.fixture
def whip_authenticator() -> OneTimeTokens:
    return OneTimeTokens()


@pytest.fixture
def checkin_sink() -> SessionSink:
    return FakeSink()


@pytest.fixture
def checkin_app(
    e2e_settings: Settings, whip_authenticator: WhipAuthenticator, checkin_sink: SessionSink
) -> Any:
    return build_whip_app(e2e_settings, whip_authenticator, checkin_sink)


@pytest.fixture
def checkin_server(checkin_app: Any) -> Iterator[ServerThread]:
    with ServerThread(checkin_app) as server:
        yield server


@pytest.fixture
def browser(test_media: TestMedia) -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("ffmpeg") is None:
        pytest.skip("needs Debian chromium and ffmpeg")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(test_media))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def e2e_profile(request: pytest.FixtureRequest) -> Profile:
    """The live service's deployment profile: the embedded default, unless the module parametrises this
    fixture (BOTH_PROFILES) to run on the production profile too (PostgreSQL + Ceph S3 + a Celery worker)."""
    return resolve_profile(request, getattr(request, "param", "sqlite"))


@pytest.fixture
def live_service(e2e_settings: Settings, e2e_profile: Profile) -> Iterator[tuple[ServerThread, Any]]:
    """The real service (create_app: real auth, pipeline, workers) on 127.0.0.1, with staff accounts."""
    from e2e_service import profile_settings, seed_staff

    from media_server.app import create_app

    with profile_settings(e2e_profile, e2e_settings) as settings:
        app = create_app(settings)
        with ServerThread(app) as server:
            seed_staff(app.state.services)
            yield server, app.state.services
