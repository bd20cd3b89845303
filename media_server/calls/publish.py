"""The officer's side of a call: a WHIP-style publish that is recorded as evidence and relayed to the person.

No checks run on the officer's media; it is recorded (the same recorder as a check-in, in its own thread)
so the call's evidence holds both directions, and relayed unbuffered to the person's WHEP viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media_server.errors import BadInput
from media_server.settings import MediaSettings
from media_server.webrtc.ice import gather_loopback, rtc_configuration
from media_server.webrtc.recorder import RecorderResult
from media_server.webrtc.remux import Recorder, open_session_recorder

log = logging.getLogger("kuzet.calls")


class OfficerPublish:
    """One officer publish: an aiortc peer that only receives; its tracks are recorded and relayed."""

    def __init__(self, *, call_id: str, media: MediaSettings, workdir: Path) -> None:
        self.call_id = call_id
        self._media = media
        self._workdir = workdir
        self._t0 = time.monotonic()
        self.pc = RTCPeerConnection(rtc_configuration(media.ice_servers))
        self._relay = MediaRelay()
        self._sources: dict[str, MediaStreamTrack] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder: Recorder | None = None
        self.ended = False
        self.frames: dict[str, int] = {"audio": 0, "video": 0}

    async def accept(self, offer_sdp: str, kinds: tuple[str, ...]) -> str:
        """Apply a validated offer; the SDP answer (ICE gathered, non-trickle)."""
        self.pc.on("track", self._on_track)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, KeyError, IndexError) as exc:
            raise BadInput(f"SDP offer rejected: {exc}") from exc
        if self._media.loopback_only:
            await gather_loopback(self.pc)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await asyncio.to_thread(self._workdir.mkdir, parents=True, exist_ok=True)
        # The same recorder as a check-in (remuxed as received, or the re-encoding fallback), hooked on the
        # receivers before they start.
        self._recorder = open_session_recorder(
            self.pc, self._workdir / "officer", set(kinds), self._media, clock=self._now
        )
        self._recorder.start()
        return str(self.pc.localDescription.sdp)

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def subscribe(self, kind: str) -> MediaStreamTrack | None:
        """An unbuffered copy of the officer's `kind` track for the person's viewer (None until it arrives)."""
        source = self._sources.get(kind)
        if source is None or self.ended:
            return None
        return self._relay.subscribe(source, buffered=False)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in ("audio", "video"):
            return
        self._sources[track.kind] = track
        task = asyncio.create_task(self._record(self._relay.subscribe(track, buffered=True), track.kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, track: MediaStreamTrack, kind: str) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if self.ended:
                continue
            self.frames[kind] += 1
            if self._recorder is not None:
                self._recorder.push(kind, self._now(), frame)

    async def close(self) -> RecorderResult | None:
        """End the publish: the peer closes and the recording is finished (None when nothing was set up)."""
        self.ended = True
        with contextlib.suppress(Exception):  # a half-negotiated peer may fail again while closing
            await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        if self._recorder is None:
            return None
        return await self._recorder.close()

    async def discard(self) -> None:
        """Remove the work directory (after the recording was stored, or when nothing was recorded)."""
        await asyncio.to_thread(shutil.rmtree, self._workdir, True)

    def stats(self) -> dict[str, Any]:
        """Frames received so far, by kind."""
        return dict(self.frames)
