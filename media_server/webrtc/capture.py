"""What one WHIP session hands to the pipeline when it ends, and the port that receives it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from media_server.webrtc.live import LiveResult


class EndedReason(StrEnum):
    """Why a session stopped. Only COMPLETED means the challenge ran to its end.

    Every other value is a technical interruption (retake path), never a violation.
    """

    COMPLETED = "completed"
    CLIENT_HANGUP = "client_hangup"
    CONNECTION_FAILED = "connection_failed"
    NO_MEDIA_TIMEOUT = "no_media_timeout"
    MAX_DURATION = "max_duration"
    SERVER_SHUTDOWN = "server_shutdown"


@dataclass(frozen=True, slots=True)
class SessionCapture:
    """Everything captured in one session. Times `t_s` are seconds on the session clock
    (0 = the offer was accepted), shared by frames, audio and data-channel events.

    - `recording_path`: the whole session as received (WebM: VP8 + Opus; Matroska when H.264), or a
      re-encoded fragmented MP4 (H.264 + AAC) where remuxing is impossible; None when no media ever
      arrived. It lives in a per-session work directory that is deleted after
      `SessionSink.finish` returns normally (kept when it raises, for recovery).
    - `frames`: video frames as (t_s, rgb uint8 HxWx3): with live analysis (`live` set) only the few
      frames the session held (best face quality per interval; `live.held[i]` describes `frames[i]`),
      else every sampled frame.
    - `live`: the face analysis made while the session ran (one entry per analysed frame), or None when
      the node analyses nothing live (then the checks analyse `frames` at the end).
    - `audio_pcm16k`: all received audio, float32 mono at 16 kHz in [-1, 1]; `audio_t0_s` is the
      session time of its first sample (None without audio).
    - `recording_meta`: the recording's format, codecs, `t0_s` (session time of its first frame), gap
      count, frames missing per kind and the first gaps.
    - `events`: session events sorted by `t_s`, each a dict with `t_s` and `type` ("prompt" sent by the
      server, "ack", "location", "location_denied" from the client, "recording_gap" from the recorder:
      a hole in the stored recording with its kind, cause, packets and frames missing).
    - `location`: the last valid location ({"status": "ok", lat, lon, accuracy_m, t_s}),
      {"status": "denied", "reason": ...} when the client refused it, or None when never sent.
    - `stats`: counters (video_frames_received, video_frames_recorded, recorder_dropped, ...).
    """

    session_id: str
    person_id: str
    kind: str
    device_id: str | None
    challenge: dict[str, Any] | None
    recording_path: Path | None
    frames: list[tuple[float, npt.NDArray[np.uint8]]]
    audio_pcm16k: npt.NDArray[np.float32]
    audio_t0_s: float | None
    events: list[dict[str, Any]]
    location: dict[str, Any] | None
    ended_reason: EndedReason
    started_at: datetime
    ended_at: datetime
    stats: dict[str, int] = field(default_factory=dict)
    recording_meta: dict[str, Any] = field(default_factory=dict)
    live: LiveResult | None = None

    def frame_index(self, i: int) -> int:
        """The index of `frames[i]` in the analysis series (`live.analyses`), or i without live analysis."""
        return self.live.held[i].index if self.live is not None else i

    def frame_at(self, index: int) -> npt.NDArray[np.uint8] | None:
        """The RGB frame behind analysis `index`, when the session kept it (None otherwise)."""
        if self.live is None:
            return self.frames[index][1] if 0 <= index < len(self.frames) else None
        for held, (_, rgb) in zip(self.live.held, self.frames, strict=True):
            if held.index == index:
                return rgb
        return None


class SessionSink(Protocol):
    """Receives a finished capture (the session pipeline in production, a fake in tests).

    May return an outcome dict; it is sent to the client as {"type": "outcome", **outcome}.
    """

    async def finish(self, capture: SessionCapture) -> dict[str, Any] | None: ...
