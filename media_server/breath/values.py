"""The values of a breath-test submission: the bounded upload, its route, the outcome, the retest asked."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.db.enums import Decision
from sobriety.policy import OrderLimit
from sobriety.reading import RegisteredDevice

log = logging.getLogger("kuzet.breath")


SYSTEM_ACTOR = "system"
SESSION_KIND_LABEL = "breath"
PHOTO_CONTENT_TYPES = frozenset({"image/jpeg", "image/png"})
# Checks a breath verdict cannot PASS without (PAD is added when `sobriety.require_pad` is set).
REQUIRED_KINDS = (
    CheckKind.BREATH_SIGNATURE,
    CheckKind.BREATH_READING,
    CheckKind.BREATH_PHOTO,
    CheckKind.FACE,
    CheckKind.PHOTO_REUSE,
)


@dataclass(frozen=True)
class Upload:
    """One bounded, parsed submission: reading bytes, signature text, photos (field, bytes, content type)."""

    reading: bytes
    signature: str
    photos: list[tuple[str, bytes, str]]


@dataclass(frozen=True)
class Retest:
    """What the station or person must do next for this episode."""

    code: str
    message: str
    stage: str | None
    due_at: datetime | None
    window_end: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the response."""
        return {
            "required": True,
            "code": self.code,
            "message": self.message,
            "stage": self.stage,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
        }


@dataclass
class BreathOutcome:
    """The result of one submission; `rejection` is set when it was not admitted or not valid."""

    session_id: str | None
    rejection: CheckResult | None
    checks: list[CheckResult] = field(default_factory=list)
    decision: Decision | None = None
    reasons: list[str] = field(default_factory=list)
    verdict_id: str | None = None
    retest: Retest | None = None
    episode: dict[str, Any] | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """True when the reading was admitted and valid (the verdict may still be REVIEW or FAIL)."""
        return self.rejection is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready response body (without the error fields the router adds for rejections)."""
        return {
            "session_id": self.session_id,
            "decision": self.decision.value if self.decision else None,
            "reasons": self.reasons,
            "checks": [c.to_dict() for c in self.checks],
            "retest": self.retest.to_dict() if self.retest else {"required": False},
            "episode": self.episode,
            "verdict_id": self.verdict_id,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class _Route:
    """Where a submission's evidence goes: the device and person it names, and the session opened."""

    serial: str | None
    device_id: str | None
    person_id: str | None
    session_id: str | None
    scheduled: bool = False
    problem: CheckResult | None = None
    # The device's person is no longer under supervision: refuse, store nothing but an audit line.
    inactive_person: str | None = None
    # A byte-identical resend (same reading, same signature) of a submission already stored on `session_id`.
    resend: bool = False
    # The station and the judging context as read while routing (one read of device and person per
    # submission); None when the route was rebuilt from a stored session (re-judging).
    device: RegisteredDevice | None = None
    context: BreathContext | None = None


@dataclass(frozen=True)
class BreathContext:
    """What a submission is judged against, loaded once: the person's names, the order, the calibration."""

    person_names: tuple[str, ...]
    order: OrderLimit
    order_source: str
    calibrated_on: date | None


def _sig(outcome: Outcome, code: str, message: str, **details: object) -> CheckResult:
    return CheckResult(CheckKind.BREATH_SIGNATURE, outcome, code, message, details=dict(details))
