"""The check vocabulary shared by every pipeline: outcomes are values, not exceptions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class CheckKind(StrEnum):
    """What a check looked at. Stored values are stable."""

    FACE = "face"
    FACE_QUALITY = "face_quality"
    VOICE = "voice"
    VOICE_QUALITY = "voice_quality"
    PAD = "pad"
    LIVENESS = "liveness"
    AV_SYNC = "av_sync"
    SPOKEN_DIGITS = "spoken_digits"
    LOCATION = "location"
    MEDIA = "media"
    BREATH_READING = "breath_reading"
    BREATH_SIGNATURE = "breath_signature"
    BREATH_PHOTO = "breath_photo"
    PHOTO_REUSE = "photo_reuse"
    # Whether the person took the test in its window at all (a missed window is a FAIL of this kind).
    ATTENDANCE = "attendance"


class Outcome(StrEnum):
    """How a check ended.

    PASS and FAIL are decisions about the person. INCONCLUSIVE means the evidence could not decide
    (goes to human review). TECHNICAL means the system could not check at all (network, camera,
    engine): it offers a retake and is never booked as a violation.
    """

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    TECHNICAL = "technical"


@dataclass(frozen=True, slots=True)
class ModelStamp:
    """Which model produced a result: name, version and the sha256 of its weights."""

    name: str
    version: str
    weights_sha256: str

    def to_dict(self) -> dict[str, str]:
        """Plain dict for JSON storage."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One explained check outcome.

    `code` is a stable machine code ("no_face", "too_dark", "match"); `message` is what a person can act
    on ("Move closer to the camera"). `score` and `threshold` are in the check's own units, stated in
    `details["score_unit"]` where it is not obvious.
    """

    kind: CheckKind
    outcome: Outcome
    code: str
    message: str
    score: float | None = None
    threshold: float | None = None
    model: ModelStamp | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when the outcome is PASS."""
        return self.outcome is Outcome.PASS

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON storage; enum members become their stored values."""
        return {
            "kind": self.kind.value,
            "outcome": self.outcome.value,
            "code": self.code,
            "message": self.message,
            "score": self.score,
            "threshold": self.threshold,
            "model": self.model.to_dict() if self.model else None,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        """Inverse of `to_dict`."""
        model = data.get("model")
        return cls(
            kind=CheckKind(data["kind"]),
            outcome=Outcome(data["outcome"]),
            code=data["code"],
            message=data["message"],
            score=data.get("score"),
            threshold=data.get("threshold"),
            model=ModelStamp(**model) if model else None,
            details=dict(data.get("details") or {}),
        )
