"""`submit_breath_test`: the whole breath-test flow for one upload, top to bottom, and its verdict."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.artifacts import StoredRef
from media_server.breath.adapters import DbDeviceRegistry, DbNonceLedger, RoutedDevice
from media_server.breath.episodes import (
    _advance_episode,
    _EpisodeStep,
    _retest_of,
    episode_to_json,
    judge_reading_and_advance,
    load_context,
)
from media_server.breath.evidence import (
    _audit_loose_rejection,
    _lenient_fields,
    _refs_view,
    _route,
    _store_loose_evidence,
    _store_session_evidence,
    load_upload,
    stored_submission,
)
from media_server.breath.photos import _photo_checks
from media_server.breath.values import (
    REQUIRED_KINDS,
    SESSION_KIND_LABEL,
    SYSTEM_ACTOR,
    BreathOutcome,
    Retest,
    Upload,
    _Route,
    _sig,
)
from media_server.db import audit
from media_server.db.enums import ArtifactKind, PersonStatus, SessionStatus
from media_server.db.models import (
    CheckResultRecord,
    CheckSession,
    Verdict,
)
from media_server.db.types import utcnow
from media_server.lifecycle import PersonNotActive, refuse_entry
from media_server.services import Services
from media_server.verdict import announce, write_verdict
from sobriety.config import SobrietySettings
from sobriety.policy import (
    ActionKind,
    EventKind,
    RetestEvent,
)
from sobriety.reading import (
    Admission,
    NonceLedger,
    RegisteredDevice,
    admit_submission,
    validate_reading,
)

log = logging.getLogger("kuzet.breath")


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


class _ResumeLedger:
    """The nonce ledger when a stored submission is judged again: its own nonce is not a replay."""

    def __init__(self, inner: NonceLedger, device_id: str, nonce: object) -> None:
        self._inner, self._own = inner, (device_id, nonce)

    def seen(self, device_id: str, nonce: str) -> bool:
        return (device_id, nonce) != self._own and self._inner.seen(device_id, nonce)

    def remember(self, device_id: str, nonce: str, at: datetime) -> bool:
        if (device_id, nonce) == self._own:
            self._inner.remember(device_id, nonce, at)
            return True
        return self._inner.remember(device_id, nonce, at)


def _admit(
    services: Services,
    upload: Upload,
    now: datetime,
    ledger: NonceLedger | None = None,
    device: RegisteredDevice | None = None,
) -> Admission:
    registry = DbDeviceRegistry(services.sessions)
    return admit_submission(
        upload.reading,
        upload.signature,
        registry if device is None else RoutedDevice(device, registry),
        ledger or DbNonceLedger(services.sessions),
        now,
        services.settings.sobriety,
    )


def _reading_used(photo_checks: list[CheckResult]) -> bool:
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
    route = await asyncio.to_thread(_route, services, upload, now)

    # 0. A station of a person no longer under supervision: refused, nothing stored but an audit line.
    if route.inactive_person is not None and route.problem is not None:
        state = PersonStatus(route.problem.details.get("status", PersonStatus.ERASED.value))
        await asyncio.to_thread(
            refuse_entry,
            services.sessions,
            PersonNotActive(route.inactive_person, state),
            "breath",
            {"device_id": route.device_id, "serial": route.serial},
        )
        return BreathOutcome(session_id=None, rejection=route.problem, checks=[route.problem])

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
    if route.resend and route.session_id is not None:
        # The same request again (lost answer, or a crash): its stored evidence, judged once.
        return await rejudge(services, route.session_id)
    assert route.person_id is not None and route.device_id is not None
    refs = await asyncio.to_thread(_store_session_evidence, services, route.session_id, upload)
    return await _judge(services, route, upload, refs, now, None)


async def _judge(
    services: Services,
    route: _Route,
    upload: Upload,
    refs: list[StoredRef],
    now: datetime,
    ledger: NonceLedger | None,
) -> BreathOutcome:
    """Steps 2-4 on stored evidence: admission, the reading, the photos, the episode and the verdict."""
    settings: SobrietySettings = services.settings.sobriety
    assert route.session_id is not None and route.person_id is not None and route.device_id is not None

    # 2. Admission and validity.
    admission = await asyncio.to_thread(_admit, services, upload, now, ledger, route.device)
    if not admission.accepted or admission.reading is None:
        rejection = admission.rejection or _sig(Outcome.FAIL, "invalid_reading", "Reading was not admitted.")
        return await _reject(services, route, rejection, list(admission.checks), refs, now)
    reading = admission.reading
    checks = list(admission.checks)
    context = route.context
    if context is None:
        context = await asyncio.to_thread(load_context, services, route.person_id, route.device_id)
    if reading.person_id not in context.person_names:
        mismatch = CheckResult(
            CheckKind.BREATH_READING,
            Outcome.INCONCLUSIVE,
            "person_mismatch",
            "The reading names another person than the one this station is assigned to.",
            details={"named": reading.person_id},
        )
        return await _reject(services, route, mismatch, [*checks, mismatch], refs, now)
    validity = validate_reading(reading, now, settings, len(upload.photos), context.calibrated_on)
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

    # 3. The photos in the worker pool (they do not depend on the episode; no lock is held meanwhile).
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

    # 4. One locked transaction: the episode's stage, the reading against the order at it, the episode moved
    #    on; then the verdict.
    step, stage, reading_check = await asyncio.to_thread(
        judge_reading_and_advance,
        services,
        route.person_id,
        route.session_id,
        reading,
        context,
        lambda _check: _reading_used(photo_checks),
        now,
    )
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


def _stored_outcome(services: Services, session_id: str, refs: list[StoredRef]) -> BreathOutcome | None:
    """The answer a session already got: its latest verdict and the checks it was judged on."""
    with services.sessions() as db:
        verdict = db.scalars(
            select(Verdict).where(Verdict.session_id == session_id).order_by(Verdict.created_at.desc())
        ).first()
        if verdict is None:
            return None
        session = db.get(CheckSession, session_id)
        rejected = (session.meta or {}).get("rejected") if session is not None else None
        checks = [
            r.to_check()
            for r in db.scalars(
                select(CheckResultRecord)
                .where(CheckResultRecord.session_id == session_id)
                .order_by(CheckResultRecord.created_at)
            ).all()
        ]
        rejection = next((c for c in checks if c.code == rejected), None) if rejected else None
        return BreathOutcome(
            session_id=session_id,
            rejection=rejection,
            checks=checks,
            decision=verdict.decision,
            reasons=list(verdict.reasons),
            verdict_id=verdict.id,
            episode={"id": (session.meta or {}).get("episode_id")} if session is not None else None,
            evidence=_refs_view(refs),
        )


def _arrival(services: Services, session_id: str) -> datetime:
    with services.sessions() as db:
        row = db.get(CheckSession, session_id)
        return (row.started_at if row is not None and row.started_at else None) or utcnow()


async def rejudge(services: Services, session_id: str) -> BreathOutcome:
    """The answer a stored breath submission got, or, when it has none (a crash), its judgement now from
    the stored evidence, as of its arrival, with its own nonce not counted as a replay. Idempotent."""
    stored = await asyncio.to_thread(stored_submission, services, session_id)
    refs = stored.refs if stored is not None else []
    answered = await asyncio.to_thread(_stored_outcome, services, session_id, refs)
    if answered is not None:
        return answered
    with services.sessions() as db:
        row = db.get(CheckSession, session_id)
        person_id = row.person_id if row is not None else None
        device_id = row.device_id if row is not None else None
        scheduled = bool(row is not None and not (row.meta or {}).get("unscheduled"))
    if stored is None or person_id is None or device_id is None:
        raise ValueError(f"breath session {session_id} has no stored submission to judge")
    upload = await asyncio.to_thread(load_upload, services, stored)
    nonce = _lenient_fields(upload.reading).get("nonce")
    route = _Route(None, device_id, person_id, session_id, scheduled=scheduled)
    ledger = _ResumeLedger(DbNonceLedger(services.sessions), device_id, nonce)
    return await _judge(services, route, upload, stored.refs, _arrival(services, session_id), ledger)


def now_utc() -> datetime:
    """The server clock (aware UTC); the router's clock dependency."""
    return utcnow()
