"""The voice pipeline: quality gate -> silence trimming -> embedding -> enrolment / verification.

Takes a `SpeechDetector` and a `SpeakerEngine` (Protocols), so it is light itself; `VoicePipeline.load`
builds the real ones and belongs in worker processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identity.checks import CheckKind, CheckResult, Outcome
from identity.voice import quality
from identity.voice.audio import Pcm16k
from identity.voice.config import ScoreNorm, VoiceSettings
from identity.voice.engines import Embedding, SpeakerEngine
from identity.voice.scoring import (
    Calibration,
    Cohort,
    cohort_path,
    normalised_score,
    score_unit,
    settings_norm,
)
from identity.voice.template import VoiceTemplate
from identity.voice.vad import Segment, SpeechDetector, speech_only

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSpeech:
    """One clip after the quality gate: the clip, its speech segments, the speech alone, the gate result."""

    pcm16k: Pcm16k
    segments: list[Segment]
    speech: Pcm16k
    report: quality.QualityReport
    quality: CheckResult


@dataclass
class VoicePipeline:
    """Detector + engine + cohort + calibration under one settings group."""

    detector: SpeechDetector
    engine: SpeakerEngine
    settings: VoiceSettings
    cohort: Cohort | None = None
    calibration: Calibration | None = None

    @classmethod
    def load(cls, models_dir: Path, settings: VoiceSettings) -> VoicePipeline:
        """Build the real detector and engine (torch: worker processes only) and the shipped tables."""
        from identity.voice.engines import load_engine
        from identity.voice.vad import load_speech_detector

        detector = load_speech_detector(models_dir, settings)
        engine = load_engine(models_dir, settings)
        return cls(detector, engine, settings, load_cohort(engine), load_calibration())

    def prepare(self, pcm16k: Pcm16k) -> PreparedSpeech:
        """Detect speech and judge quality; shape (n,) at 16 kHz in."""
        segments = self.detector.segments(pcm16k)
        report = quality.measure(pcm16k, segments, self.settings)
        result = quality.judge(report, self.settings)
        detail_model = self.detector.stamp
        if detail_model is not None:
            result.details["vad_model"] = detail_model.to_dict()
        result.details["vad"] = self.detector.name
        return PreparedSpeech(pcm16k, segments, speech_only(pcm16k, segments), report, result)

    def embed(self, prepared: PreparedSpeech) -> Embedding:
        """Embedding of the clip, or of its speech alone when settings.trim_silence (and speech was found).

        Call after the gate passed; evaluation also calls it for clips the gate would refuse.
        """
        use_speech = self.settings.trim_silence and prepared.speech.size > 0
        return self.engine.embed(prepared.speech if use_speech else prepared.pcm16k)

    def enrol(
        self, utterances: Sequence[Pcm16k], metadata: dict[str, Any] | None = None
    ) -> tuple[VoiceTemplate | None, list[CheckResult]]:
        """Template from several utterances; results are each utterance's gate plus a VOICE summary."""
        results: list[CheckResult] = []
        embeddings: list[Embedding] = []
        speech_s: list[float] = []
        for pcm in utterances:
            prepared = self.prepare(pcm)
            results.append(prepared.quality)
            if prepared.quality.passed:
                embeddings.append(self.embed(prepared))
                speech_s.append(prepared.report.net_speech_s)
        need = self.settings.min_enrol_utterances
        if len(embeddings) < need:
            results.append(
                CheckResult(
                    CheckKind.VOICE,
                    Outcome.INCONCLUSIVE,
                    "enrolment_incomplete",
                    f"Only {len(embeddings)} of {len(utterances)} recordings were usable; {need} are needed.",
                    score=float(len(embeddings)),
                    threshold=float(need),
                    model=self.engine.stamp,
                    details={"score_unit": "usable utterances"},
                )
            )
            return None, results
        import numpy as np

        template = VoiceTemplate(
            self.engine.stamp, np.stack(embeddings).astype(np.float32), speech_s, metadata or {}
        )
        results.append(
            CheckResult(
                CheckKind.VOICE,
                Outcome.PASS,
                "enrolled",
                f"Voice enrolled from {len(embeddings)} recordings.",
                score=float(len(embeddings)),
                threshold=float(need),
                model=self.engine.stamp,
                details={"score_unit": "usable utterances", "speech_s": speech_s},
            )
        )
        return template, results

    def threshold(self) -> tuple[float | None, ScoreNorm, dict[str, Any]]:
        """Decision threshold for settings.target_fmr under the normalisation actually applied."""
        norm = settings_norm(self.settings, self.cohort)
        if self.calibration is None:
            return None, norm, {"calibration": "missing"}
        try:
            thr, details = self.calibration.threshold_for(
                self.engine.stamp.name, norm, self.settings.target_fmr
            )
        except KeyError as exc:
            return None, norm, {"calibration": str(exc)}
        return thr, norm, details

    def verify(self, template: VoiceTemplate, pcm16k: Pcm16k) -> list[CheckResult]:
        """[VOICE_QUALITY result, VOICE result] for one session's speech against a template."""
        prepared = self.prepare(pcm16k)
        stamp = self.engine.stamp
        if not prepared.quality.passed:
            gate = prepared.quality
            return [
                gate,
                CheckResult(
                    CheckKind.VOICE,
                    gate.outcome,
                    "quality_gate",
                    f"Voice not compared: {gate.message}",
                    model=stamp,
                    details={"quality_code": gate.code},
                ),
            ]
        if template.engine.weights_sha256 != stamp.weights_sha256 or template.engine.name != stamp.name:
            return [
                prepared.quality,
                CheckResult(
                    CheckKind.VOICE,
                    Outcome.TECHNICAL,
                    "engine_mismatch",
                    "The voice template was made by another engine; re-enrol the person.",
                    model=stamp,
                    details={"template_engine": template.engine.to_dict()},
                ),
            ]
        threshold, norm, cal = self.threshold()
        probe = self.embed(prepared)
        enrol = template.centroid
        score = normalised_score(enrol, probe, self.cohort, norm, self.settings.asnorm_top_k)
        details: dict[str, Any] = {
            **cal,
            "score_unit": score_unit(norm, self.cohort),
            "score_norm": norm.value,
            "cosine": float(enrol @ probe),
            "n_enrol": template.n,
            "net_speech_s": prepared.report.net_speech_s,
        }
        if threshold is None:
            return [
                prepared.quality,
                CheckResult(
                    CheckKind.VOICE,
                    Outcome.TECHNICAL,
                    "uncalibrated",
                    "No calibrated threshold for this engine; the voice was not judged.",
                    score=score,
                    model=stamp,
                    details=details,
                ),
            ]
        if score >= threshold:
            voice = CheckResult(
                CheckKind.VOICE,
                Outcome.PASS,
                "match",
                "The voice matches the enrolled person.",
                score=score,
                threshold=threshold,
                model=stamp,
                details=details,
            )
        else:
            voice = CheckResult(
                CheckKind.VOICE,
                Outcome.FAIL,
                "no_match",
                "The voice does not match the enrolled person.",
                score=score,
                threshold=threshold,
                model=stamp,
                details=details,
            )
        return [prepared.quality, voice]


def load_cohort(engine: SpeakerEngine) -> Cohort | None:
    """The shipped cohort for this engine's weights, or None (then scores are plain cosine)."""
    path = cohort_path(engine.stamp.name)
    if not path.is_file():
        log.warning("no voice cohort at %s; scores are not normalised", path)
        return None
    cohort = Cohort.load(path)
    if cohort.engine.weights_sha256 != engine.stamp.weights_sha256:
        log.warning("voice cohort %s was built with other weights; scores are not normalised", path)
        return None
    return cohort


def load_calibration() -> Calibration | None:
    """The shipped calibration table, or None when it has not been produced."""
    from identity.voice.scoring import CALIBRATION_PATH

    if not CALIBRATION_PATH.is_file():
        log.warning("no voice calibration at %s", CALIBRATION_PATH)
        return None
    return Calibration.load(CALIBRATION_PATH)
