"""Item 14: when the server ends an AV-station session early (its media stopped: a 3 s file, a camera
unplugged), the station is told (outcome with the reason and the retake), instead of waiting for its
own timeout and printing "no outcome"."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from media_server.app import create_app
from media_server.cli import main
from media_server.db.enums import SessionStatus
from media_server.db.models import CheckSession, Verdict
from media_server.settings import Settings
from media_server.station_client import run_station
from media_server.webrtc.credentials import OneTimeTokens
from tests.security.conftest import LiveApi, seed_staff, settings_for
from tests.security.support import new_station
from tests.support.webrtc import FakeSink, ServerThread, TestMedia, build_whip_app, make_test_media

TECHNICAL = {"decision": "review", "reasons": ["technical: connection_failed"], "retake": True}


@pytest.fixture(scope="module")
def short_media(tmp_path_factory: pytest.TempPathFactory) -> TestMedia:
    return make_test_media(tmp_path_factory.mktemp("short-media"), seconds=3.0)


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        media={"loopback_only": True, "no_media_timeout_s": 2, "max_session_s": 120},
        # A challenge far longer than the 3 s of media: only the server's early end can stop it.
        liveness={"motion_window_s": 15.0, "read_digits_window_s": 15.0, "lead_in_s": 1.0},
    )


@contextlib.contextmanager
def _live(settings: Settings) -> Iterator[LiveApi]:
    app = create_app(settings)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        seed_staff(app.state.services)
        yield LiveApi(client=client, services=app.state.services, settings=settings, url=server.url)  # type: ignore[arg-type]


async def _run(url: str, token: str, media: TestMedia, duration_s: float) -> dict[str, Any] | None:
    # A format given = the file plays once and stops, like a camera that goes away.
    return await run_station(
        f"{url}/whip",
        token,
        video=str(media.video_y4m),
        audio=None,
        video_format="yuv4mpegpipe",
        duration_s=duration_s,
        loopback_only=True,
    )


def test_station_learns_the_outcome_when_its_media_stops(tmp_path: Path, short_media: TestMedia) -> None:
    tokens, sink = OneTimeTokens(), FakeSink(outcome=TECHNICAL)
    with ServerThread(build_whip_app(_settings(tmp_path), tokens, sink)) as server:
        started = time.monotonic()
        outcome = asyncio.run(_run(server.url, tokens.issue("p-1", kind="station"), short_media, 60))
        took_s = time.monotonic() - started
    assert outcome is not None, "the station was never told"
    assert outcome["type"] == "outcome" and outcome["retake"] is True
    assert outcome["ended_reason"] in ("connection_failed", "no_media_timeout")
    assert outcome["reasons"] == TECHNICAL["reasons"]
    assert took_s < 40, took_s  # well before the station's own 60 s timeout
    (seen,) = sink.captures
    assert seen.capture.ended_reason.value == outcome["ended_reason"]


def test_station_cli_prints_the_early_end(tmp_path: Path, short_media: TestMedia) -> None:
    tokens = OneTimeTokens()
    settings = _settings(tmp_path)
    with ServerThread(build_whip_app(settings, tokens, FakeSink(outcome=TECHNICAL))) as server:
        result = CliRunner().invoke(
            main,
            [
                "station",
                "run",
                "--url",
                f"{server.url}/whip",
                "--device-key",
                tokens.issue("p-2", kind="station"),
                "--video",
                str(short_media.video_y4m),
                "--video-format",
                "yuv4mpegpipe",
                "--duration",
                "60",
            ],
            env={"KUZET_MEDIA__LOOPBACK_ONLY": "true", "KUZET_DATA_DIR": str(tmp_path / "cli")},
        )
    assert result.exit_code == 0, result.output
    assert "the server ended the session early" in result.output and "take the check again" in result.output


def test_session_state_needs_the_opening_bearer(tmp_path: Path, short_media: TestMedia) -> None:
    import httpx

    tokens = OneTimeTokens()
    with ServerThread(build_whip_app(_settings(tmp_path), tokens, FakeSink(outcome=TECHNICAL))) as server:
        token = tokens.issue("p-3", kind="station")

        async def scenario() -> tuple[int, int, dict[str, Any]]:
            from media_server.station_client import WhipClient

            client = WhipClient(f"{server.url}/whip", token, loopback_only=True)
            from aiortc.contrib.media import MediaPlayer

            player = MediaPlayer(str(short_media.video_y4m), format="yuv4mpegpipe")
            try:
                await client.publish([player.video])
                assert client.resource_url is not None
                async with httpx.AsyncClient() as http:
                    anonymous = (await http.get(client.resource_url)).status_code
                    other_bearer = {"Authorization": f"Bearer {tokens.issue()}"}
                    other = (await http.get(client.resource_url, headers=other_bearer)).status_code
                state = await client.server_state()
                assert state is not None
                return anonymous, other, state
            finally:
                await client.close()
                player.video.stop()

        anonymous, other, state = asyncio.run(scenario())
    assert anonymous == 401 and other == 403
    assert state["state"] in ("live", "processing", "ended")


def test_station_is_told_through_the_real_pipeline(tmp_path: Path, short_media: TestMedia) -> None:
    """The same early end through the whole app on SQLite (the real sink: session row, evidence,
    verdict), not the fake sink: the station hears the outcome the server recorded."""
    short = _settings(tmp_path)
    settings = settings_for(tmp_path / "var", "").model_copy(
        update={"media": short.media, "liveness": short.liveness}
    )
    with _live(settings) as live:
        person_id, device_key = new_station(live)
        started = time.monotonic()
        outcome = asyncio.run(_run(live.url, device_key, short_media, 90))
        took_s = time.monotonic() - started
        with live.services.sessions() as db:
            session = db.scalars(select(CheckSession).where(CheckSession.person_id == person_id)).one()
            verdict = db.scalars(select(Verdict).where(Verdict.session_id == session.id)).one()
            recorded = (session.id, session.status, verdict.decision.value, list(verdict.reasons))
    assert outcome is not None, "the station was never told"
    assert took_s < 60, took_s  # before the station's own 90 s timeout
    assert outcome["type"] == "outcome" and outcome["retake"] is True, outcome
    assert outcome["ended_reason"] in ("connection_failed", "no_media_timeout"), outcome
    # What the station heard is what the server recorded: a technical failure, judged, to be retaken.
    session_id, status, decision, reasons = recorded
    assert status is SessionStatus.TECHNICAL_FAILURE
    assert (outcome["session_id"], outcome["decision"], outcome["reasons"]) == (session_id, decision, reasons)
    assert reasons[0].startswith("technical: media:"), reasons
