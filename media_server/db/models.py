"""The relational schema (SQLAlchemy 2 typed declarative), portable between SQLite and PostgreSQL.

Conventions: string UUID4 primary keys (36 chars), timezone-aware UTC timestamps, JSON via
`sqlalchemy.JSON` (reassign a JSON attribute to change it: in-place mutation is not tracked),
closed sets as StrEnums stored as their values. The schema itself is owned by the Alembic
migrations in `media_server/migrations`; a test checks these models match them.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from media_server.db.enums import (
    AlertKind,
    AlertSource,
    ArtifactKind,
    Decision,
    DeviceEventType,
    DeviceKind,
    Modality,
    PersonStatus,
    PositionSource,
    RejectionSource,
    Role,
    SessionKind,
    SessionStatus,
    TemplateSource,
    VerdictOrigin,
    ZoneKind,
)
from media_server.db.types import StrEnumType, UTCDateTime, utcnow

# Stable constraint names so migrations (and SQLite batch mode) can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UUID_LEN = 36
SHA256_HEX_LEN = 64
PHASH_SET_HEX_LEN = 112  # sobriety.photos.phash_hex: 7 hashes x 16 hex digits
DEFAULT_TIMEZONE = "Asia/Almaty"
GENESIS_HASH = "0" * SHA256_HEX_LEN
# Artifact.meta entry naming the evidence-store version a row was written as (S3 versioned buckets)
ARTIFACT_VERSION_META = "version_id"


def new_id() -> str:
    """A fresh primary key: a random UUID4 as its 36-character string."""
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
        Any: JSON(),
    }


def _pk() -> Mapped[str]:
    return mapped_column(String(UUID_LEN), primary_key=True, default=new_id)


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow)


def _fk(target: str, *, nullable: bool = False) -> Mapped[Any]:
    return mapped_column(String(UUID_LEN), ForeignKey(target), nullable=nullable, index=True)


class Person(Base):
    """A supervised person. Erasure blanks personal data and sets `erased_at`; the row stays.

    `status` is the life cycle (media_server.lifecycle): active -> supervision_ended (the order's end
    date `supervision_ended_on`; `retention_until` counts from it) -> erased.
    """

    __tablename__ = "persons"

    id: Mapped[str] = _pk()
    external_ref: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    created_at: Mapped[datetime] = _created_at()
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retention_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The court order's alcohol limit and its unit; both None = the service default applies.
    order_brac_limit: Mapped[float | None] = mapped_column(Float)
    order_brac_unit: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[PersonStatus] = mapped_column(
        StrEnumType(PersonStatus), default=PersonStatus.ACTIVE, server_default=PersonStatus.ACTIVE.value
    )
    supervision_ended_on: Mapped[date | None] = mapped_column(Date)


class User(Base):
    """A login: staff (admin, officer, reviewer, auditor), a device account, or the supervised person."""

    __tablename__ = "users"

    id: Mapped[str] = _pk()
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(StrEnumType(Role))
    person_id: Mapped[str | None] = _fk("persons.id", nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created_at()


class Enrolment(Base):
    """One encrypted biometric template (AES-GCM ciphertext + nonce) and the model that made it."""

    __tablename__ = "enrolments"

    id: Mapped[str] = _pk()
    person_id: Mapped[str] = _fk("persons.id")
    modality: Mapped[Modality] = mapped_column(StrEnumType(Modality))
    template_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    template_nonce: Mapped[bytes] = mapped_column(LargeBinary)
    n_samples: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    source: Mapped[TemplateSource] = mapped_column(
        StrEnumType(TemplateSource), default=TemplateSource.ENROLMENT
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (CheckConstraint("n_samples >= 1", name="n_samples_positive"),)


class Device(Base):
    """A home station. Breathalyzers sign readings (Ed25519); AV stations present a key (sha256 kept)."""

    __tablename__ = "devices"

    id: Mapped[str] = _pk()
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[DeviceKind] = mapped_column(StrEnumType(DeviceKind))
    person_id: Mapped[str | None] = _fk("persons.id", nullable=True)
    public_key_b64: Mapped[str | None] = mapped_column(String(64))
    key_hash: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created_at()
    # Breathalyzer sensor calibration recorded by an admin (the older of it and the station's date counts).
    calibrated_on: Mapped[date | None] = mapped_column(Date)


class Schedule(Base):
    """When checks are due for a person; `rule` is the scheduler's JSON rule, read in `timezone`."""

    __tablename__ = "schedules"

    id: Mapped[str] = _pk()
    person_id: Mapped[str] = _fk("persons.id")
    kind: Mapped[SessionKind] = mapped_column(StrEnumType(SessionKind))
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = _fk("users.id", nullable=True)
    created_at: Mapped[datetime] = _created_at()


