"""WHEP egress (the playback counterpart of WHIP, RFC 9725's sibling): POST an SDP offer, get a sendonly
answer that relays a live session's tracks; DELETE ends the viewer.

A viewer never feeds anything back into the session it watches: its peer only sends (the offer's own
media are ignored), and it reads the session's tracks through the session's `MediaRelay` unbuffered, so a
slow viewer skips frames instead of holding back the recorder or the analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol, cast

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from av.frame import Frame

from media_server.errors import BadInput, Forbidden, NotFoundError, TooManyRequests
from media_server.settings import Settings
from media_server.webrtc.ice import gather_loopback, rtc_configuration
from media_server.webrtc.sdp import keep_loopback_candidates, validate_offer

log = logging.getLogger("kuzet.webrtc")

# How often a viewer whose source has not published yet looks again.
_SOURCE_POLL_S = 0.1
# RTP video clock (Hz): a relayed video frame's copy is stamped on it.
_VIDEO_CLOCK = 90_000
# How often the reaper looks for viewers past their lifetime.
_REAP_EVERY_S = 1.0

__all__ = ["SourceLookup", "TrackSource", "WhepEgress", "WhepViewer"]


class TrackSource(Protocol):
    """A live publisher whose tracks can be watched (a WHIP `MediaSession`, an officer's publish)."""

    def subscribe(self, kind: str) -> MediaStreamTrack | None:
        """An unbuffered copy of its `kind` track; None before the track arrives or after the end."""
        ...


# Finds the source now (None: not published yet, or gone). Called again until it answers.
SourceLookup = Callable[[], TrackSource | None]


class ForwardTrack(MediaStreamTrack):  # type: ignore[misc]
    """Sends the source's `kind` track once it exists, so a viewer may connect before the other side of a
    call publishes. Ends (MediaStreamError, and `on_ended`) when the source ends."""

    def __init__(
        self, kind: str, lookup: SourceLookup, expired: Callable[[], bool], on_ended: Callable[[], None]
    ) -> None:
        super().__init__()
        self.kind = kind
        self._lookup = lookup
        self._expired = expired
        self._on_ended = on_ended
        self._inner: MediaStreamTrack | None = None
        self._t0: float | None = None
        self._next_pts = 0

    async def recv(self) -> Frame:
        while self._inner is None:
            if self.readyState != "live" or self._expired():
                raise MediaStreamError
            source = self._lookup()
            self._inner = source.subscribe(self.kind) if source is not None else None
            if self._inner is None:
                await asyncio.sleep(_SOURCE_POLL_S)
        try:
            frame = await self._inner.recv()
        except MediaStreamError:
            self._on_ended()
            raise
        return self._own_copy(frame)

    def _own_copy(self, frame: Frame) -> Frame:
        """A copy with this viewer's own timeline. The relayed frame is shared with the session's recorder,
        which restamps it in its thread; an encoder reading that pts sees time jump (libvpx refuses)."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if isinstance(frame, VideoFrame):
            copy: VideoFrame = VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            pts = max(round((now - self._t0) * _VIDEO_CLOCK), self._next_pts)
            copy.pts = pts
            copy.time_base = Fraction(1, _VIDEO_CLOCK)
            self._next_pts = pts + 1
            return cast(Frame, copy)
        if isinstance(frame, AudioFrame):
            audio: AudioFrame = AudioFrame.from_ndarray(
                frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
            )
            audio.sample_rate = frame.sample_rate
            audio.pts = self._next_pts
            audio.time_base = Fraction(1, frame.sample_rate)
            self._next_pts += frame.samples
            return cast(Frame, audio)
        return frame

    def stop(self) -> None:
        super().stop()
        if self._inner is not None:
            self._inner.stop()


@dataclass
class WhepViewer:
    """One viewer: its peer, who opened it (sha256 of the credential or the staff user id) and what it
    watches (for the audit line and for ending every viewer of a finished call)."""

    resource_id: str
    owner: str
    subject: str
    pc: RTCPeerConnection
    deadline_s: float
    tracks: list[ForwardTrack] = field(default_factory=list)


class WhepEgress:
    """Opens, finds and ends WHEP viewers; one per app (on `app.state.whep_egress`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.viewers: dict[str, WhepViewer] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._dropping: set[asyncio.Task[None]] = set()

    def count(self, subject: str) -> int:
        """Live viewers of `subject`."""
        return sum(1 for v in self.viewers.values() if v.subject == subject)

    async def open(self, body: bytes, *, lookup: SourceLookup, owner: str, subject: str) -> tuple[str, str]:
        """POST: (resource id, SDP answer) relaying `lookup()`'s audio and video. BadInput for an offer that
        is not SDP or that the media stack cannot answer; TooManyRequests past calls.max_subscribers."""
        media = self.settings.media
        offer, summary = validate_offer(body, max_bytes=media.max_offer_bytes)
        if self.count(subject) >= self.settings.calls.max_subscribers:
            raise TooManyRequests("too many viewers of this session already")
        if media.loopback_only:
            offer = keep_loopback_candidates(offer)
        resource_id = secrets.token_urlsafe(16)
        deadline = time.monotonic() + self.settings.calls.max_call_s
        viewer = WhepViewer(
            resource_id, owner, subject, RTCPeerConnection(rtc_configuration(media.ice_servers)), deadline
        )
        pc = viewer.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            for kind in summary.media:
                track = ForwardTrack(
                    kind, lookup, lambda: time.monotonic() > deadline, lambda: self._drop_soon(resource_id)
                )
                viewer.tracks.append(track)
                pc.addTrack(track)  # takes the offer's transceiver of that kind: answered sendonly
            if media.loopback_only:
                await gather_loopback(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await self._close(viewer)
            log.warning("whep offer refused by the media stack", extra={"error": repr(exc)})
            raise BadInput(f"the SDP offer could not be answered ({type(exc).__name__})") from exc

        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._drop(resource_id)

        pc.on("connectionstatechange", on_state)
        self.viewers[resource_id] = viewer
        self._ensure_reaper()
        log.info("whep viewer opened", extra={"resource": resource_id, "subject": subject})
        return resource_id, str(pc.localDescription.sdp)

    async def delete(self, resource_id: str, owner: str) -> None:
        """DELETE: end a viewer (only its owner may)."""
        viewer = self.viewers.get(resource_id)
        if viewer is None:
            raise NotFoundError("no such WHEP viewer")
        if not hmac.compare_digest(viewer.owner, owner):
            raise Forbidden("this WHEP viewer was opened by someone else")
        await self._drop(resource_id)

    async def end_subject(self, subject: str) -> None:
        """End every viewer of `subject` (the call or check-in ended)."""
        for resource_id in [r for r, v in self.viewers.items() if v.subject == subject]:
            await self._drop(resource_id)

    async def close_all(self) -> None:
        """Server shutdown."""
        if self._reaper is not None:
            self._reaper.cancel()
        for resource_id in list(self.viewers):
            await self._drop(resource_id)

    def _drop_soon(self, resource_id: str) -> None:
        """The watched session ended: the viewer goes too (from a track's recv, so in a task of its own)."""
        if resource_id in self.viewers:
            task = asyncio.create_task(self._drop(resource_id))
            self._dropping.add(task)
            task.add_done_callback(self._dropping.discard)

    async def _drop(self, resource_id: str) -> None:
        viewer = self.viewers.pop(resource_id, None)
        if viewer is not None:
            await self._close(viewer)

    @staticmethod
    async def _close(viewer: WhepViewer) -> None:
        for track in viewer.tracks:
            track.stop()
        with contextlib.suppress(Exception):  # a half-negotiated peer may fail again while closing
            await viewer.pc.close()

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        while self.viewers:
            await asyncio.sleep(_REAP_EVERY_S)
            now = time.monotonic()
            for resource_id in [r for r, v in self.viewers.items() if now > v.deadline_s]:
                await self._drop(resource_id)
