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
from collections.abc import Sequence
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


def whip_endpoint(url: str) -> str:
    """A server root (http://host:8080) becomes its WHIP endpoint (http://host:8080/whip)."""
    return url.rstrip("/") + "/whip" if urlsplit(url).path in ("", "/") else url


class WhipError(Exception):
    """The WHIP endpoint refused the offer (status and the server's message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"WHIP endpoint answered {status}: {message}")
        self.status = status


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
            raise WhipError(response.status_code, _message(response))
        self.resource_url = urljoin(self.endpoint, response.headers["Location"])
        answer = response.text
        if self._loopback_only:
            answer = keep_loopback_candidates(answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def delete(self) -> int | None:
        """DELETE the session resource; the status, or None when there was none."""
        if self.resource_url is None:
            return None
        url, self.resource_url = self.resource_url, None
        with contextlib.suppress(httpx.HTTPError):
            return (await self._http.delete(url)).status_code
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
) -> dict[str, Any] | None:
    """Run one check-in from a station; the server's outcome message, or None if none came in time."""
    players, tracks = _open_media(video, audio, video_format, audio_format)
    if not tracks:
        raise ValueError("nothing to send: give --video and/or --audio")
    client = WhipClient(url, device_key, ice_servers=ice_servers, loopback_only=loopback_only)
    outcome: dict[str, Any] | None = None
    try:
        await client.publish(tracks)
        log.info("session open", extra={"resource": client.resource_url})
        with contextlib.suppress(TimeoutError):
            outcome = await asyncio.wait_for(_follow(client, location), duration_s)
    finally:
        await client.close()
        for track in tracks:
            track.stop()
        del players
    return outcome


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