class CheckSession(Base):
    """One check (table `sessions`; named so it never shadows SQLAlchemy's Session).

    `token_hash` is the sha256 of the one-time check-in token; `token_used_at` marks it spent.
    """

    __tablename__ = "sessions"

    id: Mapped[str] = _pk()
    person_id: Mapped[str] = _fk("persons.id")
    kind: Mapped[SessionKind] = mapped_column(StrEnumType(SessionKind))
    status: Mapped[SessionStatus] = mapped_column(
        StrEnumType(SessionStatus), default=SessionStatus.SCHEDULED, index=True
    )
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    token_hash: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), unique=True)
    token_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    device_id: Mapped[str | None] = _fk("devices.id", nullable=True)
    location: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    challenge: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (CheckConstraint("window_end >= window_start", name="window_ordered"),)


class Artifact(Base):
    """One stored evidence object: its store key, SHA-256 and size. `spooled` = waiting for the S3 store."""

    __tablename__ = "artifacts"

    id: Mapped[str] = _pk()
    session_id: Mapped[str] = _fk("sessions.id")
    key: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(128))
    kind: Mapped[ArtifactKind] = mapped_column(StrEnumType(ArtifactKind))
    spooled: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _created_at()

    @property
    def version_id(self) -> str | None:
        """The store version this row was written as, which reads ask for (None: local store, spooled
        while S3 was down, or a row from before versions were kept: the store reads the first version)."""
        version = (self.meta or {}).get(ARTIFACT_VERSION_META)
        return str(version) if version else None


class CheckResultRecord(Base):
    """A stored `identity.checks.CheckResult` (table `check_results`)."""

    __tablename__ = "check_results"

    id: Mapped[str] = _pk()
    session_id: Mapped[str] = _fk("sessions.id")
    kind: Mapped[CheckKind] = mapped_column(StrEnumType(CheckKind))
    outcome: Mapped[Outcome] = mapped_column(StrEnumType(Outcome))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _created_at()

    @classmethod
    def from_check(cls, session_id: str, result: CheckResult) -> CheckResultRecord:
        """A row for `result`, taken in session `session_id`."""
        return cls(
            session_id=session_id,
            kind=result.kind,
            outcome=result.outcome,
            code=result.code,
            message=result.message,
            score=result.score,
            threshold=result.threshold,
            model_name=result.model.name if result.model else None,
            model_version=result.model.version if result.model else None,
            weights_sha256=result.model.weights_sha256 if result.model else None,
            details=dict(result.details),
        )

    def to_check(self) -> CheckResult:
        """The stored result as the domain value."""
        model = None
        if self.model_name is not None:
            model = ModelStamp(self.model_name, self.model_version or "", self.weights_sha256 or "")
        return CheckResult(
            kind=self.kind,
            outcome=self.outcome,
            code=self.code,
            message=self.message,
            score=self.score,
            threshold=self.threshold,
            model=model,
            details=dict(self.details or {}),
        )


class Verdict(Base):
    """The automatic decision for a session, with the thresholds and models it was judged under."""

    __tablename__ = "verdicts"

    id: Mapped[str] = _pk()
    session_id: Mapped[str] = _fk("sessions.id")
    decision: Mapped[Decision] = mapped_column(StrEnumType(Decision), index=True)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    retake_offered: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_version: Mapped[str] = mapped_column(String(32))
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    models: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    origin: Mapped[VerdictOrigin] = mapped_column(
        StrEnumType(VerdictOrigin),
        default=VerdictOrigin.ANALYSIS,
        server_default=VerdictOrigin.ANALYSIS.value,
    )
    created_at: Mapped[datetime] = _created_at()

    # One automatic verdict per session and origin: a redelivered job or a recovery sweep cannot write a
    # second analysis verdict. The breath episode clock books its results on a new session of its own
    # (`breath.clock.tick_episodes`), so in practice a session has one verdict.
    __table_args__ = (UniqueConstraint("session_id", "origin"),)


