"""Evidence first: recording, sampled frames, speech and the event log of one capture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from media_server.artifacts import StoredRef, jpeg_bytes, store_artifact, wav_bytes
from media_server.db.enums import ArtifactKind, SessionStatus
from media_server.db.models import CheckSession
from media_server.services import Services
from media_server.webrtc.capture import EndedReason, SessionCapture

EVIDENCE_FRAMES = 12
# The recorder's file suffix -> stored content type (WebM: VP8 + Opus as received; Matroska: H.264).
RECORDING_TYPES = {".webm": "video/webm", ".mkv": "video/x-matroska", ".mp4": "video/mp4"}


def recording_content_type(path: Path) -> str:
    """The content type of a session recording, from the suffix its recorder gave it."""
    return RECORDING_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _evidence_frames(frames: list[tuple[float, npt.NDArray[np.uint8]]]) -> list[int]:
    """Indexes of up to EVIDENCE_FRAMES frames spread evenly over the session."""
    if len(frames) <= EVIDENCE_FRAMES:
        return list(range(len(frames)))
    return sorted({int(round(i)) for i in np.linspace(0, len(frames) - 1, EVIDENCE_FRAMES)})


def store_capture_evidence(services: Services, capture: SessionCapture) -> list[StoredRef]:
    """Evidence first: recording, sampled frames, speech and the event log, each hashed and committed."""
    sid = capture.session_id
    refs: list[StoredRef] = []
    with services.sessions.begin() as db:
        row = db.get(CheckSession, sid)
        if row is not None:
            row.ended_at = capture.ended_at
            row.location = capture.location
            row.challenge = capture.challenge
            row.status = (
                SessionStatus.COMPLETED
                if capture.ended_reason is EndedReason.COMPLETED
                else SessionStatus.TECHNICAL_FAILURE
            )
            row.meta = {
                **(row.meta or {}),
                "ended_reason": capture.ended_reason.value,
                "stats": capture.stats,
            }
    if capture.recording_path is not None and capture.recording_path.exists():
        refs.append(
            store_artifact(
                services,
                sid,
                ArtifactKind.RECORDING,
                recording_content_type(capture.recording_path),
                {**capture.recording_meta, "ended_reason": capture.ended_reason.value},
                path=capture.recording_path,
            )
        )
    for i in _evidence_frames(capture.frames):
        t_s, rgb = capture.frames[i]
        h, w = rgb.shape[:2]
        refs.append(
            store_artifact(
                services,
                sid,
                ArtifactKind.FRAME,
                "image/jpeg",
                {"t_s": round(t_s, 3), "frame_index": capture.frame_index(i), "width": w, "height": h},
                data=jpeg_bytes(rgb),
            )
        )
    if capture.audio_pcm16k.size:
        refs.append(
            store_artifact(
                services,
                sid,
                ArtifactKind.AUDIO,
                "audio/wav",
                {"t0_s": capture.audio_t0_s, "seconds": round(capture.audio_pcm16k.size / 16000, 2)},
                data=wav_bytes(capture.audio_pcm16k),
            )
        )
    events = json.dumps(
        {"events": capture.events, "location": capture.location, "stats": capture.stats},
        default=str,
        sort_keys=True,
    ).encode()
    refs.append(
        store_artifact(
            services, sid, ArtifactKind.OTHER, "application/json", {"what": "session_events"}, data=events
        )
    )
    return refs
