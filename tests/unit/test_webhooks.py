"""Webhooks against a real local HTTP server that records requests and checks their signatures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from media_server.settings import WebhookSettings
from media_server.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    EventType,
    WebhookEvent,
    WebhookNotifier,
    verdict_event,
    verify_signature,
    violation_event,
)

SECRET = "webhook-test-secret"


@dataclass
class Receiver:
    """A case-system stand-in: answers with queued status codes (then 200) and keeps every request."""

    url: str
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], bytes, bool]] = field(default_factory=list)
    delay_s: float = 0.0


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k: v for k, v in self.headers.items()}
            valid = verify_signature(SECRET.encode(), body, self.headers.get(SIGNATURE_HEADER))
            state.requests.append((self.path, headers, body, valid))
            if state.delay_s:
                time.sleep(state.delay_s)
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def _settings(urls: list[str], **kw: object) -> WebhookSettings:
    base: dict[str, object] = {
        "urls": urls,
        "secret": SecretStr(SECRET),
        "timeout_s": 2.0,
        "max_attempts": 3,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    base.update(kw)
    return WebhookSettings.model_validate(base)


def _event() -> WebhookEvent:
    return verdict_event(
        session_id="s-1",
        person_id="p-1",
        kind="checkin",
        decision="fail",
        reasons=["fail: face: does not match"],
        verdict_id="v-1",
    )


async def test_delivers_a_signed_event(receiver: Receiver) -> None:
    notifier = WebhookNotifier(_settings([receiver.url + "/hooks/kuzet"]))
    results = await notifier.send(_event())
    await notifier.aclose()
    assert [(r.delivered, r.attempts, r.status) for r in results] == [(True, 1, 200)]
    [(path, headers, body, valid)] = receiver.requests
    assert path == "/hooks/kuzet"
    assert valid
    assert headers[EVENT_HEADER] == "verdict"
    payload = json.loads(body)
    assert payload["type"] == "verdict" and payload["data"]["decision"] == "fail"
    assert headers[DELIVERY_HEADER] == payload["id"] == "verdict-v-1"
    assert not verify_signature(b"wrong secret", body, headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET.encode(), body + b" ", headers[SIGNATURE_HEADER])


async def test_retries_server_errors_with_the_same_delivery_id(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    notifier = WebhookNotifier(_settings([receiver.url]))
    event = violation_event(
        session_id="s-2", person_id="p-1", kind="checkin", reason="missed", verdict_id="v-2", source="missed"
    )
    assert event.type is EventType.VIOLATION
    [result] = await notifier.send(event)
    await notifier.aclose()
    assert (result.delivered, result.attempts, result.status) == (True, 3, 200)
    assert len(receiver.requests) == 3
    assert len({r[1][DELIVERY_HEADER] for r in receiver.requests}) == 1
    assert len({r[2] for r in receiver.requests}) == 1  # the same bytes each time
    assert all(r[3] for r in receiver.requests)


async def test_client_errors_are_final_and_attempts_are_bounded(receiver: Receiver) -> None:
    receiver.statuses = [400]
    notifier = WebhookNotifier(_settings([receiver.url]))
    [refused] = await notifier.send(_event())
    assert (refused.delivered, refused.attempts, refused.status) == (False, 1, 400)

    receiver.statuses = [502, 502, 502, 502]
    [given_up] = await notifier.send(_event())
    await notifier.aclose()
    assert (given_up.delivered, given_up.attempts, given_up.status) == (False, 3, 502)
    assert len(receiver.requests) == 4


async def test_unreachable_receiver_is_reported_not_raised() -> None:
    notifier = WebhookNotifier(_settings(["http://127.0.0.1:9/"], max_attempts=2))
    [result] = await notifier.send(_event())
    await notifier.aclose()
    assert not result.delivered and result.attempts == 2 and result.status is None
    assert result.error and "Connect" in result.error


async def test_background_delivery_does_not_block_the_loop(receiver: Receiver) -> None:
    receiver.delay_s = 0.3
    notifier = WebhookNotifier(_settings([receiver.url]))
    started = time.monotonic()
    task = notifier.submit(_event())
    ticks = 0
    while time.monotonic() - started < 0.2:
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks >= 10  # the loop kept running while the receiver was slow
    await notifier.aclose()  # waits for the pending delivery
    assert task is not None and task.done() and task.result()[0].delivered
    assert len(receiver.requests) == 1


async def test_no_urls_means_nothing_sent() -> None:
    notifier = WebhookNotifier(_settings([]))
    assert not notifier.enabled
    assert await notifier.send(_event()) == []
    assert notifier.submit(_event()) is None
    await notifier.aclose()


def test_a_secret_is_required_when_urls_are_set() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="webhooks.secret must be set"):
        WebhookSettings.model_validate({"urls": ["http://127.0.0.1:9/"]})
    with pytest.raises(ValidationError, match="at least 16"):
        WebhookSettings.model_validate({"urls": ["http://127.0.0.1:9/"], "secret": "short"})
    assert WebhookSettings.model_validate({"urls": []}).urls == []  # no URLs: no secret needed


async def test_a_delivery_that_fails_for_good_reaches_the_dead_letter_sink(receiver: Receiver) -> None:
    from media_server.webhooks import DeliveryResult

    kept: list[tuple[str, str, bytes, DeliveryResult]] = []

    class Sink:
        def record(self, event_id: str, event_type: str, body: bytes, result: DeliveryResult) -> None:
            kept.append((event_id, event_type, body, result))

    receiver.statuses = [500, 500, 500]
    notifier = WebhookNotifier(_settings([receiver.url]), dead_letters=Sink())
    [result] = await notifier.send(_event())
    await notifier.aclose()
    assert not result.delivered and result.attempts == 3
    [(event_id, event_type, body, stored)] = kept
    assert (event_id, event_type) == ("verdict-v-1", "verdict") and body == receiver.requests[-1][2]
    assert stored.status == 500
