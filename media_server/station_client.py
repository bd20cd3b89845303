"""AV-station WHIP client on aiortc: publishes camera + microphone (or files), follows the prompts,
ends with DELETE and returns the outcome.

Devices on a Linux station (ffmpeg input formats through aiortc's MediaPlayer):
    kuzet station run --url https://kuzet.example/whip --device-key KEY \\
        --video /dev/video0 --video-format v4l2 --audio default --audio-format pulse
(`--audio hw:0 --audio-format alsa` without PulseAudio). Files loop until the session ends:
    kuzet station run --url http://127.0.0.1:8080/whip --device-key KEY --video face.y4m --audio speech.wav
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

from media_server.webrtc.ice import gather_loopback, rtc_configuration
from media_server.webrtc.sdp import keep_loopback_candidates
from media_server.webrtc.session import DATA_CHANNEL_LABEL

log = logging.getLogger("kuzet.station")

HTTP_TIMEOUT_S = 15.0
# How often a station asks whether the server ended its session (when no outcome came by data channel).
STATE_POLL_S = 2.0
# A busy node (503 + Retry-After, before the credential is spent): wait as told within these bounds, and
# offer again until BUSY_GIVE_UP_S have passed (the check-in page does the same).
BUSY_DEFAULT_WAIT_S = 5.0
BUSY_MAX_WAIT_S = 60.0
BUSY_GIVE_UP_S = 15 * 60.0


def whip_endpoint(url: str) -> str:
    """A server root (http://host:8080) becomes its WHIP endpoint (http://host:8080/whip)."""
    return url.rstrip("/") + "/whip" if urlsplit(url).path in ("", "/") else url


class WhipError(Exception):
    """The WHIP endpoint refused the offer (status and the server's message)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"WHIP endpoint answered {status}: {message}")
        self.status = status
        self.retry_after_s = retry_after_s


def retry_after_s(response: httpx.Response) -> float:
    """The server's Retry-After (seconds form) within [1, BUSY_MAX_WAIT_S]; BUSY_DEFAULT_WAIT_S without one."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return BUSY_DEFAULT_WAIT_S
    return min(max(seconds, 1.0), BUSY_MAX_WAIT_S) if seconds == seconds else BUSY_DEFAULT_WAIT_S


class WhipClient:
    """One publishing session: POST offer -> answer, a "kuzet" data channel, DELETE at the end."""

    def __init__(
        self,
        url: str,
        credential: str,
        *,
        ice_servers: Sequence[str] = (),
        loopback_only: bool = False,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoint = whip_endpoint(url)
        self._credential = credential
        self._loopback_only = loopback_only
        self.pc = RTCPeerConnection(rtc_configuration(list(ice_servers)))
        self._http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        self._own_http = http is None
        self.resource_url: str | None = None
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.channel = self.pc.createDataChannel(DATA_CHANNEL_LABEL)
        self.channel_open = asyncio.Event()
        self.channel.on("open", self.channel_open.set)
        self.channel.on("message", self._on_message)

    def _on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            return
        if isinstance(data, dict):
            self.messages.put_nowait(data)

    def send(self, message: dict[str, Any]) -> bool:
        """Send a JSON message on the data channel when it is open."""
        if self.channel.readyState != "open":
            return False
        self.channel.send(json.dumps(message))
        return True

    async def publish(self, tracks: Sequence[MediaStreamTrack]) -> None:
        """Offer `tracks` (send-only), wait for ICE gathering, POST, apply the answer."""
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        if self._loopback_only:
            await gather_loopback(self.pc)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        response = await self._http.post(
            self.endpoint,
            content=offer.encode(),
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self._credential}"},
        )
        if response.status_code != 201:
            wait = retry_after_s(response) if response.status_code == 503 else None
            raise WhipError(response.status_code, _message(response), wait)
        self.resource_url = urljoin(self.endpoint, response.headers["Location"])
        answer = response.text
        if self._loopback_only:
            answer = keep_loopback_candidates(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def server_state(self) -> dict[str, Any] | None:
        """GET the session resource: {"state": live|processing|ended, "outcome": ...}; None if unknown."""
        if self.resource_url is None:
            return None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await self._http.get(
                self.resource_url, headers={"Authorization": f"Bearer {self._credential}"}
            )
            if response.status_code == 200:
                state: dict[str, Any] = response.json()
                return state
        return None

    async def delete(self) -> int | None:
        """DELETE the session resource; the status, or None when there was none."""
        if self.resource_url is None:
            return None
        url, self.resource_url = self.resource_url, None
        with contextlib.suppress(httpx.HTTPError):
            # RFC 9725: the same bearer as the POST.
            return (
                await self._http.delete(url, headers={"Authorization": f"Bearer {self._credential}"})
            ).status_code
        return None

    async def close(self) -> None:
        """DELETE (if still open), close the peer and the HTTP client."""
        await self.delete()
        await self.pc.close()
        if self._own_http:
            await self._http.aclose()


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text


class MonotonicTrack(MediaStreamTrack):  # type: ignore[misc]
    """Re-stamps a looping file's frames so timestamps keep increasing across loops.

    MediaPlayer(loop=True) restarts pts at 0 on every loop and libvpx then refuses the frames.
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._offset = 0
        self._last: int | None = None
        self._step = 1

    async def recv(self) -> Any:
        frame = await self._source.recv()
        if frame.pts is None:
            return frame
        pts = frame.pts + self._offset
        if self._last is not None:
            if pts <= self._last:
                self._offset += self._last + self._step - pts
                pts = self._last + self._step
            else:
                self._step = pts - self._last
        self._last = pts
        frame.pts = pts
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


@dataclass(frozen=True, slots=True)
class StationLocation:
    """A fixed station's configured position (WGS84 degrees, accuracy in metres)."""

    lat: float
    lon: float
    accuracy_m: float


async def run_station(
    url: str,
    device_key: str,
    *,
    video: str | None,
    audio: str | None,
    video_format: str | None = None,
    audio_format: str | None = None,
    duration_s: float,
    location: StationLocation | None = None,
    ice_servers: Sequence[str] = (),
    loopback_only: bool = False,
    busy_give_up_s: float = BUSY_GIVE_UP_S,
) -> dict[str, Any] | None:
    """Run one check-in from a station; the server's outcome message, or None if none came in time.

    A busy node's 503 is waited out (Retry-After) and the offer made again, up to `busy_give_up_s`."""
    players, tracks = _open_media(video, audio, video_format, audio_format)
    if not tracks:
        raise ValueError("nothing to send: give --video and/or --audio")
    outcome: dict[str, Any] | None = None
    client: WhipClient | None = None
    try:
        client = await publish_when_admitted(
            lambda: WhipClient(url, device_key, ice_servers=ice_servers, loopback_only=loopback_only),
            tracks,
            give_up_s=busy_give_up_s,
        )
        log.info("session open", extra={"resource": client.resource_url})
        with contextlib.suppress(TimeoutError):
            outcome = await asyncio.wait_for(_first_outcome(client, location), duration_s)
    finally:
        if client is not None:
            await client.close()
        for track in tracks:
            track.stop()
        del players
    return outcome


async def publish_when_admitted(
    new_client: Callable[[], WhipClient],
    tracks: Sequence[MediaStreamTrack],
    *,
    give_up_s: float = BUSY_GIVE_UP_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> WhipClient:
    """Publish `tracks` with a fresh client; while the node answers 503 busy (the credential is not spent),
    wait its Retry-After and offer again, up to `give_up_s`. Any other refusal is raised at once."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        client = new_client()
        try:
            await client.publish(tracks)
            return client
        except WhipError as exc:
            await client.close()
            wait = exc.retry_after_s
            if exc.status != 503 or wait is None or loop.time() - started + wait > give_up_s:
                raise
            log.info("server busy, offering again in %.0f s", wait, extra={"retry_after_s": wait})
            await sleep(wait)
        except BaseException:
            await client.close()
            raise


async def _first_outcome(client: WhipClient, location: StationLocation | None) -> dict[str, Any]:
    """The outcome from the data channel or, when the server ended the session early (media stopped,
    camera unplugged) and the channel died with the peer, from polling the session resource."""
    tasks = [asyncio.create_task(_follow(client, location)), asyncio.create_task(_poll_ended(client))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()


async def _poll_ended(client: WhipClient) -> dict[str, Any]:
    while True:
        await asyncio.sleep(STATE_POLL_S)
        state = await client.server_state()
        if state is not None and state.get("state") == "ended":
            outcome = state.get("outcome") or {}
            log.info("the server ended the session", extra={"reason": state.get("ended_reason")})
            return {"type": "outcome", "ended_reason": state.get("ended_reason"), **outcome}


async def _follow(client: WhipClient, location: StationLocation | None) -> dict[str, Any]:
    await client.channel_open.wait()
    if location is not None:
        client.send(
            {"type": "location", "lat": location.lat, "lon": location.lon, "accuracy_m": location.accuracy_m}
        )
    else:
        client.send({"type": "location_denied", "reason": "station_has_no_location"})
    while True:
        message = await client.messages.get()
        kind = message.get("type")
        if kind == "prompt":
            # A station has nobody to read the screen here; the prompt is logged for the operator.
            log.info(
                "prompt %s%s (step %s)",
                message.get("step"),
                f" {message['digits']}" if message.get("digits") else "",
                message.get("index"),
                extra={
                    "step": message.get("step"),
                    "digits": message.get("digits"),
                    "t_s": message.get("t_s"),
                },
            )
            client.send({"type": "ack", "step": message.get("step"), "index": message.get("index")})
        elif kind == "feedback":
            log.info("feedback %s", message.get("code"), extra={"code": message.get("code")})
        elif kind == "outcome":
            return message


def _open_media(
    video: str | None, audio: str | None, video_format: str | None, audio_format: str | None
) -> tuple[list[MediaPlayer], list[MediaStreamTrack]]:
    """Players for the inputs (files loop; devices do not) and the one video / one audio track."""
    players: list[MediaPlayer] = []
    tracks: list[MediaStreamTrack] = []
    if video is not None:
        player = MediaPlayer(video, format=video_format, loop=video_format is None)
        players.append(player)
        if player.video is None:
            raise ValueError(f"{video} has no video stream")
        tracks.append(MonotonicTrack(player.video) if video_format is None else player.video)
    if audio is not None:
        player = MediaPlayer(audio, format=audio_format, loop=audio_format is None)
        players.append(player)
        if player.audio is None:
            raise ValueError(f"{audio} has no audio stream")
        tracks.append(MonotonicTrack(player.audio) if audio_format is None else player.audio)
    return players, tracks
