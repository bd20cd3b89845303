"""Offer validation, loopback candidate filtering, ICE server parsing and the check-in page."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from media_server.errors import BadInput
from media_server.settings import Settings
from media_server.webrtc.credentials import OneTimeTokens
from media_server.webrtc.ice import parse_ice_server, rtc_configuration
from media_server.webrtc.sdp import NO_CODEC_MESSAGE, keep_loopback_candidates, validate_offer
from tests.support.webrtc import FakeSink, build_whip_app

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 H264/90000",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuv",
        "a=fingerprint:sha-256 00:11",
        "a=candidate:1 1 udp 2130706431 192.0.2.2 5000 typ host",
        "a=candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host",
        "a=candidate:3 1 udp 2130706431 abc.local 5002 typ host",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:1",
        "",
    ]
)


def test_a_valid_offer_is_summarised() -> None:
    _, summary = validate_offer(OFFER.encode(), max_bytes=65536)
    assert summary.media == ("video",)
    assert summary.codecs["video"] == ("h264", "vp8")
    assert summary.has_data_channel


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"x" * 70000, "larger than"),
        (b"hello", "v=0"),
        (OFFER.replace("m=video", "m=text").encode(), "no m=video or m=audio"),
        (OFFER.replace("VP8", "VP9").replace("H264", "AV1").encode(), NO_CODEC_MESSAGE),
        (OFFER.replace("a=ice-ufrag:abcd\r\n", "").encode(), "ICE credentials"),
        (OFFER.replace("a=mid:0", "bogus line").encode(), "malformed SDP line"),
    ],
)
def test_bad_offers_are_rejected_before_aiortc(body: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        validate_offer(body, max_bytes=65536)


def test_loopback_filter_keeps_only_loopback_candidates() -> None:
    filtered = keep_loopback_candidates(OFFER)
    candidates = [line for line in filtered.split("\r\n") if line.startswith("a=candidate:")]
    assert candidates == ["a=candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host"]
    assert filtered.count("\r\n") == OFFER.count("\r\n") - 2


def test_ice_servers_come_only_from_settings() -> None:
    assert rtc_configuration([]).iceServers == []
    turn = parse_ice_server("turn:kuzet:s%40cret@turn.internal:3478?transport=udp")
    assert turn == {
        "urls": "turn:turn.internal:3478?transport=udp",
        "username": "kuzet",
        "credential": "s@cret",
    }
    assert parse_ice_server("stun:stun.internal:3478") == {"urls": "stun:stun.internal:3478"}
    (server,) = rtc_configuration(["turn:u:p@10.0.0.1:3478"]).iceServers
    assert server.username == "u" and server.credential == "p"


async def test_checkin_page_is_localised_and_locked_down(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, media={"ice_servers": ["turn:u:p@10.0.0.1:3478"]})
    app = build_whip_app(settings, OneTimeTokens(), FakeSink())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kuzet.test") as c:
        token = "tok_abcdefgh-1234"
        ru = await c.get(f"/checkin/{token}")
        assert ru.status_code == 200
        assert '<html lang="ru">' in ru.text and "Начать" in ru.text
        assert ru.headers["referrer-policy"] == "no-referrer"
        assert ru.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in ru.headers["content-security-policy"]
        assert f'"token": "{token}"' in ru.text and '"username": "u"' in ru.text
        kk = await c.get(f"/checkin/{token}", headers={"Accept-Language": "kk-KZ,ru;q=0.8"})
        assert '<html lang="kk">' in kk.text and "Бастау" in kk.text
        en = await c.get(f"/checkin/{token}?lang=en")
        assert '<html lang="en">' in en.text and ">Start<" in en.text
        assert (await c.get("/checkin/<script>")).status_code in (400, 404)
        js = await c.get("/static/checkin.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert (await c.get("/static/..%2Fsettings.py")).status_code == 404
        assert (await c.get("/static/app.py")).status_code == 404
        # every language has every key, so the switcher never shows a raw key
        strings = (await c.get("/static/checkin_strings.json")).json()
        assert set(strings) == {"ru", "kk", "en"}
        assert set(strings["ru"]) == set(strings["kk"]) == set(strings["en"])
        for key in (
            "prompt.turn_left",
            "prompt.read_digits",
            "feedback.too_dark",
            "feedback.face_not_visible",
        ):
            assert all(strings[lang][key] for lang in strings)
