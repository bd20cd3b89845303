"""Breath tests from home stations: evidence first, admission, reading policy, photos, retests, verdict.

`submit_breath_test` is the whole flow behind `POST /api/v1/breath-tests` (the router only bounds and
parses the upload and maps the outcome to HTTP):

1. Evidence first. The device serial is read leniently from the reading to find the station and its
   person. When both are known, a breath `CheckSession` is opened (or the person's open scheduled breath
   session is claimed) and the reading, its signature and every photo are stored with artifact rows
   (`pipeline.store_artifact`). When they are not, the bytes are still stored (content-addressed) and an
   audit entry `breath_rejected` lists their keys and sha256: nothing received is lost.
2. Admission (`sobriety.reading.admit_submission`) on the devices table and the nonce ledger, then
   `validate_reading`. A rejection is recorded as check results and a verdict on the session, and audited.
3. An admitted reading is judged against the person's order limit at the stage the retest episode
   expects; the photos are analysed in the worker pool against the enrolled face template and judged
   against the fingerprints of every earlier breath photo; the episode moves on; `pipeline.write_verdict`
   signs the manifest and writes the verdict; webhooks announce it.

Policy choices made here (documented in the API too):

* There is no per-order limit table yet: every person is judged under `sobriety.default_limit_g_210l`.
* A forged signature, a replayed nonce or a malformed reading is recorded with its integrity FAIL turned
  into INCONCLUSIVE (`details["integrity_violation"] = True`), so the verdict is REVIEW, not FAIL: a
  forgery or replay may come from someone other than the person (or a station retrying a send), and a
  person-level violation needs a human to attribute it.
* A submission claims the person's open scheduled breath session only when its signature verifies and
  its nonce is new (routing only; admission decides); anything else opens an unscheduled session, so a
  replayed reading cannot use up the person's scheduled test.
* A reading whose photos clearly show someone else, or reuse an earlier photo file, is not used by the
  retest episode (a retake is requested); the verdict records the violation.

Never a 500 for what the station sent: engine crashes and undecodable photos are TECHNICAL results.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face.results import TemplateError, template_from_bytes
from media_server.db import audit
from media_server.db.enums import (
    ArtifactKind,
    Decision,
    DeviceKind,
    Modality,
    SessionKind,
    SessionStatus,
    VerdictOrigin,
)
from media_server.db.models import (
    Artifact,
    BreathEpisode,
    BreathNonce,
    CheckSession,
    Device,
    Person,
    PhotoFingerprint,
)
from media_server.db.types import utcnow
from media_server.gallery import active_template
from media_server.pipeline import (
    StoredRef,
    _run_engine,
    announce,
    store_artifact,
    write_verdict,
)
from media_server.services import Services
from media_server.verdict import VerdictOutcome
from sobriety.config import SobrietySettings
from sobriety.photos import PhotoMatch, judge_breath_photos, phash_from_hex, phash_hex, set_distance
from sobriety.policy import (
    Action,
    ActionKind,
    Episode,
    EventKind,
    OrderLimit,
    RetestEvent,
    RetestState,
    TestStage,
    evaluate_reading,
    event_for,
    expected_stage,
    next_state,
    open_episode,
)
from sobriety.reading import (
    Admission,
    BreathReading,
    RegisteredDevice,
    admit_submission,
    validate_reading,
    verify_signature,
)
from sobriety.units import AlcoholUnit
from sobriety.worker import PhotoJobResult, analyse_photos_job

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


# --------------------------------------------------------------------------------------------- adapters
class DbDeviceRegistry:
    """`sobriety.reading.DeviceRegistry` on the devices table (breathalyzers with a public key only)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get_device(self, serial: str) -> RegisteredDevice | None:
        """The registered breathalyzer with this serial (device_id = Device.id), or None."""
        with self._sessions() as db:
            row = db.scalars(select(Device).where(Device.serial == serial)).one_or_none()
            if row is None or row.kind is not DeviceKind.BREATHALYZER or not row.public_key_b64:
                return None
            return RegisteredDevice(
                serial=row.serial,
                public_key_b64=row.public_key_b64,
                active=row.active,
                calibrated_on=row.calibrated_on,
                device_id=row.id,
            )


