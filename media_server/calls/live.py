"""Live face results for the officer's screen during a call.

Every `calls.live_check_every_s` one frame of the person's video (the latest: the subscription is
unbuffered) goes through the face engine in the worker pool: is a face seen, and does it match the
enrolled template. These are indications for the officer only; the session's evidence, checks and verdict
come from the whole capture when the call ends (`media_server.checkin.flow.finish_session`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from av import VideoFrame

from identity.checks import CheckKind, CheckResult, Outcome
from identity.face import worker as face_worker
from identity.face.results import Template, template_from_bytes
from media_server.db.enums import Modality
from media_server.gallery import active_template
from media_server.jobs import run_engine
from media_server.services import Services
from media_server.webrtc.whep import TrackSource

log = logging.getLogger("kuzet.calls")

# How often the probe looks again for a person who has not published yet.
_SOURCE_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class LiveResult:
    """One probed frame: seconds since the probe started, whether a face was seen, the face check."""

    t_s: float
    face_seen: bool
    outcome: str | None
    code: str
    score: float | None
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON for the officer's page."""
        return {
            "t_s": round(self.t_s, 2),
            "face_seen": self.face_seen,
            "outcome": self.outcome,
            "code": self.code,
            "score": self.score,
            "threshold": self.threshold,
        }


def _rgb(frame: VideoFrame) -> npt.NDArray[np.uint8]:
    rgb: npt.NDArray[np.uint8] = frame.to_ndarray(format="rgb24")
    return rgb


class LiveProbe:
    """Runs until stopped; `results` holds the newest `keep` results, oldest first."""

    def __init__(
        self, services: Services, person_id: str, lookup: Callable[[], TrackSource | None], keep: int
    ) -> None:
        self._services = services
        self._person_id = person_id
        self._lookup = lookup
        self.results: deque[LiveResult] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    def start(self) -> None:
        """Start probing (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
            self._task.add_done_callback(self._done)

    def stop(self) -> None:
        """Stop probing; results are kept."""
        if self._task is not None:
            self._task.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("live probe failed", exc_info=task.exception())

    async def _run(self) -> None:
        services = self._services
        every_s = services.settings.calls.live_check_every_s
        stored = await asyncio.to_thread(active_template, services, self._person_id, Modality.FACE)
        template = template_from_bytes(stored) if stored is not None else None
        # A call nobody ends still stops: the link's validity plus the longest call.
        lifetime_s = services.settings.calls.link_valid_min * 60 + services.settings.calls.max_call_s
        while time.monotonic() - self._t0 < lifetime_s:
            source = self._lookup()
            track = source.subscribe("video") if source is not None else None
            if track is None:
                await asyncio.sleep(_SOURCE_POLL_S)
                continue
            try:
                while True:
                    frame = await track.recv()
                    if not isinstance(frame, VideoFrame):
                        continue
                    started = time.monotonic()
                    rgb = await asyncio.to_thread(_rgb, frame)
                    self.results.append(await self._judge(rgb, template))
                    await asyncio.sleep(max(0.0, every_s - (time.monotonic() - started)))
            except Exception as exc:  # the source ended (MediaStreamError) or a frame would not convert
                log.info("live probe source ended", extra={"error": repr(exc)})
            finally:
                track.stop()
            await asyncio.sleep(_SOURCE_POLL_S)

    async def _judge(self, rgb: npt.NDArray[np.uint8], template: Template | None) -> LiveResult:
        t_s = time.monotonic() - self._t0
        services = self._services
        if template is None:  # not enrolled: only whether a face is in view
            got = await run_engine(services, CheckKind.FACE, face_worker.analyse_frames, [rgb])
            if isinstance(got, CheckResult):
                return LiveResult(t_s, False, got.outcome.value, got.code, None, None)
            seen = bool(got) and got[0].primary_face is not None
            return LiveResult(t_s, seen, None, "not_enrolled" if seen else "no_face", None, None)
        # One frame against the template (the session's own check fuses many frames at the end).
        result = await run_engine(services, CheckKind.FACE, face_worker.verify_image, template, rgb)
        seen = result.code != "no_face" and result.outcome is not Outcome.TECHNICAL
        return LiveResult(t_s, seen, result.outcome.value, result.code, result.score, result.threshold)
