"""One WHIP session on the server: an aiortc peer, its consumers, the challenge, the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from identity.liveness.config import LivenessSettings
from media_server.auth import WhipPrincipal
from media_server.errors import BadInput
from media_server.settings import MediaSettings
from media_server.webrtc.analysis import FrameAdvisor, sample_frame
from media_server.webrtc.capture import EndedReason, SessionCapture, SessionSink
from media_server.webrtc.challenge import plan_prompts, plan_windows, session_challenge
from media_server.webrtc.ice import gather_loopback, rtc_configuration
from media_server.webrtc.live import LiveAnalyser, LiveFaceAnalysis, return_freed_memory
from media_server.webrtc.remux import Recorder, open_session_recorder
from media_server.webrtc.sampling import FeedbackDebouncer, FrameSampler

log = logging.getLogger("kuzet.webrtc")

DATA_CHANNEL_LABEL = "kuzet"
# Watchdog granularity: how late a timeout may fire.
_WATCH_EVERY_S = 0.2
_LOCATION_LIMITS = {"lat": 90.0, "lon": 180.0}
_MAX_ACCURACY_M = 1_000_000.0
_MAX_TEXT = 64


class MediaSession:
    """Consumes the tracks of one peer without blocking the loop and ends exactly once.

    Ends on: the challenge finishing ("completed"), DELETE ("client_hangup"), ICE failure or a media
    stall ("connection_failed"), no media at all ("no_media_timeout"), max_session_s ("max_duration").
    """

    def __init__(
        self,
        *,
        resource_id: str,
        principal: WhipPrincipal,
        media: MediaSettings,
        liveness: LivenessSettings,
        sink: SessionSink,
        advisor: FrameAdvisor | None,
        workdir: Path,
        on_closed: Callable[[str], None],
        ends_after_challenge: bool = True,
        live: LiveFaceAnalysis | None = None,
    ) -> None:
        self.resource_id = resource_id
        self.principal = principal
        self._media = media
        self._sink = sink
        self._advisor = advisor
        self._workdir = workdir
        self._on_closed = on_closed
        self._t0 = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.pc = RTCPeerConnection(rtc_configuration(media.ice_servers))
        self._relay = MediaRelay()
        # The peer's own tracks by kind, for read-only subscribers (WHEP egress: a call, a watching officer).
        self._sources: dict[str, MediaStreamTrack] = {}
        # False for a call: the challenge runs at its start, and the officer ends the session.
        self._ends_after_challenge = ends_after_challenge
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finish_task: asyncio.Task[None] | None = None
        self._channel: RTCDataChannel | None = None
        self._channel_open = asyncio.Event()
        self._media_started = asyncio.Event()
        self._deleted = asyncio.Event()
        self.closed = asyncio.Event()
        self._liveness = liveness
        self._sampler: FrameSampler[Any] = FrameSampler(
            between_every_s=media.sample_every_s,
            window_max_fps=media.window_max_fps,
            max_frames=media.max_sampled_frames,
            retain=live is None,
        )
        # Frames are analysed as they arrive; the session keeps only a few (see webrtc/live.py).
        self._live: LiveAnalyser | None = (
            LiveAnalyser(
                live,
                chunk_frames=media.analysis_chunk_frames,
                max_pending=media.max_pending_frames,
                held_every_s=media.held_frame_every_s,
                max_held=media.max_held_frames,
                embed_best=media.embed_best_frames,
            )
            if live is not None
            else None
        )
        self._feedback = FeedbackDebouncer(hold_s=media.feedback_hold_s)
        self._next_hint_s = 0.0
        self._events: list[dict[str, Any]] = []
        self._location: dict[str, Any] | None = None
        self._last_media_s: float | None = None
        self._kinds: set[str] = set()
        self._recorder: Recorder | None = None
        self._control: list[asyncio.Task[None]] = []
        self.challenge = session_challenge(principal.challenge, liveness)
        self.end_reason: EndedReason | None = None
        self.outcome: dict[str, Any] | None = None
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "video_frames_received",
                "audio_frames_received",
                "frames_sampled",
                "frames_sampled_in_windows",
                "frames_refused_cap",
                "feedback_sent",
                "invalid_messages",
                "events_dropped",
            ),
            0,
        )

    @property
    def busy(self) -> bool:
        """True while the session costs the node work: live, or ended and not yet judged."""
        return self.end_reason is None or (self.outcome is None and not self.closed.is_set())

    @property
    def analysis_lagging(self) -> bool:
        """True while this session's live analysis is falling behind its camera."""
        return self._live is not None and self._live.lagging

    @property
    def frames_held(self) -> int:
        """Video frames this session holds now (sampled and waiting, or kept for the end)."""
        return len(self._sampler.frames) + (self._live.frames_held if self._live is not None else 0)

    def now(self) -> float:
        """Seconds on the session clock (0 = the session object was created)."""
        return time.monotonic() - self._t0

    # --- setup -------------------------------------------------------------------------------

    async def accept(self, offer_sdp: str, kinds: tuple[str, ...], has_data_channel: bool) -> str:
        """Apply a validated offer and return the SDP answer (ICE gathered, non-trickle)."""
        self._kinds = set(kinds)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, KeyError, IndexError) as exc:
            raise BadInput(f"SDP offer rejected: {exc}") from exc
        if self._media.loopback_only:
            await gather_loopback(self.pc)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        # Before the receivers start (they start once ICE connects): the remuxer hooks them here.
        self._recorder = open_session_recorder(
            self.pc, self._workdir / "session", self._kinds, self._media, clock=self.now
        )
        self._recorder.start()
        self._control = [
            self._spawn(self._watchdog()),
            self._spawn(self._run_challenge(has_data_channel)),
        ]
        return str(self.pc.localDescription.sdp)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task failed", exc_info=task.exception(), extra={"session": self.resource_id})

    # --- media -------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in ("audio", "video"):
            return
        self._sources[track.kind] = track
        # The recorder must see every frame (its own consumer is only an enqueue); analysis may skip.
        self._spawn(self._record(self._relay.subscribe(track, buffered=True), track.kind))
        if track.kind == "video":
            self._spawn(self._analyse(self._relay.subscribe(track, buffered=False)))

    def subscribe(self, kind: str) -> MediaStreamTrack | None:
        """A live, unbuffered copy of the peer's `kind` track (None before it arrives or after the end);
        a slow subscriber skips frames, it never holds back the recorder or the analysis."""
        source = self._sources.get(kind)
        if source is None or self.end_reason is not None:
            return None
        return self._relay.subscribe(source, buffered=False)

    def _mark_media(self, t_s: float) -> None:
        self._last_media_s = t_s
        if not self._media_started.is_set():
            self._media_started.set()

    async def _record(self, track: MediaStreamTrack, kind: str) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if self.end_reason is not None:
                continue  # keep draining while the outcome is computed, or aiortc's queue grows
            t_s = self.now()
            self._mark_media(t_s)
            self.stats[f"{kind}_frames_received"] += 1
            if self._recorder is not None:
                self._recorder.push(kind, t_s, frame)

    async def _analyse(self, track: MediaStreamTrack) -> None:
        sampler = self._sampler
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            t_s = self.now()
            if self.end_reason is not None or not sampler.wants(t_s):
                continue
            hint = t_s >= self._next_hint_s
            if hint:
                self._next_hint_s = t_s + self._media.feedback_every_s
            # Frames arriving meanwhile are skipped by the unbuffered relay: the conversion is a few ms,
            # and the (slower) hint runs only every feedback_every_s, so a window keeps the camera's rate.
            rgb, code = await asyncio.to_thread(sample_frame, frame, self._advisor if hint else None)
            if self.end_reason is not None:
                continue
            if sampler.keep(round(t_s, 3), rgb):
                self.stats["frames_sampled"] += 1
                if self._live is not None:
                    self._live.offer(round(t_s, 3), rgb)
                if sampler.in_window(t_s):
                    self.stats["frames_sampled_in_windows"] += 1
            else:
                self.stats["frames_refused_cap"] += 1
            send = self._feedback.feed(t_s, code) if code is not None else None
            if send is not None and self._send(
                {"type": "feedback", "code": send.value, "t_s": round(t_s, 3)}
            ):
                self.stats["feedback_sent"] += 1

    # --- control -----------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        media = self._media
        while self.end_reason is None:
            await asyncio.sleep(_WATCH_EVERY_S)
            t_s = self.now()
            if t_s >= media.max_session_s:
                self.end(EndedReason.MAX_DURATION)
            elif self._last_media_s is None and t_s >= media.no_media_timeout_s:
                self.end(EndedReason.NO_MEDIA_TIMEOUT)
            elif self._last_media_s is not None and t_s - self._last_media_s >= media.no_media_timeout_s:
                self.end(EndedReason.CONNECTION_FAILED)  # media stalled: the peer is gone

    async def _run_challenge(self, has_data_channel: bool) -> None:
        await self._media_started.wait()
        if has_data_channel:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._channel_open.wait(), self._media.no_media_timeout_s)
        lead_in_s, steps = plan_prompts(self.challenge)
        # Dense sampling from the baseline before each prompt to the end of its window, planned now
        # (the baseline lies before the prompt) and stretched when a prompt goes out late.
        windows = plan_windows(self.now(), lead_in_s, steps, self._liveness.baseline_s)
        indexes = [self._sampler.add_window(start, end) for start, end in windows]
        # The lead-in collects a baseline (face straight, room noise) before the first prompt.
        await asyncio.sleep(lead_in_s)
        for index, step in enumerate(steps):
            message = step.message(index, self.now())
            self._sampler.extend_window(indexes[index], self.now() + step.window_s)
            delivered = self._send(message)
            self._record_event({**message, "delivered": delivered})
            await asyncio.sleep(step.window_s + (step.gap_s if index < len(steps) - 1 else 0.0))
        if self._ends_after_challenge:
            self.end(EndedReason.COMPLETED)

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed") and self.end_reason is None:
            self.end(EndedReason.CONNECTION_FAILED)

    def hangup(self) -> None:
        """The client's DELETE: ends a running session, releases a finished one."""
        self._deleted.set()
        self.end(EndedReason.CLIENT_HANGUP)

    def end(self, reason: EndedReason) -> None:
        """End the session once; later calls are ignored. The finishing runs as its own task."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self._finish_task = asyncio.create_task(self._finish(reason))

    async def abort(self) -> None:
        """Tear down a session whose setup failed: nothing is handed to the sink."""
        self.end_reason = EndedReason.CONNECTION_FAILED
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()
        if self._recorder is not None:
            await self._recorder.close()
        if self._live is not None:
            await self._live.cancel()
        await asyncio.to_thread(shutil.rmtree, self._workdir, True)
        self.closed.set()
        self._on_closed(self.resource_id)

    # --- data channel ------------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL_LABEL or self._channel is not None:
            channel.close()
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._channel_open.set()
        channel.on("open", self._channel_open.set)

    def _send(self, message: dict[str, Any]) -> bool:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return False
        channel.send(json.dumps(message))
        return True

    def _record_event(self, event: dict[str, Any]) -> None:
        if len(self._events) >= self._media.max_events:
            self.stats["events_dropped"] += 1
            return
        self._events.append(event)

    def _on_message(self, message: str | bytes) -> None:
        t_s = round(self.now(), 3)
        event = self._parse_message(message, t_s)
        if event is None:
            self.stats["invalid_messages"] += 1
            return
        self._record_event(event)

    def _parse_message(self, message: str | bytes, t_s: float) -> dict[str, Any] | None:
        """The event a client message carries, None for anything malformed (counted, then dropped)."""
        if not isinstance(message, str) or len(message) > self._media.max_message_bytes:
            return None
        # RecursionError: a deeply nested message (`[` x 2000 fits in 4 KiB) is malformed input, not a
        # fault in aiortc's message handler (also caught around _event_of: str() of a nested value).
        try:
            return self._event_of(json.loads(message), t_s)
        except (ValueError, RecursionError):
            return None

    def _event_of(self, data: Any, t_s: float) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            return None
        kind = data.get("type")
        if kind == "ack":
            index = data.get("index")
            return {
                "type": "ack",
                "step": str(data.get("step", ""))[:_MAX_TEXT],
                "index": index if isinstance(index, int) else None,
                "t_s": t_s,
            }
        if kind == "location":
            fix = _location_fix(data)
            if fix is None:
                return None
            self._location = {"status": "ok", **fix, "t_s": t_s}
            return {"type": "location", **fix, "t_s": t_s}
        if kind == "location_denied":
            reason = str(data.get("reason", "denied"))[:_MAX_TEXT]
            if self._location is None or self._location.get("status") != "ok":
                self._location = {"status": "denied", "reason": reason, "t_s": t_s}
            return {"type": "location_denied", "reason": reason, "t_s": t_s}
        return None

    # --- the end -----------------------------------------------------------------------------

    async def _finish(self, reason: EndedReason) -> None:
        ended_at = datetime.now(UTC)
        for task in self._control:
            task.cancel()
        if reason is not EndedReason.COMPLETED:
            # The peer is gone or misbehaving: free its sockets now.
            await self.pc.close()
        self._send({"type": "status", "state": "processing", "t_s": round(self.now(), 3)})
        ending = time.monotonic()
        # The recording's tail and the last analysis chunk finish side by side.
        result, live = await asyncio.gather(
            self._recorder.close() if self._recorder is not None else _none(),
            self._live.finish() if self._live is not None else _none(),
        )
        closed_s = time.monotonic() - ending
        frames = [(h.t_s, h.rgb) for h in live.held] if live is not None else self._sampler.take()
        capture = SessionCapture(
            session_id=self.principal.session_id,
            person_id=self.principal.person_id,
            kind=self.principal.kind,
            device_id=self.principal.device_id,
            challenge=self.challenge,
            recording_path=result.path if result else None,
            recording_meta=result.meta if result else {},
            frames=frames,
            audio_pcm16k=result.audio_pcm16k if result else _empty_pcm(),
            audio_t0_s=result.audio_t0_s if result else None,
            events=sorted(
                [*self._events, *(result.events if result else [])], key=lambda e: float(e.get("t_s") or 0.0)
            ),
            location=self._location,
            ended_reason=reason,
            started_at=self.started_at,
            ended_at=ended_at,
            stats={**self.stats, **(result.counts if result else {}), **(live.stats if live else {})},
            live=live,
        )
        del frames, live, result
        log.info(
            "session ended",
            extra={"session": self.resource_id, "reason": reason.value, **capture.stats},
        )
        try:
            self.outcome = await self._sink.finish(capture)
            log.info(
                "session judged",
                extra={
                    "session": self.resource_id,
                    "media_closed_s": round(closed_s, 3),
                    "judged_s": round(time.monotonic() - ending, 3),
                },
            )
            await asyncio.to_thread(shutil.rmtree, self._workdir, True)
        except Exception:
            # Evidence first: keep the work directory so the recording can be recovered.
            log.exception("session sink failed; work directory kept", extra={"workdir": str(self._workdir)})
            self.outcome = {"status": "error", "code": "processing_failed", "retake": True}
        # The frames and audio are judged: let them go now, not after the linger below.
        del capture
        if self.outcome is not None:
            self._send({"type": "outcome", **self.outcome})
        await asyncio.to_thread(return_freed_memory)
        if reason is EndedReason.COMPLETED:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._deleted.wait(), self._media.outcome_linger_s)
        await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        self.closed.set()
        self._on_closed(self.resource_id)
        # The peer's decoders, jitter buffers and sockets are gone now too (the trim above ran before).
        await asyncio.to_thread(return_freed_memory)


async def _none() -> None:
    return None


def _empty_pcm() -> Any:
    import numpy as np

    return np.zeros(0, np.float32)


def _location_fix(data: dict[str, Any]) -> dict[str, float] | None:
    fix: dict[str, float] = {}
    for key in ("lat", "lon", "accuracy_m"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        fix[key] = float(value)
    if abs(fix["lat"]) > _LOCATION_LIMITS["lat"] or abs(fix["lon"]) > _LOCATION_LIMITS["lon"]:
        return None
    if not 0 <= fix["accuracy_m"] <= _MAX_ACCURACY_M:
        return None
    return fix
