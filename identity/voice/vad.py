"""Speech detection: which parts of a `Pcm16k` clip hold speech.

`SileroVad` (torch, worker processes only; its model ships in the silero-vad wheel and is verified
against the manifest) and `WebrtcVad` (light C extension, the fallback). Both return sample ranges.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from identity.checks import ModelStamp
from identity.models import ModelError, verified_path
from identity.voice.audio import SAMPLE_RATE_HZ, Pcm16k
from identity.voice.config import VadBackend, VoiceSettings

log = logging.getLogger(__name__)

Segment = tuple[int, int]
"""[start, end) in 16 kHz samples."""

_WEBRTC_FRAME_MS = 30  # webrtcvad accepts 10, 20 or 30 ms frames
_WEBRTC_MIN_RUN_FRAMES = 3  # runs under 90 ms are clicks or the detector's start-up flag, not speech


class SpeechDetector(Protocol):
    """Finds speech in 16 kHz mono audio."""

    @property
    def name(self) -> str:
        """Detector name for result details."""
        ...

    @property
    def stamp(self) -> ModelStamp | None:
        """Model stamp when the detector is a verified model, else None."""
        ...

    def segments(self, pcm16k: Pcm16k) -> list[Segment]:
        """Speech ranges [start, end) in samples, sorted, non-overlapping."""
        ...


def merge_segments(segments: list[Segment], pad: int, n: int) -> list[Segment]:
    """Pad each range by `pad` samples (clamped to [0, n]) and merge overlaps."""
    out: list[Segment] = []
    for start, end in sorted(segments):
        s, e = max(0, start - pad), min(n, end + pad)
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def speech_only(pcm16k: Pcm16k, segments: list[Segment]) -> Pcm16k:
    """The detected speech joined end to end; shape (sum of segment lengths,)."""
    if not segments:
        return Pcm16k(np.zeros(0, dtype=np.float32))
    return Pcm16k(np.concatenate([pcm16k[s:e] for s, e in segments]).astype(np.float32))


class WebrtcVad:
    """webrtcvad over 30 ms frames; contiguous speech frames become segments."""

    def __init__(self, settings: VoiceSettings) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(settings.webrtc_vad_mode)
        self._pad = settings.speech_pad_ms * SAMPLE_RATE_HZ // 1000

    @property
    def name(self) -> str:
        """Detector name."""
        return "webrtcvad"

    @property
    def stamp(self) -> ModelStamp | None:
        """webrtcvad has no weights file."""
        return None

    def segments(self, pcm16k: Pcm16k) -> list[Segment]:
        """Speech ranges [start, end) in samples."""
        frame = SAMPLE_RATE_HZ * _WEBRTC_FRAME_MS // 1000
        pcm = (np.clip(pcm16k, -1.0, 1.0) * 32767).astype("<i2")
        runs: list[Segment] = []
        for start in range(0, len(pcm) - frame + 1, frame):
            if self._vad.is_speech(pcm[start : start + frame].tobytes(), SAMPLE_RATE_HZ):
                if runs and runs[-1][1] == start:
                    runs[-1] = (runs[-1][0], start + frame)
                else:
                    runs.append((start, start + frame))
        long_runs = [r for r in runs if r[1] - r[0] >= _WEBRTC_MIN_RUN_FRAMES * frame]
        return merge_segments(long_runs, self._pad, len(pcm))


class SileroVad:
    """Silero VAD (TorchScript) loaded from its manifest-verified path; import in workers only."""

    def __init__(self, model_path: Path, stamp: ModelStamp, settings: VoiceSettings) -> None:
        import torch
        from silero_vad.utils_vad import get_speech_timestamps

        self._torch = torch
        self._get_ts = get_speech_timestamps
        self._model: Any = torch.jit.load(str(model_path), map_location="cpu")
        self._model.eval()
        self._stamp = stamp
        self._threshold = settings.vad_threshold
        self._pad_ms = settings.speech_pad_ms

    @property
    def name(self) -> str:
        """Detector name."""
        return "silero_vad"

    @property
    def stamp(self) -> ModelStamp | None:
        """Stamp of the verified silero weights."""
        return self._stamp

    def segments(self, pcm16k: Pcm16k) -> list[Segment]:
        """Speech ranges [start, end) in samples."""
        if len(pcm16k) == 0:
            return []
        stamps = self._get_ts(
            self._torch.from_numpy(np.ascontiguousarray(pcm16k, dtype=np.float32)),
            self._model,
            threshold=self._threshold,
            sampling_rate=SAMPLE_RATE_HZ,
            speech_pad_ms=self._pad_ms,
        )
        return merge_segments([(int(t["start"]), int(t["end"])) for t in stamps], 0, len(pcm16k))


def load_speech_detector(models_dir: Path, settings: VoiceSettings) -> SpeechDetector:
    """The configured detector; falls back to webrtcvad when silero cannot be verified or loaded."""
    if settings.vad_backend is VadBackend.SILERO:
        try:
            path, entry = verified_path("silero_vad", models_dir)
            return SileroVad(path, entry.stamp(), settings)
        except (ModelError, ImportError, RuntimeError) as exc:
            log.warning("silero VAD unavailable, using webrtcvad: %s", exc)
    return WebrtcVad(settings)
