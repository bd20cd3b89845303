"""The recovery sweep: no session is left unjudged after a crash.

A node that dies between storing a session's evidence and writing its verdict leaves the session without
a verdict. The sweep (at start and on the leader's tick) finds such sessions once their deadline has
passed and judges them from what was stored:

- a breath test is judged again from its stored reading, signature and photos, as of its arrival time
  (`media_server.breath.flow.rejudge`; its own nonce is not a replay);
- a check-in or station session cannot be judged again (the live frame series for liveness is not kept):
  it becomes a technical REVIEW that says so, with a retake offered — never a violation.

Every verdict goes through `media_server.verdict`, guarded so a sweep racing another node or a late
resend writes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.breath.flow import rejudge
from media_server.db import audit
from media_server.db.enums import SessionKind, SessionStatus
from media_server.db.models import Artifact, CheckSession, Verdict
from media_server.db.types import utcnow
from media_server.services import Services
from media_server.verdict import announce, not_judged_yet, write_verdict_if

log = logging.getLogger("kuzet.recovery")

RECOVERY_ACTOR = "recovery"


@dataclass
class RecoveryReport:
    """What one sweep did (session ids)."""

    rejudged: list[str] = field(default_factory=list)
    technical: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _unjudged(services: Services, now: datetime) -> list[tuple[str, SessionKind, str]]:
    """(session id, kind, person id) of sessions past their deadline with stored evidence and no verdict."""
    grace = timedelta(seconds=services.settings.schedules.recovery_grace_s)
    longest = timedelta(seconds=services.settings.media.max_session_s)
    has_verdict = exists().where(Verdict.session_id == CheckSession.id)
    has_evidence = exists().where(Artifact.session_id == CheckSession.id)
    with services.sessions() as db:
        rows = db.execute(
            select(CheckSession.id, CheckSession.kind, CheckSession.person_id, CheckSession.status)
            .where(
                ~has_verdict,
                CheckSession.started_at.is_not(None),
                CheckSession.status.in_([SessionStatus.ACTIVE, SessionStatus.COMPLETED]),
            )
            .where(
                (
                    (CheckSession.kind == SessionKind.BREATH)
                    & (CheckSession.started_at <= now - grace)
                    & has_evidence
                )
                | (
                    (CheckSession.kind != SessionKind.BREATH)
                    & (CheckSession.started_at <= now - longest - grace)
                )
            )
            .order_by(CheckSession.started_at)
        ).all()
    return [(r.id, r.kind, r.person_id) for r in rows]


def _close_unjudged(session_id: str) -> Callable[[Session], bool]:
    unjudged = not_judged_yet(session_id)

    def guard(db: Session) -> bool:
        if not unjudged(db):
            return False
        row = db.get(CheckSession, session_id)
        if row is None:
            return False
        if row.status is SessionStatus.ACTIVE:
            row.status = SessionStatus.TECHNICAL_FAILURE
            row.ended_at = row.ended_at or utcnow()
        row.meta = {**(row.meta or {}), "recovered": True}
        return True

    return guard


def _audit_rejudged(services: Services, session_id: str, verdict_id: str | None) -> None:
    """Say in the audit log that the sweep, not the original request, judged this breath test."""
    with services.sessions.begin() as db:
        audit.append(
            db,
            actor=RECOVERY_ACTOR,
            action="session.recovered",
            subject_type="session",
            subject_id=session_id,
            details={"verdict_id": verdict_id, "how": "rejudged from stored evidence"},
        )


def _artifact_count(services: Services, session_id: str) -> int:
    with services.sessions() as db:
        return int(db.scalar(select(func.count()).where(Artifact.session_id == session_id)) or 0)


async def sweep(services: Services, now: datetime | None = None) -> RecoveryReport:
    """Judge every session left without a verdict past its deadline (see the module docstring)."""
    report = RecoveryReport()
    for session_id, kind, person_id in await asyncio.to_thread(_unjudged, services, now or utcnow()):
        if kind is SessionKind.BREATH:
            try:
                judged = await rejudge(services, session_id)
                await asyncio.to_thread(_audit_rejudged, services, session_id, judged.verdict_id)
                report.rejudged.append(session_id)
                continue
            except Exception:
                log.exception("breath test could not be judged again", extra={"session_id": session_id})
        stored = await asyncio.to_thread(_artifact_count, services, session_id)
        result = CheckResult(
            CheckKind.MEDIA,
            Outcome.TECHNICAL,
            "not_judged",
            "The server stopped before this session was judged. Its stored evidence "
            f"({stored} artifacts) is kept for the reviewer and a retake is offered.",
            details={"artifacts": stored, "recovered": True},
        )
        written = await asyncio.to_thread(
            write_verdict_if,
            services,
            session_id,
            [result],
            [],
            _close_unjudged(session_id),
            actor=RECOVERY_ACTOR,
            action="session.recovered",
        )
        if written is None:
            continue
        outcome, verdict_id = written
        announce(services, session_id, person_id, kind.value, outcome, verdict_id)
        (report.technical if kind is not SessionKind.BREATH else report.failed).append(session_id)
    if report.rejudged or report.technical or report.failed:
        log.warning(
            "recovery sweep judged sessions left without a verdict",
            extra={
                "rejudged": len(report.rejudged),
                "technical": len(report.technical),
                "failed": len(report.failed),
            },
        )
    return report


async def run_recovery(services: Services, is_leader: Callable[[], bool] | None = None) -> None:
    """Sweep at start, then every scheduler tick, on the leader only, until cancelled."""
    while True:
        try:
            leader = True if is_leader is None else await asyncio.to_thread(is_leader)
            if leader:
                await sweep(services)
        except Exception:
            log.exception("recovery sweep failed; will retry")
        await asyncio.sleep(services.settings.schedules.tick_s)
