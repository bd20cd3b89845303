"""Audio intake: decode files and WebRTC PCM into 16 kHz mono float32 (`Pcm16k`).

Light module: numpy, scipy.signal and soundfile only (no torch), so the API process can decode and
gate audio before anything reaches a worker.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import NewType

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, Outcome
from identity.voice.config import VoiceSettings

SAMPLE_RATE_HZ = 16000
"""The rate every speech model here expects; not a tunable."""

Pcm16k = NewType("Pcm16k", npt.NDArray[np.float32])
"""Mono float32 samples at 16 kHz in [-1, 1], shape (n,)."""

_INT16_FULL_SCALE = 32768.0


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """Audio after intake: 16 kHz mono float32 plus what the source was."""

    pcm16k: Pcm16k
    source_rate_hz: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        """Length in seconds at 16 kHz."""
        return len(self.pcm16k) / SAMPLE_RATE_HZ


def _technical(code: str, message: str, **details: object) -> CheckResult:
    return CheckResult(CheckKind.VOICE_QUALITY, Outcome.TECHNICAL, code, message, details=dict(details))


def resample_to_16k(mono: npt.NDArray[np.float32], rate_hz: int) -> Pcm16k:
    """Polyphase resampling of mono float32 at `rate_hz` to 16 kHz; shape (n,) -> (n*16000/rate_hz,)."""
    if rate_hz == SAMPLE_RATE_HZ:
        return Pcm16k(np.ascontiguousarray(mono, dtype=np.float32))
    from scipy.signal import resample_poly

    ratio = Fraction(SAMPLE_RATE_HZ, rate_hz).limit_denominator(1000)
    out = resample_poly(mono.astype(np.float32), ratio.numerator, ratio.denominator)
    return Pcm16k(np.clip(out, -1.0, 1.0).astype(np.float32))


def int16_to_float32(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """int16 PCM -> float32 in [-1, 1); any shape."""
    return (samples.astype(np.float32) / _INT16_FULL_SCALE).astype(np.float32)


def pcm_int16_to_pcm16k(samples: npt.NDArray[np.int16], rate_hz: int, channels: int) -> Pcm16k:
    """Interleaved int16 PCM (shape (n*channels,), (1, n*channels) or (n, channels)) -> `Pcm16k`.

    Channels are averaged to mono, then resampled to 16 kHz.
    """
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise ValueError(f"expected int16 PCM, got {arr.dtype}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if arr.ndim == 2 and arr.shape[1] == channels and arr.shape[0] != 1:
        frames = arr
    else:
        flat = arr.reshape(-1)
        if flat.size % channels:
            raise ValueError(f"{flat.size} samples do not split into {channels} channels")
        frames = flat.reshape(-1, channels)
    mono = int16_to_float32(frames).mean(axis=1, dtype=np.float32)
    return resample_to_16k(mono, rate_hz)


def pcm48k_stereo_int16_to_pcm16k(samples: npt.NDArray[np.int16]) -> Pcm16k:
    """WebRTC Opus output (48 kHz, 2 channels, interleaved int16) -> `Pcm16k`; n/3 samples out."""
    return pcm_int16_to_pcm16k(samples, rate_hz=48000, channels=2)


def check_rate_and_length(
    n_samples: int, rate_hz: int, channels: int, settings: VoiceSettings
) -> CheckResult | None:
    """A TECHNICAL result when the source rate or duration is outside the settings; None when usable."""
    if not settings.min_sample_rate_hz <= rate_hz <= settings.max_sample_rate_hz:
        return _technical(
            "unsupported_sample_rate",
            f"Audio at {rate_hz} Hz cannot be used; record at "
            f"{settings.min_sample_rate_hz}-{settings.max_sample_rate_hz} Hz.",
            sample_rate_hz=rate_hz,
        )
    duration_s = n_samples / rate_hz
    if duration_s < settings.min_input_s:
        return _technical(
            "too_short",
            f"The recording is {duration_s:.2f} s long; at least {settings.min_input_s:.1f} s is needed.",
            duration_s=duration_s,
        )
    if duration_s > settings.max_input_s:
        return _technical(
            "too_long",
            f"The recording is {duration_s:.0f} s long; at most {settings.max_input_s:.0f} s is accepted.",
            duration_s=duration_s,
        )
    if channels < 1:
        return _technical("no_channels", "The recording has no audio channels.")
    return None


def decode_pcm(
    samples: npt.NDArray[np.int16], rate_hz: int, channels: int, settings: VoiceSettings
) -> DecodedAudio | CheckResult:
    """Raw interleaved int16 PCM (WebRTC frames joined) -> `DecodedAudio`, or a TECHNICAL CheckResult."""
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        return _technical("bad_pcm", f"PCM must be int16, got {arr.dtype}.")
    if channels < 1 or arr.size % channels:
        return _technical("bad_pcm", f"{arr.size} samples do not split into {channels} channel(s).")
    bad = check_rate_and_length(arr.size // channels, rate_hz, channels, settings)
    if bad is not None:
        return bad
    return DecodedAudio(pcm_int16_to_pcm16k(arr, rate_hz, channels), rate_hz, channels)


def decode_bytes(data: bytes, settings: VoiceSettings) -> DecodedAudio | CheckResult:
    """An encoded file (wav, flac, ogg: whatever libsndfile reads) -> `DecodedAudio`, or TECHNICAL."""
    import soundfile as sf

    if not data:
        return _technical("empty_audio", "No audio was received.")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate_hz = int(f.samplerate)
            channels = int(f.channels)
            frames = int(f.frames)
            bad = check_rate_and_length(frames, rate_hz, channels, settings)
            if bad is not None:
                return bad
            audio = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        return _technical(
            "undecodable_audio", "The audio file could not be read; record again.", error=str(exc)
        )
    if audio.size == 0:
        return _technical("empty_audio", "The audio file holds no samples.")
    mono = audio.mean(axis=1, dtype=np.float32)
    if not np.all(np.isfinite(mono)):
        return _technical("undecodable_audio", "The audio file holds invalid samples.")
    return DecodedAudio(resample_to_16k(np.clip(mono, -1.0, 1.0), rate_hz), rate_hz, channels)


def decode_path(path: str, settings: VoiceSettings) -> DecodedAudio | CheckResult:
    """Read and decode a file on disk; a missing file is TECHNICAL too."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return _technical("unreadable_file", "The audio file could not be opened.", error=str(exc))
    return decode_bytes(data, settings)
