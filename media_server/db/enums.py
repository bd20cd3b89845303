"""Closed sets stored in the database. Stored values are stable: add members, never rename them."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What an account may do."""

    ADMIN = "admin"
    OFFICER = "officer"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"
    DEVICE = "device"
    PERSON = "person"


class SessionKind(StrEnum):
    """How a check is taken: phone check-in, home AV station, or breath test."""

    CHECKIN = "checkin"
    STATION = "station"
    BREATH = "breath"


class SessionStatus(StrEnum):
    """Life cycle of one check session."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    COMPLETED = "completed"
    TECHNICAL_FAILURE = "technical_failure"
    MISSED = "missed"
    CANCELLED = "cancelled"


class Decision(StrEnum):
    """A verdict or a reviewer's decision."""

    PASS = "pass"
    FAIL = "fail"
    REVIEW = "review"


class Modality(StrEnum):
    """Which biometric an enrolment template holds."""

    FACE = "face"
    VOICE = "voice"
    DIGITS = "digits"  # the person's own spoken digits 0-9 (identity.voice.digits templates)


class TemplateSource(StrEnum):
    """Where an enrolment template came from: the officer's enrolment or adaptive update."""

    ENROLMENT = "enrolment"
    ADAPTIVE = "adaptive"


class DeviceKind(StrEnum):
    """Home station hardware."""

    AV_STATION = "av_station"
    BREATHALYZER = "breathalyzer"


class ArtifactKind(StrEnum):
    """What an evidence artifact is."""

    RECORDING = "recording"
    FRAME = "frame"
    AUDIO = "audio"
    PHOTO = "photo"
    READING = "reading"
    PACKAGE = "package"
    OTHER = "other"
