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
    """How a check is taken: phone check-in, home AV station, breath test, or an officer's live call."""

    CHECKIN = "checkin"
    STATION = "station"
    BREATH = "breath"
    CALL = "call"  # an officer's live identification call (media_server.calls)


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


class VerdictOrigin(StrEnum):
    """What wrote an automatic verdict: a session has at most one of each (UNIQUE(session_id, origin))."""

    ANALYSIS = "analysis"  # the session's own checks (check-in pipeline, breath test, scheduler)
    EPISODE_CLOCK = "episode_clock"  # a breath episode's result, booked on a new session (the test not taken)


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
    """Home station hardware, and the gateways that report positions and device events."""

    AV_STATION = "av_station"
    BREATHALYZER = "breathalyzer"
    # A person's phone app or a tracker/bracelet gateway: signs position batches and device events (Ed25519).
    TRACKER = "tracker"

    @property
    def signs_with_ed25519(self) -> bool:
        """True for kinds registered with an Ed25519 public key that signs what they send."""
        return self in (DeviceKind.BREATHALYZER, DeviceKind.TRACKER)


class ArtifactKind(StrEnum):
    """What an evidence artifact is."""

    RECORDING = "recording"
    FRAME = "frame"
    AUDIO = "audio"
    PHOTO = "photo"
    READING = "reading"
    PACKAGE = "package"
    OTHER = "other"


class ZoneKind(StrEnum):
    """Inclusion: the person must be inside during its hours (home at night). Exclusion: must stay out."""

    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


class AlertKind(StrEnum):
    """A violation (the person broke a rule) or a technical alert (equipment; never booked as a violation)."""

    VIOLATION = "violation"
    TECHNICAL = "technical"


class AlertSource(StrEnum):
    """What raised an alert: a zone rule over positions, or a device event."""

    ZONE = "zone"
    DEVICE = "device"


class DeviceEventType(StrEnum):
    """Events a bracelet, tracker or home-unit gateway reports (media_server.location.policy maps them)."""

    STRAP_OPENED = "strap_opened"
    STRAP_CLOSED = "strap_closed"
    CASE_OPENED = "case_opened"
    CASE_CLOSED = "case_closed"
    POWER_LOST = "power_lost"
    POWER_RESTORED = "power_restored"
    OUT_OF_RANGE = "out_of_range"
    BACK_IN_RANGE = "back_in_range"
    LOW_BATTERY = "low_battery"
    DEVICE_FAULT = "device_fault"
    HEARTBEAT = "heartbeat"


class PositionSource(StrEnum):
    """Where a position fix came from."""

    GNSS = "gnss"  # satellite fix (GPS, GLONASS, Galileo, BeiDou)
    NETWORK = "network"  # cell / Wi-Fi positioning
    FUSED = "fused"  # the phone OS's fused provider
    CHECKIN = "checkin"  # the browser's geolocation on the check-in page


class PersonStatus(StrEnum):
    """A supervised person's life cycle: active, supervision ended (retention clock runs), erased."""

    ACTIVE = "active"
    SUPERVISION_ENDED = "supervision_ended"
    ERASED = "erased"


class RejectionSource(StrEnum):
    """Which entry point refused a submission whose bytes were kept."""

    BREATH = "breath"
