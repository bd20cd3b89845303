"""Voice quality gate: signal present, not clipped, enough net speech, speech above the noise.

Light module (numpy only). Outcomes: PASS, or INCONCLUSIVE (retake / review: the person's audio could
not be judged) or TECHNICAL (no signal at all: a muted or broken microphone). Never FAIL: bad audio
says nothing about who is speaking.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from identity.checks import CheckKind, CheckResult, Outcome
from identity.voice.audio import SAMPLE_RATE_HZ, Pcm16k
from identity.voice.config import VoiceSettings
from identity.voice.vad import Segment

_FRAME_S = 0.02  # 20 ms frames for the energy statistics
_MIN_NOISE_FRAMES = 5  # fewer non-speech frames than this: estimate the noise floor from percentiles
_NOISE_PERCENTILE = 10.0
_SNR_CAP_DB = 99.0  # reported for digitally clean pauses (noise power ~ 0)
_TINY = 1e-12


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Measured audio quality of one clip (16 kHz)."""

    duration_s: float
    net_speech_s: float
    n_segments: int
    rms_dbfs: float
    clipped_fraction: float
    snr_db: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for CheckResult details."""
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def _dbfs(power: float) -> float:
    return float(10 * np.log10(max(power, _TINY)))


def estimate_snr_db(pcm16k: Pcm16k, segments: list[Segment]) -> float:
    """Speech-to-noise ratio in dB from 20 ms frame powers: speech frames vs the non-speech floor."""
    frame = int(SAMPLE_RATE_HZ * _FRAME_S)
    n_frames = len(pcm16k) // frame
    if n_frames == 0 or not segments:
        return 0.0
    power = (pcm16k[: n_frames * frame].astype(np.float64).reshape(n_frames, frame) ** 2).mean(axis=1)
    is_speech = np.zeros(n_frames, dtype=bool)
    for start, end in segments:
        is_speech[start // frame : -(-end // frame)] = True
    if not is_speech.any():
        return 0.0
    noise_frames = power[~is_speech]
    if noise_frames.size >= _MIN_NOISE_FRAMES:
        noise = float(np.median(noise_frames))
    else:
        noise = float(np.percentile(power, _NOISE_PERCENTILE))
    speech = float(power[is_speech].mean())
    if noise <= _TINY:
        return _SNR_CAP_DB
    return float(np.clip(10 * np.log10(max(speech - noise, _TINY) / noise), -_SNR_CAP_DB, _SNR_CAP_DB))


def measure(pcm16k: Pcm16k, segments: list[Segment], settings: VoiceSettings) -> QualityReport:
    """Quality figures of a clip given its detected speech segments."""
    n = len(pcm16k)
    x = pcm16k.astype(np.float64)
    return QualityReport(
        duration_s=n / SAMPLE_RATE_HZ,
        net_speech_s=sum(e - s for s, e in segments) / SAMPLE_RATE_HZ,
        n_segments=len(segments),
        rms_dbfs=_dbfs(float(np.mean(x**2)) if n else 0.0),
        clipped_fraction=float(np.mean(np.abs(x) >= settings.clip_level)) if n else 0.0,
        snr_db=estimate_snr_db(pcm16k, segments),
    )


def judge(report: QualityReport, settings: VoiceSettings) -> CheckResult:
    """The VOICE_QUALITY CheckResult for a report: PASS, INCONCLUSIVE or TECHNICAL, never FAIL."""
    details = report.to_dict()

    def result(
        outcome: Outcome, code: str, message: str, score: float, threshold: float, unit: str
    ) -> CheckResult:
        return CheckResult(
            CheckKind.VOICE_QUALITY,
            outcome,
            code,
            message,
            score=score,
            threshold=threshold,
            details={**details, "score_unit": unit},
        )

    if report.rms_dbfs < settings.silence_rms_dbfs:
        return result(
            Outcome.TECHNICAL,
            "no_signal",
            "No sound was recorded; check that the microphone is on.",
            report.rms_dbfs,
            settings.silence_rms_dbfs,
            "dBFS",
        )
    if report.clipped_fraction > settings.max_clipped_fraction:
        return result(
            Outcome.INCONCLUSIVE,
            "clipped",
            "The recording is distorted; speak a little further from the microphone.",
            report.clipped_fraction,
            settings.max_clipped_fraction,
            "fraction of samples",
        )
    if report.net_speech_s == 0:
        return result(
            Outcome.INCONCLUSIVE,
            "no_speech",
            "No speech was heard; say the phrase clearly.",
            0.0,
            settings.min_net_speech_s,
            "seconds of speech",
        )
    if report.net_speech_s < settings.min_net_speech_s:
        return result(
            Outcome.INCONCLUSIVE,
            "too_little_speech",
            "Too little speech was heard; speak for longer.",
            report.net_speech_s,
            settings.min_net_speech_s,
            "seconds of speech",
        )
    if report.snr_db < settings.min_snr_db:
        return result(
            Outcome.INCONCLUSIVE,
            "too_noisy",
            "There is too much background noise; move somewhere quieter.",
            report.snr_db,
            settings.min_snr_db,
            "dB",
        )
    return result(
        Outcome.PASS,
        "quality_ok",
        "Audio quality is sufficient.",
        report.net_speech_s,
        settings.min_net_speech_s,
        "seconds of speech",
    )
