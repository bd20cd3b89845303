"""A real phone-style check-in: headless Chromium with a fake camera/microphone, real WebRTC via WHIP."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from media_server.webrtc.capture import EndedReason
from media_server.webrtc.credentials import OneTimeTokens
from tests.support.webrtc import FakeSink, ServerThread

pytestmark = pytest.mark.e2e

ALMATY = {"latitude": 43.2389, "longitude": 76.8897, "accuracy": 25}


def test_chromium_completes_a_checkin(
    browser: Any, checkin_server: ServerThread, whip_authenticator: OneTimeTokens, checkin_sink: FakeSink
) -> None:
    token = whip_authenticator.issue("person-e2e")
    context = browser.new_context(
        permissions=["geolocation", "camera", "microphone"], geolocation=ALMATY, locale="en-US"
    )
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    try:
        page.goto(f"{checkin_server.url}/checkin/{token}?lang=en")
        assert page.locator("#start").inner_text() == "Start"
        page.locator("button[data-lang=kk]").click()
        assert page.locator("#start").inner_text() == "Бастау"
        page.locator("button[data-lang=en]").click()
        page.locator("#start").click()
        page.wait_for_selector("#status[data-state=live]", timeout=30_000)
        page.wait_for_function("document.getElementById('prompt').textContent.length > 0", timeout=30_000)
        page.wait_for_selector("#status[data-state=done]", timeout=90_000)
        assert page.locator("#outcome").inner_text() == "Check-in sent to your officer for review."
    finally:
        context.close()

    (seen,) = checkin_sink.wait(1, timeout_s=30)
    capture = seen.capture
    assert capture.ended_reason is EndedReason.COMPLETED, console
    assert capture.person_id == "person-e2e"
    assert capture.frames, "no sampled frames"
    _, rgb = capture.frames[-1]
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and 40 < float(rgb.mean()) < 220
    assert capture.audio_pcm16k.size > 16000 and float(np.abs(capture.audio_pcm16k).max()) > 0.01
    assert seen.recording_bytes > 10_000
    # Chromium's own VP8 and Opus, stored as sent (WebM, no re-encoding), every frame decodable, no gap
    assert sorted(seen.recording_streams) == ["audio:opus", "video:vp8"]
    probe = seen.probe
    assert probe is not None and probe.decode_errors == 0
    assert (
        probe.packets["video"]
        == capture.stats["video_frames_recorded"]
        >= capture.stats["video_frames_received"]
    )
    assert probe.frames["video"] >= probe.packets["video"] - 2 and probe.first_is_keyframe["video"]
    assert probe.keyframes["video"] == probe.vp8_bitstream_keyframes >= 1
    assert probe.monotonic == {"video": True, "audio": True}
    assert capture.stats["recording_gaps"] == 0, [e for e in capture.events if e["type"] == "recording_gap"]
    prompts = [e for e in capture.events if e["type"] == "prompt"]
    acks = [e for e in capture.events if e["type"] == "ack"]
    assert prompts and all(p["delivered"] for p in prompts)
    assert {a["index"] for a in acks} == {p["index"] for p in prompts}
    assert capture.location is not None and capture.location["status"] == "ok"
    assert capture.location["lat"] == pytest.approx(ALMATY["latitude"])


def test_a_used_link_shows_the_expired_message(
    browser: Any, checkin_server: ServerThread, whip_authenticator: OneTimeTokens
) -> None:
    context = browser.new_context(permissions=["camera", "microphone"], locale="ru-RU")
    page = context.new_page()
    try:
        # The first page already says so: no Start button, no permission prompt.
        page.goto(f"{checkin_server.url}/checkin/never-issued-token")
        assert page.locator("#invalid-link").is_visible()
        assert page.locator("#start").count() == 0
        assert "Ссылка недействительна" in page.locator("#invalid-link").inner_text()
    finally:
        context.close()
