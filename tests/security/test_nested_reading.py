"""Item 1: a deeply nested reading is malformed input (400), never a server error; the same for a
message on the check-in data channel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media_server.auth import WhipPrincipal
from media_server.settings import Settings
from media_server.webrtc.session import MediaSession
from sobriety.reading import parse_canonical
from tests.api.conftest import Api
from tests.support.webrtc import FakeSink

BREATH = "/api/v1/breath-tests"


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_parse_canonical_rejects_deep_nesting(depth: int) -> None:
    assert parse_canonical(b"[" * depth + b"]" * depth) is None
    assert parse_canonical(b'{"a":' + b"[" * depth + b"]" * depth + b"}") is None


def test_parse_canonical_still_accepts_a_canonical_object() -> None:
    assert parse_canonical(b'{"a":[[1]],"b":"x"}') == {"a": [[1]], "b": "x"}


@pytest.mark.parametrize(
    "reading",
    [b"[" * 5000 + b"]" * 5000, b'{"device_serial":' + b"[" * 5000 + b"]" * 5000 + b"}"],
    ids=["array", "in-object"],
)
def test_anonymous_nested_reading_gets_400(api: Api, reading: bytes) -> None:
    r = api.client.post(
        BREATH,
        files={"reading": ("reading.json", reading, "application/json"), "signature": (None, "AAAA")},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "not_canonical"


@pytest.mark.parametrize(
    "message",
    [
        "[" * 2000 + "]" * 2000,
        '{"type":"ack","step":' + "[" * 2000 + "]" * 2000 + "}",
    ],
    ids=["array", "in-ack"],
)
async def test_data_channel_drops_deeply_nested_messages(tmp_path: Path, message: str) -> None:
    """The data-channel twin of item 1: a nested message under the 4 KiB cap is counted as invalid and
    dropped; it does not raise in aiortc's message handler, and the session keeps taking messages."""
    settings = Settings(data_dir=tmp_path)
    assert len(message) <= settings.media.max_message_bytes
    session = MediaSession(
        resource_id="r-1",
        principal=WhipPrincipal(session_id="s-1", person_id="p-1", kind="checkin"),
        media=settings.media,
        liveness=settings.liveness,
        sink=FakeSink(),
        advisor=None,
        workdir=tmp_path,
        on_closed=lambda _resource_id: None,
    )
    try:
        session._on_message(message)
        assert session.stats["invalid_messages"] == 1
        session._on_message(json.dumps({"type": "ack", "step": "turn_left", "index": 0}))
        assert session.stats["invalid_messages"] == 1
    finally:
        await session.pc.close()
