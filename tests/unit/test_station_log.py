"""The AV-station client's log says which prompt it got (and the digits to read), not a bare "prompt"."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from media_server import station_client


class _Client:
    """Just what `_follow` uses of a WhipClient: the data channel's messages and send()."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.channel_open = asyncio.Event()
        self.channel_open.set()
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for m in messages:
            self.messages.put_nowait(m)
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_prompt_and_feedback_lines_name_what_was_asked() -> None:
    client = _Client(
        [
            {"type": "prompt", "index": 0, "step": "turn_left", "t_s": 1.0},
            {"type": "prompt", "index": 1, "step": "read_digits", "digits": "37194", "t_s": 4.0},
            {"type": "feedback", "code": "too_dark"},
            {"type": "outcome", "decision": "review"},
        ]
    )
    handler, level = _Lines(), station_client.log.level
    station_client.log.addHandler(handler)
    station_client.log.setLevel(logging.INFO)
    try:
        outcome = await station_client._follow(client, None)  # type: ignore[arg-type]
    finally:
        station_client.log.removeHandler(handler)
        station_client.log.setLevel(level)
    assert outcome["decision"] == "review"
    lines = handler.lines
    assert "prompt turn_left (step 0)" in lines
    assert "prompt read_digits 37194 (step 1)" in lines
    assert "feedback too_dark" in lines
    assert [m["type"] for m in client.sent] == ["location_denied", "ack", "ack"]