class DbNonceLedger:
    """`sobriety.reading.NonceLedger` on breath_nonces; the (device, nonce) primary key makes it atomic."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def seen(self, device_id: str, nonce: str) -> bool:
        """True when this device already used this nonce."""
        with self._sessions() as db:
            return db.get(BreathNonce, (device_id, nonce)) is not None

    def remember(self, device_id: str, nonce: str, at: datetime) -> bool:
        """Insert the nonce in its own transaction; False when a concurrent or earlier insert won."""
        try:
            with self._sessions.begin() as db:
                db.add(BreathNonce(device_id=device_id, nonce=nonce, seen_at=at))
        except DbIntegrityError:
            return False
        return True


def prune_nonces(db: Session, now: datetime, settings: SobrietySettings) -> int:
    """Delete nonces older than any reading still admissible (`nonce_max_age_s + clock_skew_s`)."""
    cutoff = now - timedelta(seconds=settings.nonce_max_age_s + settings.clock_skew_s)
    result = db.execute(delete(BreathNonce).where(BreathNonce.seen_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


class DbPhotoIndex:
    """`sobriety.photos.PhotoIndex` on photo_fingerprints: every earlier breath photo of anyone.

    `find` scans every fingerprint (with its artifact's sha256) and compares pHash sets in Python, a few
    microseconds per row; `add` writes in the caller's transaction. Photo ids are artifact ids and test
    ids are session ids.
    """

    def __init__(self, db: Session, person_id: str) -> None:
        self._db = db
        self._person_id = person_id

    def find(self, hashes: tuple[int, ...], sha256: str, max_distance: int) -> list[PhotoMatch]:
        """Earlier photos within `max_distance` bits (`set_distance`) of `hashes`, or with the same sha256."""
        rows = self._db.execute(
            select(
                PhotoFingerprint.artifact_id,
                PhotoFingerprint.session_id,
                PhotoFingerprint.phash,
                Artifact.sha256,
            ).join(Artifact, Artifact.id == PhotoFingerprint.artifact_id)
        )
        out = []
        for artifact_id, session_id, stored, digest in rows:
            d = set_distance(phash_from_hex(stored), hashes)
            if d <= max_distance or digest == sha256:
                out.append(PhotoMatch(artifact_id, session_id, d, digest == sha256))
        return sorted(out, key=lambda m: (not m.exact, m.distance))

    def add(self, photo_id: str, test_id: str, hashes: tuple[int, ...], sha256: str) -> None:
        """Record a photo (artifact `photo_id`) of test (session) `test_id`."""
        self._db.add(
            PhotoFingerprint(
                artifact_id=photo_id, session_id=test_id, person_id=self._person_id, phash=phash_hex(hashes)
            )
        )


# --------------------------------------------------------------------------------------------- values
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


def _sig(outcome: Outcome, code: str, message: str, **details: Any) -> CheckResult:
    return CheckResult(CheckKind.BREATH_SIGNATURE, outcome, code, message, details=dict(details))


# --------------------------------------------------------------------------------------------- evidence
def _lenient_fields(reading: bytes) -> dict[str, Any]:
    """The reading's JSON object even when not canonical ({} when not JSON): only to route evidence."""
    try:
        obj = json.loads(reading.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _route(services: Services, upload: Upload, now: datetime) -> _Route:
    """Find device and person, then claim an open scheduled breath session or open an unscheduled one."""
    fields = _lenient_fields(upload.reading)
    serial = fields.get("device_serial")
    if not isinstance(serial, str) or not 0 < len(serial) <= 64:
        return _Route(None, None, None, None)
    with services.sessions.begin() as db:
        device = db.scalars(select(Device).where(Device.serial == serial)).one_or_none()
        if device is None or device.kind is not DeviceKind.BREATHALYZER:
            return _Route(serial, None, None, None)
        if device.person_id is None:
            problem = _sig(
                Outcome.INCONCLUSIVE,
                "device_unassigned",
                f"Device {serial!r} is registered but not assigned to a person.",
                serial=serial,
            )
            return _Route(serial, device.id, None, None, problem=problem)
        person = db.get(Person, device.person_id)
        if person is None or person.erased_at is not None:
            problem = _sig(
                Outcome.INCONCLUSIVE,
                "device_unassigned",
                f"Device {serial!r} is assigned to no active person.",
                serial=serial,
            )
            return _Route(serial, device.id, None, None, problem=problem)
        nonce = fields.get("nonce")
        may_claim = (
            device.active
            and device.public_key_b64 is not None
            and isinstance(nonce, str)
            and verify_signature(upload.reading, upload.signature, device.public_key_b64)
            and db.get(BreathNonce, (device.id, nonce[:128])) is None
        )
        if may_claim:
            open_rows = db.scalars(
                select(CheckSession)
                .where(
                    CheckSession.person_id == person.id,
                    CheckSession.kind == SessionKind.BREATH,
                    CheckSession.status == SessionStatus.SCHEDULED,
                    CheckSession.window_start <= now,
                    CheckSession.window_end >= now,
                )
                .order_by(CheckSession.window_start)
            ).all()
            for row in open_rows:
                # Claim atomically: of two racing submissions exactly one moves the row.
                claimed = db.execute(
                    update(CheckSession)
                    .where(CheckSession.id == row.id, CheckSession.status == SessionStatus.SCHEDULED)
                    .values(status=SessionStatus.ACTIVE, started_at=now, device_id=device.id)
                )
                if getattr(claimed, "rowcount", 0) == 1:
                    audit.append(
                        db,
                        SYSTEM_ACTOR,
                        "breath_session_claimed",
                        "session",
                        row.id,
                        {"device_id": device.id, "serial": serial},
                    )
                    return _Route(serial, device.id, person.id, row.id, scheduled=True)
        session = CheckSession(
            person_id=person.id,
            kind=SessionKind.BREATH,
            status=SessionStatus.ACTIVE,
            window_start=now,
            window_end=now,
            started_at=now,
            device_id=device.id,
            meta={"unscheduled": True, "source": "breath_station"},
        )
        db.add(session)
        db.flush()
        audit.append(
            db,
            SYSTEM_ACTOR,
            "breath_session_opened",
            "session",
            session.id,
            {"device_id": device.id, "serial": serial, "unscheduled": True},
        )
        return _Route(serial, device.id, person.id, session.id)


def _photo_content_type(declared: str) -> str:
    base = (declared or "").split(";")[0].strip().lower()
    return base if base in PHOTO_CONTENT_TYPES else "application/octet-stream"


def _store_session_evidence(services: Services, session_id: str, upload: Upload) -> list[StoredRef]:
    """Reading, signature and photos as artifacts of the session (each hashed, stored and committed)."""
    refs = [
        store_artifact(
            services,
            session_id,
            ArtifactKind.READING,
            "application/json",
            {"what": "breath_reading"},
            data=upload.reading,
        ),
        store_artifact(
            services,
            session_id,
            ArtifactKind.OTHER,
            "text/plain",
            {"what": "reading_signature"},
            data=upload.signature.encode("utf-8"),
        ),
    ]
    for index, (name, data, content_type) in enumerate(upload.photos):
        refs.append(
            store_artifact(
                services,
                session_id,
                ArtifactKind.PHOTO,
                _photo_content_type(content_type),
                {"what": "breath_photo", "field": name, "index": index},
                data=data,
            )
        )
    return refs


def _store_loose_evidence(services: Services, upload: Upload) -> list[dict[str, Any]]:
    """Store the bytes of a submission that names no known device/person; returns key, sha256, what."""
    items: list[tuple[str, bytes, str]] = [
        ("breath_reading", upload.reading, "application/json"),
        ("reading_signature", upload.signature.encode("utf-8"), "text/plain"),
    ]
    items += [(name, data, _photo_content_type(ct)) for name, data, ct in upload.photos]
    out = []
    for what, data, content_type in items:
        stored = services.store.put_bytes(
            data, content_type=content_type, metadata={"kind": "breath-unattributed"}
        )
        if stored.spooled:
            services.metrics.spooled.inc()
        out.append({"what": what, "key": stored.key, "sha256": stored.sha256, "size": stored.size})
    return out


def _refs_view(refs: Sequence[StoredRef]) -> list[dict[str, Any]]:
    return [
        {"artifact_id": r.artifact_id, "kind": r.kind.value, "key": r.key, "sha256": r.sha256, "size": r.size}
        for r in refs
    ]


def _audit_loose_rejection(
    services: Services, route: _Route, rejection: CheckResult, evidence: list[dict[str, Any]]
) -> None:
    with services.sessions.begin() as db:
        audit.append(
            db,
            SYSTEM_ACTOR,
            "breath_rejected",
            "device" if route.device_id else "breath_submission",
            route.device_id,
            {
                "code": rejection.code,
                "outcome": rejection.outcome.value,
                "serial": route.serial,
                "artifacts": evidence,
            },
        )


# --------------------------------------------------------------------------------------------- episodes
def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def episode_to_json(ep: Episode) -> dict[str, Any]:
    """An Episode as a JSON object (datetimes ISO 8601 with offset)."""
    return {
        "state": ep.state.value,
        "scheduled_at": ep.scheduled_at.isoformat(),
        "due_at": ep.due_at.isoformat(),
        "window_end": ep.window_end.isoformat(),
        "positive_at": _iso(ep.positive_at),
        "confirmed_at": _iso(ep.confirmed_at),
        "late": ep.late,
    }


def episode_from_json(data: dict[str, Any]) -> Episode:
    """Inverse of `episode_to_json`."""

    def t(key: str) -> datetime | None:
        value = data.get(key)
        return datetime.fromisoformat(value) if value else None

    scheduled, due, end = t("scheduled_at"), t("due_at"), t("window_end")
    assert scheduled is not None and due is not None and end is not None
    return Episode(
        RetestState(data["state"]),
        scheduled,
        due,
        end,
        positive_at=t("positive_at"),
        confirmed_at=t("confirmed_at"),
        late=bool(data.get("late", False)),
    )


def _action_json(a: Action) -> dict[str, Any]:
    return {
        "kind": a.kind.value,
        "code": a.code,
        "message": a.message,
        "outcome": a.outcome.value if a.outcome else None,
        "at": _iso(a.at),
        "stage": a.stage.value if a.stage else None,
    }


def _current_episode(
    db: Session, person_id: str, reading_at: datetime, now: datetime, settings: SobrietySettings
) -> tuple[BreathEpisode | None, Episode]:
    """The person's open episode advanced to the reading's time, or a new one due at the reading."""
    row = db.scalars(
        select(BreathEpisode)
        .where(BreathEpisode.person_id == person_id, BreathEpisode.closed_at.is_(None))
        .order_by(BreathEpisode.created_at.desc())
        .with_for_update()
    ).first()
    if row is not None:
        ep, actions = next_state(
            episode_from_json(row.episode), RetestEvent(EventKind.TICK, reading_at), reading_at, settings
        )
        if actions or ep != episode_from_json(row.episode):
            _save_episode(row, ep, actions, None, now, "tick")
        if not ep.state.closed:
            return row, ep
    # Unscheduled (or the first) test of a new episode: due at the reading, with the usual window.
    return None, open_episode(reading_at, settings)


def _save_episode(
    row: BreathEpisode, ep: Episode, actions: list[Action], session_id: str | None, now: datetime, event: str
) -> None:
    row.state = ep.state.value
    row.stage = expected_stage(ep).value
    row.due_at = ep.due_at
    row.window_end = ep.window_end
    row.episode = episode_to_json(ep)
    row.history = [
        *(row.history or []),
        {
            "at": now.isoformat(),
            "event": event,
            "session_id": session_id,
            "state": ep.state.value,
            "actions": [_action_json(a) for a in actions],
        },
    ]
    if session_id is not None:
        row.last_session_id = session_id
    row.updated_at = now
    if ep.state.closed and row.closed_at is None:
        row.closed_at = now


@dataclass(frozen=True)
class _EpisodeStep:
    episode_id: str
    episode: Episode
    actions: list[Action]


def _retest_of(step: _EpisodeStep, now: datetime) -> Retest | None:
    """The next test the episode asks for (REQUEST_TEST, or a too-early reading's retry), if any."""
    ep = step.episode
    for a in step.actions:
        stage = a.stage.value if a.stage else None
        if a.kind is ActionKind.REQUEST_TEST and a.at is not None:
            if a.code == "confirmatory_required":
                minutes = max(0, round((a.at - now).total_seconds() / 60))
                message = (
                    f"Positive screening: a confirmatory test is due after {minutes} minutes "
                    f"(from {a.at.isoformat()} until {ep.window_end.isoformat()})."
                )
                return Retest(a.code, message, stage, a.at, ep.window_end)
            return Retest(a.code, a.message, stage, a.at, None)
        if a.kind is ActionKind.IGNORE_READING and a.at is not None:
            return Retest(a.code, a.message, stage, a.at, ep.window_end)
    return None


def order_limit(services: Services, person_id: str) -> tuple[OrderLimit, str]:
    """The person's court-order limit, or the service default; and which one it is."""
    settings: SobrietySettings = services.settings.sobriety
    with services.sessions() as db:
        person = db.get(Person, person_id)
        if person is not None and person.order_brac_limit is not None and person.order_brac_unit:
            return OrderLimit(person.order_brac_limit, AlcoholUnit(person.order_brac_unit)), "court_order"
    return OrderLimit.default(settings), "default_limit_g_210l"


def _stage_for(services: Services, person_id: str, reading: BreathReading, now: datetime) -> TestStage:
    settings: SobrietySettings = services.settings.sobriety
    with services.sessions.begin() as db:
        _, ep = _current_episode(db, person_id, reading.timestamp, now, settings)
        return expected_stage(ep)


def _advance_episode(
    services: Services, person_id: str, session_id: str, event: RetestEvent, now: datetime
) -> _EpisodeStep:
    settings: SobrietySettings = services.settings.sobriety
    with services.sessions.begin() as db:
        row, ep = _current_episode(db, person_id, event.at, now, settings)
        new_ep, actions = next_state(ep, event, now, settings)
        if row is None:
            row = BreathEpisode(
                person_id=person_id,
                first_session_id=session_id,
                history=[],
                created_at=now,
                state=new_ep.state.value,
                stage=expected_stage(new_ep).value,
                due_at=new_ep.due_at,
                window_end=new_ep.window_end,
                episode=episode_to_json(new_ep),
            )
            db.add(row)
        _save_episode(row, new_ep, actions, session_id, now, event.kind.value)
        db.flush()
        audit.append(
            db,
            SYSTEM_ACTOR,
            "breath_episode_updated",
            "session",
            session_id,
            {
                "episode_id": row.id,
                "event": event.kind.value,
                "state": new_ep.state.value,
                "actions": [a.code for a in actions],
            },
        )
        return _EpisodeStep(row.id, new_ep, actions)


# --------------------------------------------------------------------------------------------- verdicts
def _for_verdict(check: CheckResult) -> CheckResult:
    """An admission FAIL (forgery, replay, malformed reading) as INCONCLUSIVE: evidence for review."""
    if check.kind is CheckKind.BREATH_SIGNATURE and check.outcome is Outcome.FAIL:
        return replace(
            check,
            outcome=Outcome.INCONCLUSIVE,
            message=f"Possible tampering, for review: {check.message}",
            details={**check.details, "integrity_violation": True, "admission_outcome": "fail"},
        )
    return check


def _required(settings: SobrietySettings) -> list[CheckKind]:
    return [*REQUIRED_KINDS, CheckKind.PAD] if settings.require_pad else list(REQUIRED_KINDS)


def _finish_session(
    services: Services, session_id: str, status: SessionStatus, now: datetime, meta: dict[str, Any]
) -> None:
    with services.sessions.begin() as db:
        row = db.get(CheckSession, session_id)
        if row is not None:
            row.status = status
            row.ended_at = now
            row.meta = {**(row.meta or {}), **meta}


async def _reject(
    services: Services,
    route: _Route,
    rejection: CheckResult,
    checks: list[CheckResult],
    refs: list[StoredRef],
    now: datetime,
    retest: Retest | None = None,
    episode: dict[str, Any] | None = None,
) -> BreathOutcome:
    """Record a rejected submission on its session: checks, verdict (REVIEW), audit; webhooks."""
    assert route.session_id is not None and route.person_id is not None
    results = [_for_verdict(c) for c in checks]
    outcome, verdict_id = await asyncio.to_thread(
        write_verdict, services, route.session_id, results, _required(services.settings.sobriety)
    )
    status = (
        SessionStatus.TECHNICAL_FAILURE if rejection.outcome is Outcome.TECHNICAL else SessionStatus.COMPLETED
    )
    await asyncio.to_thread(
        _finish_session, services, route.session_id, status, now, {"rejected": rejection.code}
    )
    await asyncio.to_thread(_audit_session_rejection, services, route.session_id, rejection, refs)
    announce(services, route.session_id, route.person_id, SESSION_KIND_LABEL, outcome, verdict_id)
    return BreathOutcome(
        session_id=route.session_id,
        rejection=rejection,
        checks=results,
        decision=outcome.decision,
        reasons=outcome.reasons,
        verdict_id=verdict_id,
        retest=retest,
        episode=episode,
        evidence=_refs_view(refs),
    )


def _audit_session_rejection(
    services: Services, session_id: str, rejection: CheckResult, refs: list[StoredRef]
) -> None:
    with services.sessions.begin() as db:
        audit.append(
            db,
            SYSTEM_ACTOR,
            "breath_rejected",
            "session",
            session_id,
            {
                "code": rejection.code,
                "outcome": rejection.outcome.value,
                "artifacts": [{"artifact_id": r.artifact_id, "key": r.key, "sha256": r.sha256} for r in refs],
            },
        )


# --------------------------------------------------------------------------------------------- photos
def _gallery(
    services: Services, person_id: str
) -> tuple[npt.NDArray[np.float32], ModelStamp | None, CheckResult | None]:
    """(template embeddings (n, 128) or (0, 128), its model stamp, a problem result) for the person."""
    empty = np.zeros((0, 128), dtype=np.float32)
    raw = active_template(services, person_id, Modality.FACE)
    if raw is None:
        return (
            empty,
            None,
            CheckResult(
                CheckKind.FACE,
                Outcome.INCONCLUSIVE,
                "not_enrolled",
                "No face enrolment for this person: an officer must enrol before breath photos can be matched.",
            ),
        )
    try:
        template = template_from_bytes(raw)
    except TemplateError as exc:
        return (
            empty,
            None,
            CheckResult(
                CheckKind.FACE,
                Outcome.TECHNICAL,
                "template_unreadable",
                "The stored face enrolment could not be read; the person must be re-enrolled.",
                details={"error": str(exc)},
            ),
        )
    return template.embeddings, template.model, None


def _judge_photos(services: Services, person_id: str, session_id: str, job: PhotoJobResult) -> list[CheckResult]:
    """Reuse lookup + fingerprints (one transaction) and the per-photo results on the artifact rows."""
    settings: SobrietySettings = services.settings.sobriety
    with services.sessions.begin() as db:
        checks = judge_breath_photos(job.analyses, DbPhotoIndex(db, person_id), session_id, settings)
        per_photo = {a.photo_id: a for a in job.analyses}
        bad = {str(c.details.get("photo_id")): c for c in job.unreadable}
        for row in db.scalars(
            select(Artifact).where(Artifact.session_id == session_id, Artifact.kind == ArtifactKind.PHOTO)
        ):
            # Annotations live in the row's meta; the stored evidence bytes never change.
            if row.id in per_photo:
                a = per_photo[row.id]
                row.meta = {
                    **row.meta,
                    "phash": phash_hex(a.phash),
                    "checks": [c.to_dict() for c in a.checks],
                }
            elif row.id in bad:
                row.meta = {**row.meta, "checks": [bad[row.id].to_dict()]}
    return checks


def _unreadable_summary(job: PhotoJobResult, total: int) -> CheckResult | None:
    if not job.unreadable:
        return None
    ids = [c.details.get("photo_id") for c in job.unreadable]
    return CheckResult(
        CheckKind.BREATH_PHOTO,
        Outcome.TECHNICAL,
        "photos_unreadable",
        f"{len(ids)} of {total} photos could not be read; please take the test again.",
        details={"photos": [c.to_dict() for c in job.unreadable]},
    )


async def _photo_checks(
    services: Services, person_id: str, session_id: str, photos: list[tuple[str, bytes]]
) -> list[CheckResult]:
    settings: SobrietySettings = services.settings.sobriety
    gallery, model, problem = await asyncio.to_thread(_gallery, services, person_id)
    got = await _run_engine(
        services,
        CheckKind.BREATH_PHOTO,
        analyse_photos_job,
        photos,
        gallery,
        model,
        settings.model_dump(mode="json"),
    )
    if isinstance(got, CheckResult):  # the pool or the job crashed: technical, never a verdict
        return [got]
    job: PhotoJobResult = got
    if job.problem is not None:
        return [job.problem]
    checks = await asyncio.to_thread(_judge_photos, services, person_id, session_id, job)
    unreadable = _unreadable_summary(job, len(photos))
    if unreadable is not None:
        checks.append(unreadable)
    if problem is not None:
        # Not enrolled / unreadable template: the photos were analysed without a gallery.
        checks = [c for c in checks if c.kind is not CheckKind.FACE] + [problem]
    return checks


# --------------------------------------------------------------------------------------------- the flow
def _admit(services: Services, upload: Upload, now: datetime) -> Admission:
    return admit_submission(
        upload.reading,
        upload.signature,
        DbDeviceRegistry(services.sessions),
        DbNonceLedger(services.sessions),
        now,
        services.settings.sobriety,
    )


def _registry_calibration(services: Services, device_id: str) -> date | None:
    with services.sessions() as db:
        row = db.get(Device, device_id)
        return row.calibrated_on if row is not None else None


def _person_matches(services: Services, person_id: str, named: str) -> bool:
    with services.sessions() as db:
        person = db.get(Person, person_id)
        return person is not None and named in (person.id, person.external_ref)


def _reading_used(reading_check: CheckResult, photo_checks: list[CheckResult]) -> bool:
    """False when the photos clearly show another person or a reused photo (the reading is not theirs)."""
    return not any(
        c.outcome is Outcome.FAIL and c.kind in (CheckKind.FACE, CheckKind.PHOTO_REUSE) for c in photo_checks
    )


def _not_used(reading_check: CheckResult, step: _EpisodeStep) -> CheckResult:
    """A reading the episode did not use (e.g. a confirmatory test before the deprivation period ended)
    decides nothing on its own, negative or positive: INCONCLUSIVE, with the original outcome kept."""
    ignored = [a for a in step.actions if a.kind is ActionKind.IGNORE_READING]
    if not ignored:
        return reading_check
    return replace(
        reading_check,
        outcome=Outcome.INCONCLUSIVE,
        message=f"{reading_check.message} Not used for the retest episode: {ignored[0].message}",
        details={
            **reading_check.details,
            "episode_ignored": ignored[0].code,
            "reading_outcome": reading_check.outcome.value,
        },
    )


async def submit_breath_test(services: Services, upload: Upload, now: datetime) -> BreathOutcome:
    """The whole breath-test flow for one bounded upload; `now` is the aware server time."""
    settings: SobrietySettings = services.settings.sobriety
    route = await asyncio.to_thread(_route, services, upload, now)

    # 1. Evidence first.
    if route.session_id is None:
        evidence = await asyncio.to_thread(_store_loose_evidence, services, upload)
        rejection = route.problem
        if rejection is None:
            admission = await asyncio.to_thread(_admit, services, upload, now)
            rejection = admission.rejection or _sig(
                Outcome.FAIL, "unknown_device", "The reading names no registered breathalyzer."
            )
        await asyncio.to_thread(_audit_loose_rejection, services, route, rejection, evidence)
        return BreathOutcome(session_id=None, rejection=rejection, checks=[rejection], evidence=evidence)
    assert route.person_id is not None and route.device_id is not None
    refs = await asyncio.to_thread(_store_session_evidence, services, route.session_id, upload)

    # 2. Admission and validity.
    admission = await asyncio.to_thread(_admit, services, upload, now)
    if not admission.accepted or admission.reading is None:
        rejection = admission.rejection or _sig(Outcome.FAIL, "invalid_reading", "Reading was not admitted.")
        return await _reject(services, route, rejection, list(admission.checks), refs, now)
    reading = admission.reading
    checks = list(admission.checks)
    if not await asyncio.to_thread(_person_matches, services, route.person_id, reading.person_id):
        mismatch = CheckResult(
            CheckKind.BREATH_READING,
            Outcome.INCONCLUSIVE,
            "person_mismatch",
            "The reading names another person than the one this station is assigned to.",
            details={"named": reading.person_id},
        )
        return await _reject(services, route, mismatch, [*checks, mismatch], refs, now)
    calibrated = await asyncio.to_thread(_registry_calibration, services, route.device_id)
    validity = validate_reading(reading, now, settings, len(upload.photos), calibrated)
    checks += validity
    invalid = next((c for c in validity if not c.passed), None)
    if invalid is not None:
        step = await asyncio.to_thread(
            _advance_episode,
            services,
            route.person_id,
            route.session_id,
            RetestEvent(EventKind.REJECTED, reading.timestamp),
            now,
        )
        return await _reject(
            services,
            route,
            invalid,
            checks,
            refs,
            now,
            retest=_retest_of(step, now),
            episode={"id": step.episode_id, **episode_to_json(step.episode)},
        )

    # 3. The reading against the order at the stage the episode expects; the photos in the worker pool.
    stage = await asyncio.to_thread(_stage_for, services, route.person_id, reading, now)
    order, source = await asyncio.to_thread(order_limit, services, route.person_id)
    reading_check = evaluate_reading(reading.brac, AlcoholUnit(reading.unit), order, stage, settings)
    reading_check = replace(reading_check, details={**reading_check.details, "order_limit_source": source})
    photo_refs = [r for r in refs if r.kind is ArtifactKind.PHOTO]
    photos = [(r.artifact_id, data) for r, (_, data, _) in zip(photo_refs, upload.photos, strict=True)]
    try:
        photo_checks = await _photo_checks(services, route.person_id, route.session_id, photos)
    except Exception as exc:  # a database or evidence hiccup in judging: technical, never a 500
        log.exception("breath photo judging failed", extra={"session_id": route.session_id})
        photo_checks = [
            CheckResult(
                CheckKind.BREATH_PHOTO,
                Outcome.TECHNICAL,
                "photo_check_failed",
                "The photos could not be checked; the test will be reviewed.",
                details={"error": repr(exc)},
            )
        ]

    # 4. The retest episode, then the verdict.
    event = (
        event_for(reading_check, reading.timestamp)
        if _reading_used(reading_check, photo_checks)
        else RetestEvent(EventKind.REJECTED, reading.timestamp)
    )
    step = await asyncio.to_thread(_advance_episode, services, route.person_id, route.session_id, event, now)
    reading_check = _not_used(reading_check, step)
    results = [*checks, reading_check, *photo_checks]
    outcome, verdict_id = await asyncio.to_thread(
        write_verdict, services, route.session_id, results, _required(settings)
    )
    await asyncio.to_thread(
        _finish_session,
        services,
        route.session_id,
        SessionStatus.COMPLETED,
        now,
        {"stage": stage.value, "episode_id": step.episode_id, "scheduled": route.scheduled},
    )
    announce(services, route.session_id, route.person_id, SESSION_KIND_LABEL, outcome, verdict_id)
    return BreathOutcome(
        session_id=route.session_id,
        rejection=None,
        checks=results,
        decision=outcome.decision,
        reasons=outcome.reasons,
        verdict_id=verdict_id,
        retest=_retest_of(step, now),
        episode={"id": step.episode_id, **episode_to_json(step.episode)},
        evidence=_refs_view(refs),
    )


def now_utc() -> datetime:
    """The server clock (aware UTC); the router's clock dependency."""
    return utcnow()


# ------------------------------------------------------------------------------------ episode clock
@dataclass(frozen=True)
class EpisodeTick:
    """An open episode that time moved on: its new state, and the verdict booked for it (if any)."""

    episode_id: str
    person_id: str
    state: str
    session_id: str | None
    verdict_id: str | None
    outcome: VerdictOutcome | None


def _tick_episodes_sync(
    services: Services, now: datetime
) -> list[tuple[str, str, str | None, list[Action], Episode]]:
    settings: SobrietySettings = services.settings.sobriety
    changed = []
    with services.sessions.begin() as db:
        rows = db.scalars(select(BreathEpisode).where(BreathEpisode.closed_at.is_(None))).all()
        for row in rows:
            before = episode_from_json(row.episode)
            ep, actions = next_state(before, RetestEvent(EventKind.TICK, now), now, settings)
            if not actions and ep == before:
                continue
            _save_episode(row, ep, actions, None, now, "tick")
            audit.append(
                db,
                SYSTEM_ACTOR,
                "breath_episode_updated",
                "person",
                row.person_id,
                {
                    "episode_id": row.id,
                    "event": "tick",
                    "state": ep.state.value,
                    "actions": [a.code for a in actions],
                },
            )
            changed.append((row.id, row.person_id, row.last_session_id, actions, ep))
    return changed


async def tick_episodes(services: Services, now: datetime) -> list[EpisodeTick]:
    """Advance every open breath episode to `now`: a missed or unconfirmed test gets its verdict booked.

    A result the state machine records (RECORD_RESULT) becomes a check on the episode's last session and a
    verdict through the normal policy, so it reaches the review queue and the webhook like any other.
    """
    out: list[EpisodeTick] = []
    for episode_id, person_id, session_id, actions, ep in await asyncio.to_thread(
        _tick_episodes_sync, services, now
    ):
        recorded = [a for a in actions if a.kind is ActionKind.RECORD_RESULT and a.outcome is not None]
        verdict_id = outcome = None
        if recorded and session_id is not None:
            checks = [
                CheckResult(
                    CheckKind.BREATH_READING,
                    a.outcome or Outcome.INCONCLUSIVE,
                    a.code,
                    a.message,
                    details={
                        "episode_id": episode_id,
                        "episode_state": ep.state.value,
                        "source": "episode_clock",
                    },
                )
                for a in recorded
            ]
            outcome, verdict_id = await asyncio.to_thread(
                write_verdict,
                services,
                session_id,
                checks,
                [CheckKind.BREATH_READING],
                VerdictOrigin.EPISODE_CLOCK,
            )
            announce(services, session_id, person_id, "breath", outcome, verdict_id)
        out.append(EpisodeTick(episode_id, person_id, ep.state.value, session_id, verdict_id, outcome))
    return out


async def run_episode_clock(services: Services, every_s: float, is_leader: Any = None) -> None:
    """Tick breath episodes every `every_s` seconds until cancelled (the scheduler's leader only)."""
    while True:
        try:
            leader = True if is_leader is None else await asyncio.to_thread(is_leader)
            if leader:
                await tick_episodes(services, now_utc())
        except Exception:
            log.exception("breath episode tick failed; will retry")
        await asyncio.sleep(every_s)
