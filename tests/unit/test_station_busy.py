"""An AV station refused by a busy node (503 + Retry-After, credential not spent) waits and offers again."""

from __future__ import annotations

import httpx
import pytest
from aiortc import VideoStreamTrack

from media_server import station_client
from media_server.station_client import WhipClient, WhipError, publish_when_admitted, retry_after_s


def _endpoint(answers: list[httpx.Response]) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    return seen, httpx.MockTransport(handle)


async def test_busy_answers_are_waited_out_and_the_offer_made_again() -> None:
    busy = httpx.Response(503, headers={"Retry-After": "7"}, json={"message": "busy"})
    seen, transport = _endpoint([busy, busy, httpx.Response(401, json={"message": "bad credential"})])
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    def new_client() -> WhipClient:
        http = httpx.AsyncClient(transport=transport)
        return WhipClient("http://kuzet.test", "dk_key", loopback_only=True, http=http)

    track = VideoStreamTrack()
    with pytest.raises(WhipError) as refused:
        await publish_when_admitted(new_client, [track], sleep=sleep)
    # Two busy answers waited out as told, then a real refusal is raised at once (not retried).
    assert refused.value.status == 401
    assert slept == [7.0, 7.0]
    assert len(seen) == 3
    assert all(r.headers["Authorization"] == "Bearer dk_key" for r in seen)
    assert all(r.content.startswith(b"v=0") for r in seen)  # a fresh SDP offer each time
    track.stop()


async def test_a_wait_beyond_the_give_up_time_is_not_taken() -> None:
    seen, transport = _endpoint(
        [httpx.Response(503, headers={"Retry-After": "30"}, json={"message": "busy"})]
    )

    async def sleep(s: float) -> None:
        raise AssertionError("must not wait")

    def new_client() -> WhipClient:
        return WhipClient(
            "http://kuzet.test", "dk_key", loopback_only=True, http=httpx.AsyncClient(transport=transport)
        )

    track = VideoStreamTrack()
    with pytest.raises(WhipError) as refused:
        await publish_when_admitted(new_client, [track], give_up_s=20, sleep=sleep)
    assert refused.value.status == 503 and refused.value.retry_after_s == 30.0
    assert len(seen) == 1
    track.stop()


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("12", 12.0),
        ("0", 1.0),
        ("100000", station_client.BUSY_MAX_WAIT_S),
        ("soon", station_client.BUSY_DEFAULT_WAIT_S),
        (None, station_client.BUSY_DEFAULT_WAIT_S),
        ("nan", station_client.BUSY_DEFAULT_WAIT_S),
    ],
)
def test_retry_after_is_bounded(header: str | None, wait: float) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    assert retry_after_s(httpx.Response(503, headers=headers)) == wait
