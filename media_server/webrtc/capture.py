"""What one WHIP session hands to the pipeline when it ends, and the port that receives it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


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
    - `frames`: sampled video frames as (t_s, rgb uint8 HxWx3).
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


class SessionSink(Protocol):
    """Receives a finished capture (the session pipeline in production, a fake in tests).

    May return an outcome dict; it is sent to the client as {"type": "outcome", **outcome}.
    """

    async def finish(self, capture: SessionCapture) -> dict[str, Any] | None: ...
