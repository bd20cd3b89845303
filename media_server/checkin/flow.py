"""`finish_session`: evidence, checks, verdict, reply; the gallery update runs after the reply."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from identity.checks import CheckResult
from media_server.checkin.checks import annotate_frames, run_checkin_checks
from media_server.checkin.evidence import store_capture_evidence
from media_server.checkin.gallery_update import adapt_gallery
from media_server.db import audit
from media_server.db.enums import PersonStatus, PositionSource, SessionKind, SessionStatus
from media_server.db.models import CheckSession, Person
from media_server.db.types import utcnow
from media_server.lifecycle import status_of
from media_server.links import deliver_link
from media_server.location.chain import NewFix
from media_server.location.flow import announce as announce_alerts
from media_server.location.store import NewAlert, record_checkin_fixes
from media_server.schedules.tick import IssuedSession, issue_retake
from media_server.services import Services
from media_server.verdict import VerdictOutcome, announce, write_verdict
from media_server.webrtc.capture import SessionCapture

log = logging.getLogger("kuzet.checkin")


async def finish_session(services: Services, capture: SessionCapture) -> dict[str, Any]:
    """The session sink: evidence, checks, verdict. Returns the outcome the check-in page shows.

    The adaptive-gallery update is slow (a face enrolment job) and changes nothing the person is told,
    so it runs after the reply, tracked in `services.background` until it ends. A person erased while
    the session was live is not judged and nothing of the capture is stored.
    """
    if await asyncio.to_thread(_erased_meanwhile, services, capture):
        return {
            "decision": "cancelled",
            "retake": False,
            "reasons": ["person_erased"],
            "session_id": capture.session_id,
        }
    count_session(services, capture)
    t0 = time.monotonic()
    await asyncio.to_thread(store_capture_evidence, services, capture)
    t1 = time.monotonic()
    checks = await run_checkin_checks(services, capture)
    t2 = time.monotonic()
    await asyncio.to_thread(annotate_frames, services, capture.session_id, checks.results)
    outcome, verdict_id = await asyncio.to_thread(
        write_verdict, services, capture.session_id, checks.results, checks.required
    )
    log.info(
        "check-in judged",
        extra={
            "session_id": capture.session_id,
            "evidence_s": round(t1 - t0, 3),
            "checks_s": round(t2 - t1, 3),
            "verdict_s": round(time.monotonic() - t2, 3),
        },
    )
    announce(services, capture.session_id, capture.person_id, capture.kind, outcome, verdict_id)
    await _record_location(services, capture)
    retake = None
    if outcome.retake_offered and capture.kind == SessionKind.CHECKIN.value:
        retake = await asyncio.to_thread(_issue_retake, services, capture.session_id)
        if retake is not None:
            await deliver_link(services, retake)
    follow_up = asyncio.create_task(_gallery_follow_up(services, capture, checks.results, outcome))
    services.background.append(follow_up)
    follow_up.add_done_callback(lambda t: services.background.remove(t) if t in services.background else None)
    return {
        "decision": outcome.decision.value,
        "retake": outcome.retake_offered,
        "reasons": outcome.reasons,
        "session_id": capture.session_id,
        # A fresh link went to the person's phone gateway (the page cannot show it: it is one-time).
        "retake_link_sent": retake is not None,
    }


def count_session(services: Services, capture: SessionCapture) -> None:
    """How the session ended, the frames live analysis skipped, and its recording, in the metrics."""
    services.metrics.sessions_ended.labels(capture.ended_reason.value).inc()
    services.metrics.analysis_dropped.inc(int(capture.stats.get("frames_analysis_dropped", 0) or 0))
    count_recording(services, capture)


def count_recording(services: Services, capture: SessionCapture) -> None:
    """The recording's drops, gaps (by kind and cause), frames missing and recorder CPU, in the metrics."""
    metrics, meta = services.metrics, capture.recording_meta
    metrics.recording_dropped.inc(int(capture.stats.get("recorder_dropped", 0) or 0))
    for key, count in (meta.get("gaps_by_cause") or {}).items():
        kind, _, cause = str(key).partition(":")
        metrics.recording_gaps.labels(kind, cause).inc(int(count))
    for kind in ("video", "audio"):
        missing = int(capture.stats.get(f"recording_{kind}_frames_missing", 0) or 0)
        if missing:
            metrics.recording_frames_missing.labels(kind).inc(missing)
    cpu_ms = int(capture.stats.get("recording_cpu_ms", 0) or 0)
    if cpu_ms:
        metrics.recording_cpu.labels(str(meta.get("format") or "none")).inc(cpu_ms / 1000)


def _checkin_fix(capture: SessionCapture) -> NewFix | None:
    """The page's location fix as a position of the person's track (source `checkin`)."""
    loc = capture.location or {}
    if loc.get("status") != "ok":
        return None
    t_s = loc.get("t_s")
    at = (
        capture.started_at + timedelta(seconds=float(t_s))
        if isinstance(t_s, int | float)
        else capture.ended_at
    )
    return NewFix(
        t=at,
        lat=float(loc["lat"]),
        lon=float(loc["lon"]),
        accuracy_m=float(loc["accuracy_m"]),
        source=PositionSource.CHECKIN,
    )


async def _record_location(services: Services, capture: SessionCapture) -> None:
    """Add the check-in's location to the person's hash-chained track and judge it against their zones."""
    fix = _checkin_fix(capture)
    if fix is None:
        return

    def record() -> list[NewAlert]:
        with services.sessions.begin() as db:
            return record_checkin_fixes(db, capture.person_id, [fix], utcnow(), services.settings.location)

    try:
        alerts = await asyncio.to_thread(record)
    except Exception:  # the verdict stands; the track misses one fix, which the log says
        log.exception("check-in location not recorded", extra={"session_id": capture.session_id})
        return
    announce_alerts(services, alerts)


def _erased_meanwhile(services: Services, capture: SessionCapture) -> bool:
    """True (session cancelled, one audit line) when the person was erased while the session ran."""
    with services.sessions.begin() as db:
        person = db.get(Person, capture.person_id)
        if person is None or status_of(person) is not PersonStatus.ERASED:
            return False
        row = db.get(CheckSession, capture.session_id)
        if row is not None:
            row.status = SessionStatus.CANCELLED
            row.ended_at = utcnow()
            row.meta = {**(row.meta or {}), "dropped": "person erased during the session"}
        audit.append(
            db,
            "system",
            "entry_refused",
            "person",
            capture.person_id,
            {"entry": "whip_capture", "status": PersonStatus.ERASED.value, "session_id": capture.session_id},
        )
        return True


def _issue_retake(services: Services, session_id: str) -> IssuedSession | None:
    """A fresh link after a technical failure (dropped connection, camera lost, engine down)."""
    cfg = services.settings.schedules
    with services.sessions() as db:
        return issue_retake(
            db,
            original_id=session_id,
            now=utcnow(),
            duration=timedelta(minutes=cfg.retake_window_min),
            actor="system",
            reason="technical_failure",
            max_depth=cfg.max_automatic_retakes,
        )


async def _gallery_follow_up(
    services: Services, capture: SessionCapture, results: list[CheckResult], outcome: VerdictOutcome
) -> None:
    try:
        await adapt_gallery(services, capture, results, outcome)
    except Exception:
        log.exception("adaptive gallery update failed", extra={"session_id": capture.session_id})