class Review(Base):
    """A reviewer's decision on a verdict; a comment is required."""

    __tablename__ = "reviews"

    id: Mapped[str] = _pk()
    session_id: Mapped[str] = _fk("sessions.id")
    verdict_id: Mapped[str] = _fk("verdicts.id")
    reviewer_id: Mapped[str] = _fk("users.id")
    decision: Mapped[Decision] = mapped_column(StrEnumType(Decision))
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (CheckConstraint("length(trim(comment)) > 0", name="comment_not_empty"),)


class BreathNonce(Base):
    """A reading nonce already seen from a device (replay protection); the primary key makes it unique."""

    __tablename__ = "breath_nonces"

    device_id: Mapped[str] = mapped_column(String(UUID_LEN), ForeignKey("devices.id"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class PhotoFingerprint(Base):
    """Perceptual hashes of a breath photo (`sobriety.photos.phash_hex`: 7 x 16 hex), to detect reuse."""

    __tablename__ = "photo_fingerprints"

    id: Mapped[str] = _pk()
    artifact_id: Mapped[str] = _fk("artifacts.id")
    session_id: Mapped[str] = _fk("sessions.id")
    person_id: Mapped[str] = _fk("persons.id")
    phash: Mapped[str] = mapped_column(String(PHASH_SET_HEX_LEN), index=True)
    created_at: Mapped[datetime] = _created_at()


class BreathEpisode(Base):
    """One breath test and its retests (`sobriety.policy.Episode` as JSON, with its transition history).

    `state`, `stage` and `due_at` are copies of the episode's fields for queries; `closed_at` is set when
    the episode reaches a terminal state.
    """

    __tablename__ = "breath_episodes"

    id: Mapped[str] = _pk()
    person_id: Mapped[str] = _fk("persons.id")
    state: Mapped[str] = mapped_column(String(32), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    episode: Mapped[dict[str, Any]] = mapped_column(JSON)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    first_session_id: Mapped[str | None] = _fk("sessions.id", nullable=True)
    last_session_id: Mapped[str | None] = _fk("sessions.id", nullable=True)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Erasure(Base):
    """Proof that a person's data was erased: what was removed (counts) and a sha256 over that record.

    `person_id` is deliberately not a foreign key: the proof outlives whatever it refers to.
    """

    __tablename__ = "erasures"

    id: Mapped[str] = _pk()
    person_id: Mapped[str] = mapped_column(String(UUID_LEN), index=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    proof_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))


class Rejection(Base):
    """A submission refused before it could belong to a session (unknown device, bad signature, ...).

    Its bytes are kept as `RejectionArtifact`s so retention and erasure cover them; `person_id` is the
    person the submitting device is assigned to, when there is one (None: nobody's, kept for
    `retention.unattributed_days`).
    """

    __tablename__ = "rejections"

    id: Mapped[str] = _pk()
    source: Mapped[RejectionSource] = mapped_column(StrEnumType(RejectionSource))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    device_id: Mapped[str | None] = _fk("devices.id", nullable=True)
    person_id: Mapped[str | None] = _fk("persons.id", nullable=True)
    serial: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()


class RejectionArtifact(Base):
    """One stored object of a rejected submission: store key, SHA-256, size; `meta` marks erasure."""

    __tablename__ = "rejection_artifacts"

    id: Mapped[str] = _pk()
    rejection_id: Mapped[str] = _fk("rejections.id")
    key: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(128))
    what: Mapped[str] = mapped_column(String(64))
    spooled: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _created_at()


class WebhookDeadLetter(Base):
    """A webhook delivery that failed for good: the exact signed body, its URL and the last error.

    `resolved_at` is set when a later retry delivered it.
    """

    __tablename__ = "webhook_dead_letters"

    id: Mapped[str] = _pk()
    event_id: Mapped[str] = mapped_column(String(128), index=True)
    event_type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _created_at()
    retried_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class AuditEntry(Base):
    """One row of the hash-chained, append-only audit log (write it only through `db.audit.append`).

    `prev_hash` is unique, so two rows can never claim the same predecessor: the chain cannot fork.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), unique=True)
    row_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))

    # sqlite_autoincrement: never reuse the id of a deleted last row.
    __table_args__ = (
        Index("ix_audit_log_subject", "subject_type", "subject_id"),
        {"sqlite_autoincrement": True},
    )


# ------------------------------------------------------------------ location monitoring (migration 0004)
class SignedBatch(Base):
    """A signed position or event batch exactly as a gateway sent it (body + signature): the evidence.

    Anyone holding the device's public key can re-verify `signature` over `body`.
    """

    __tablename__ = "signed_batches"

    id: Mapped[str] = _pk()
    device_id: Mapped[str] = _fk("devices.id")
    person_id: Mapped[str] = _fk("persons.id")
    kind: Mapped[str] = mapped_column(String(16))  # "positions" or "events"
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Position(Base):
    """One position fix, hash-chained per person in arrival order (`seq`), whatever its fix time `t`.

    `row_hash` is SHA-256 over the canonical JSON of the row's content and `prev_hash` (the person's
    previous row's hash, 64 zeros first); write only through `media_server.location.chain.append`.
    """

    __tablename__ = "positions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(String(UUID_LEN), ForeignKey("persons.id"))
    seq: Mapped[int] = mapped_column(Integer)
    t: Mapped[datetime] = mapped_column(UTCDateTime())
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    accuracy_m: Mapped[float] = mapped_column(Float)
    source: Mapped[PositionSource] = mapped_column(StrEnumType(PositionSource))
    device_id: Mapped[str | None] = _fk("devices.id", nullable=True)
    batch_id: Mapped[str | None] = _fk("signed_batches.id", nullable=True)
    batch_sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    prev_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    row_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))

    __table_args__ = (
        UniqueConstraint("person_id", "seq", name="uq_positions_person_seq"),
        UniqueConstraint("person_id", "prev_hash", name="uq_positions_person_prev_hash"),
        Index("ix_positions_person_t", "person_id", "t"),
        CheckConstraint("accuracy_m > 0", name="accuracy_positive"),
        {"sqlite_autoincrement": True},
    )


class LocationZone(Base):
    """An inclusion or exclusion zone of a person: a circle (centre, radius m) or a polygon (lon/lat ring).

    `geometry` is {"type": "circle", "lat", "lon", "radius_m"} or {"type": "polygon", "coordinates":
    [[lon, lat], ...]}; `hours` is {"start": "HH:MM", "end": "HH:MM"} in the person's time zone, or None
    (always). Deleting sets `deleted_at`: alerts keep pointing at the zone they were raised under.
    """

    __tablename__ = "location_zones"

    id: Mapped[str] = _pk()
    person_id: Mapped[str] = _fk("persons.id")
    kind: Mapped[ZoneKind] = mapped_column(StrEnumType(ZoneKind))
    label: Mapped[str] = mapped_column(String(200))
    geometry: Mapped[dict[str, Any]] = mapped_column(JSON)
    hours: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = _fk("users.id", nullable=True)
    created_at: Mapped[datetime] = _created_at()
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeviceEvent(Base):
    """One event a gateway reported (strap opened, power lost, ...) with the batch that carried it."""

    __tablename__ = "device_events"

    id: Mapped[str] = _pk()
    device_id: Mapped[str] = _fk("devices.id")
    person_id: Mapped[str] = _fk("persons.id")
    batch_id: Mapped[str] = _fk("signed_batches.id")
    type: Mapped[DeviceEventType] = mapped_column(StrEnumType(DeviceEventType))
    t: Mapped[datetime] = mapped_column(UTCDateTime())
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LocationAlert(Base):
    """A violation or technical alert from a zone rule (with the proving positions) or a device event."""

    __tablename__ = "location_alerts"

    id: Mapped[str] = _pk()
    person_id: Mapped[str] = _fk("persons.id")
    kind: Mapped[AlertKind] = mapped_column(StrEnumType(AlertKind), index=True)
    source: Mapped[AlertSource] = mapped_column(StrEnumType(AlertSource))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    zone_id: Mapped[str | None] = _fk("location_zones.id", nullable=True)
    device_event_id: Mapped[str | None] = _fk("device_events.id", nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime())
    position_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_location_alerts_person_started", "person_id", "started_at"),)


class RevokedToken(Base):
    """A login token ended by logout before its expiry (`jti` is the token's random id)."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(UUID_LEN))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
