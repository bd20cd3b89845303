"""The scheduler tick (database side): windows become sessions with one-time links; unattended windows close.

`materialise_sessions` turns windows into session rows with a one-time check-in token (only its sha256
is stored); a random window is created (and so announced) only once it has opened, never ahead.
`mark_missed` books unattended windows through the one verdict path (`media_server.verdict`): a window
the person was told of (its link delivered) and never opened is a FAIL (a missed test is a violation).
Our failures are never theirs: a link that was never delivered, a page opened but never connected, and
a session that ended in a technical failure get REVIEW (TECHNICAL) and a fresh link (`issue_retake`,
at most `schedules.max_automatic_retakes` in a row). Every created or closed session is written to the
audit log, and each closed window has a signed verdict manifest like any other verdict.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.breath.adapters import prune_nonces
from media_server.db import audit
from media_server.db.enums import Decision, PersonStatus, SessionKind, SessionStatus
from media_server.db.models import CheckSession, Person, Schedule
from media_server.lifecycle import require_active
from media_server.schedules.rules import (
    CHECKIN_TOKEN_PREFIX,
    SCHEDULER_ACTOR,
    SESSION_ID_NAMESPACE,
    OnDemandRule,
    RuleType,
    Window,
    on_demand_window,
    parse_rule,
    windows_between,
)
from media_server.services import Services
from media_server.tokens import new_secret_token, token_hash
from media_server.verdict import VerdictOutcome, announce, not_judged_yet, verdict_events, write_verdict_if
from media_server.webhooks import WebhookEvent

# -- the tick -------------------------------------------------------------------------------------


log = logging.getLogger("kuzet.schedules")


@dataclass(frozen=True)
class IssuedSession:
    """A session the tick (or an officer) created, with its one-time check-in token in plain text.

    The token exists nowhere else (the database holds its sha256): deliver it, then drop it.
    """

    session_id: str
    person_id: str
    kind: SessionKind
    window_start: datetime
    window_end: datetime
    token: str
    schedule_id: str | None


@dataclass(frozen=True)
class ClosedSession:
    """A window that closed without a completed check: missed (FAIL) or technical failure (REVIEW).

    `retake` is the fresh link issued after a technical failure (deliver it), when one was issued.
    """

    session_id: str
    person_id: str
    kind: SessionKind
    window_start: datetime
    window_end: datetime
    verdict_id: str
    decision: Decision
    reason: str
    outcome: VerdictOutcome
    retake: IssuedSession | None = None


# Session meta: how the one-time link reached the person (`media_server.links.record_link_delivery`).
LINK_META = "link"
LINK_DELIVERED = "delivered"  # the SMS/push gateway accepted the checkin_due webhook
LINK_HANDED_TO_OFFICER = "handed_to_officer"  # returned to the officer who requested it
LINK_FAILED = "failed"  # every attempt failed (a dead letter holds the event, without the token)
LINK_NOT_CONFIGURED = "not_configured"  # no webhook URL: nobody was told
PAGE_OPENED_META = "page_opened_at"  # set by the check-in page on first open
RETAKE_RULE = "retake"


def link_delivered(meta: dict[str, Any] | None) -> bool:
    """Whether the person was given this session's link (by the gateway or by their officer)."""
    state = ((meta or {}).get(LINK_META) or {}).get("status")
    return state in (LINK_DELIVERED, LINK_HANDED_TO_OFFICER)


def session_id_for(schedule_id: str, window_start: datetime) -> str:
    """The deterministic id of the session for one window of one schedule."""
    stamp = window_start.astimezone(UTC).isoformat(timespec="seconds")
    return str(uuid.uuid5(SESSION_ID_NAMESPACE, f"{schedule_id}|{stamp}"))


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    return now.astimezone(UTC)


def _create_session(
    db: Session,
    *,
    session_id: str,
    person_id: str,
    kind: SessionKind,
    window: Window,
    meta: dict[str, Any],
    actor: str,
    action: str,
) -> IssuedSession | None:
    """Insert one scheduled session and its audit entry and commit; None when it already exists."""
    token = new_secret_token(CHECKIN_TOKEN_PREFIX)
    row = CheckSession(
        id=session_id,
        person_id=person_id,
        kind=kind,
        status=SessionStatus.SCHEDULED,
        window_start=window.start,
        window_end=window.end,
        token_hash=token_hash(token),
        meta=meta,
    )
    try:
        db.add(row)
        db.flush()
        audit.append(
            db,
            actor,
            action,
            "session",
            session_id,
            {
                "person_id": person_id,
                "kind": kind.value,
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                **{k: v for k, v in meta.items() if k in ("schedule_id", "rule_type")},
            },
        )
        db.commit()
    except IntegrityError:
        # Another tick created the same window first (same deterministic primary key).
        db.rollback()
        return None
    return IssuedSession(
        session_id=session_id,
        person_id=person_id,
        kind=kind,
        window_start=window.start,
        window_end=window.end,
        token=token,
        schedule_id=meta.get("schedule_id"),
    )


def materialise_sessions(
    db: Session,
    now: datetime,
    *,
    horizon: timedelta,
    seed_key: bytes,
    open_window_min_left: timedelta,
) -> list[IssuedSession]:
    """Create the sessions of every active schedule whose window starts before `now + horizon`.

    Idempotent: a window that already has its session is skipped (its token is not reissued). Windows
    that already ended are not created (the person was never told of them). A window that was already
    open when the schedule was created is created only while at least `open_window_min_left` of it
    remains. Each session is committed with its audit entry on its own.
    """
    now = _require_aware(now)
    until = now + horizon
    schedules = db.scalars(
        select(Schedule)
        .join(Person, Person.id == Schedule.person_id)
        .where(
            Schedule.active.is_(True),
            Person.erased_at.is_(None),
            Person.status == PersonStatus.ACTIVE,
        )
        .order_by(Schedule.created_at, Schedule.id)
    ).all()
    issued: list[IssuedSession] = []
    for schedule in schedules:
        rule = parse_rule(schedule.rule)
        if isinstance(rule, OnDemandRule):
            continue
        for window in windows_between(
            rule, schedule.timezone, now, until, schedule_id=schedule.id, seed_key=seed_key
        ):
            if window.end <= now:
                continue
            if window.start < schedule.created_at and window.end - now < open_window_min_left:
                continue  # opened before the schedule existed and nearly over: not fair to ask for it
            if rule.type is RuleType.RANDOM and window.start > now:
                continue  # a random test is announced when it opens, never ahead of time
            sid = session_id_for(schedule.id, window.start)
            if db.get(CheckSession, sid) is not None:
                continue
            created = _create_session(
                db,
                session_id=sid,
                person_id=schedule.person_id,
                kind=schedule.kind,
                window=window,
                meta={"schedule_id": schedule.id, "rule_type": rule.type.value},
                actor=SCHEDULER_ACTOR,
                action="session.scheduled",
            )
            if created is not None:
                issued.append(created)
    return issued


def request_on_demand(
    db: Session,
    *,
    person_id: str,
    kind: SessionKind,
    now: datetime,
    duration: timedelta,
    requested_by: str,
) -> IssuedSession:
    """An officer's on-demand test: a session whose window opens now, committed with its audit entry."""
    now = _require_aware(now)
    require_active(db, person_id)  # NotFoundError / PersonNotActive (410)
    created = _create_session(
        db,
        session_id=str(uuid.uuid4()),
        person_id=person_id,
        kind=kind,
        window=on_demand_window(now, duration),
        meta={
            "rule_type": RuleType.ON_DEMAND.value,
            "requested_by": requested_by,
            LINK_META: {"status": LINK_HANDED_TO_OFFICER, "at": now.isoformat()},
        },
        actor=requested_by,
        action="session.on_demand",
    )
    if created is None:  # a fresh uuid4 cannot collide; kept for the type checker
        raise RuntimeError("on-demand session could not be created")
    return created


def issue_retake(
    db: Session,
    *,
    original_id: str,
    now: datetime,
    duration: timedelta,
    actor: str,
    reason: str,
    max_depth: int | None = None,
    session_id: str | None = None,
    link_status: str | None = None,
) -> IssuedSession | None:
    """A fresh link after our failure: a new session of the same person and kind, opening now.

    None when the person is no longer supervised, when `max_depth` automatic retakes in a row were
    already issued, or when this retake exists (automatic retakes have a deterministic id, so a second
    tick issues nothing). Committed with its audit entry (`session.retake`).
    """
    now = _require_aware(now)
    original = db.get(CheckSession, original_id)
    if original is None:
        raise LookupError(f"no such session: {original_id}")
    person = db.get(Person, original.person_id)
    if person is None or person.erased_at is not None or person.status is not PersonStatus.ACTIVE:
        return None
    depth = int((original.meta or {}).get("retake_depth", 0)) + 1
    if max_depth is not None and depth > max_depth:
        audit.append(
            db,
            actor,
            "session.retake_limit",
            "session",
            original_id,
            {"depth": depth, "reason": reason, "max": max_depth},
        )
        db.commit()
        return None
    meta: dict[str, Any] = {
        "rule_type": RETAKE_RULE,
        "retake_of": original_id,
        "retake_depth": depth,
        "retake_reason": reason,
    }
    if link_status is not None:
        meta[LINK_META] = {"status": link_status, "at": now.isoformat()}
    return _create_session(
        db,
        session_id=session_id or str(uuid.uuid5(SESSION_ID_NAMESPACE, f"retake|{original_id}")),
        person_id=original.person_id,
        kind=original.kind,
        window=on_demand_window(now, duration),
        meta=meta,
        actor=actor,
        action="session.retake",
    )


def _close_unstarted(session_id: str, status: SessionStatus) -> Callable[[Session], bool]:
    """Guard: the window is still unstarted; it closes with `status` and its link dies with it.

    A conditional UPDATE: a check-in that starts right now, or a second tick, wins the race."""

    def guard(db: Session) -> bool:
        moved = db.execute(
            update(CheckSession)
            .where(
                CheckSession.id == session_id,
                CheckSession.status == SessionStatus.SCHEDULED,
                CheckSession.started_at.is_(None),
                CheckSession.token_used_at.is_(None),
            )
            .values(status=status, token_hash=None)
        )
        return getattr(moved, "rowcount", 0) == 1

    return guard


def _unattended(s: CheckSession, window: str, details: dict[str, Any]) -> CheckResult:
    """Why an unstarted window closed: the person's absence (FAIL) only when they had the link."""
    meta = s.meta or {}
    if not link_delivered(meta):
        state = (meta.get(LINK_META) or {}).get("status", "pending")
        return CheckResult(
            CheckKind.ATTENDANCE,
            Outcome.TECHNICAL,
            "link_not_delivered",
            f"the link for the {s.kind.value} check {window} never reached the person "
            f"(delivery: {state}); a fresh link is issued",
            details={**details, "link_delivery": state},
        )
    if PAGE_OPENED_META in meta:
        return CheckResult(
            CheckKind.MEDIA,
            Outcome.TECHNICAL,
            "never_connected",
            f"the check-in page was opened at {meta[PAGE_OPENED_META]} but never connected {window}; "
            "a fresh link is issued",
            details={**details, "page_opened_at": meta[PAGE_OPENED_META]},
        )
    return CheckResult(
        CheckKind.ATTENDANCE,
        Outcome.FAIL,
        "missed",
        f"missed: no {s.kind.value} check {window}",
        details=details,
    )


def mark_missed(services: Services, now: datetime, *, grace: timedelta) -> list[ClosedSession]:
    """Close windows that ended more than `grace` before `now` without a completed check.

    A session never started (still scheduled, token unused) whose link was delivered and whose page
    was never opened becomes `missed` with a FAIL verdict ("attendance: missed"). One whose link never
    reached the person, or whose page was opened but never connected, is our failure: it becomes a
    `technical_failure` with REVIEW. A session that ended in a technical failure and has no verdict yet
    gets REVIEW too. Each technical close issues a fresh link (`ClosedSession.retake`). The check-in
    token is revoked on every close. Only persons under supervision are booked. Each goes through
    `media_server.verdict.write_verdict_if` (signed manifest, audit), committed on its own; the guard
    makes a second tick or a racing check-in a no-op. Blocking.
    """
    now = _require_aware(now)
    cutoff = now - grace
    cfg = services.settings.schedules
    with services.sessions() as db:
        candidates = db.scalars(
            select(CheckSession)
            .join(Person, Person.id == CheckSession.person_id)
            .where(
                CheckSession.status.in_([SessionStatus.SCHEDULED, SessionStatus.TECHNICAL_FAILURE]),
                CheckSession.window_end <= cutoff,
                Person.erased_at.is_(None),
                Person.status == PersonStatus.ACTIVE,
            )
            .order_by(CheckSession.window_end, CheckSession.id)
        ).all()
        db.expunge_all()
    closed: list[ClosedSession] = []
    for s in candidates:
        window = f"between {s.window_start.isoformat()} and {s.window_end.isoformat()}"
        details = {"window_start": s.window_start.isoformat(), "window_end": s.window_end.isoformat()}
        if s.status is SessionStatus.SCHEDULED:
            if s.started_at is not None or s.token_used_at is not None:
                continue  # it began: the pipeline decides how it ended
            result = _unattended(s, window, details)
            if result.outcome is Outcome.FAIL:
                guard, action = _close_unstarted(s.id, SessionStatus.MISSED), "session.missed"
            else:
                guard, action = (
                    _close_unstarted(s.id, SessionStatus.TECHNICAL_FAILURE),
                    "session.technical_review",
                )
        else:
            result = CheckResult(
                CheckKind.MEDIA,
                Outcome.TECHNICAL,
                "technical_failure",
                "the session ended in a technical failure; a retake is offered",
                details=details,
            )
            guard, action = not_judged_yet(s.id), "session.technical_review"
        written = write_verdict_if(services, s.id, [result], [], guard, actor=SCHEDULER_ACTOR, action=action)
        if written is None:
            continue
        outcome, verdict_id = written
        retake = None
        if result.outcome is Outcome.TECHNICAL:
            with services.sessions() as db:
                retake = issue_retake(
                    db,
                    original_id=s.id,
                    now=now,
                    duration=timedelta(minutes=cfg.retake_window_min),
                    actor=SCHEDULER_ACTOR,
                    reason=result.code,
                    max_depth=cfg.max_automatic_retakes,
                )
        closed.append(
            ClosedSession(
                session_id=s.id,
                person_id=s.person_id,
                kind=s.kind,
                window_start=s.window_start,
                window_end=s.window_end,
                verdict_id=verdict_id,
                decision=outcome.decision,
                reason=result.message,
                outcome=outcome,
                retake=retake,
            )
        )
    return closed


# -- the periodic task ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TickReport:
    """What one scheduler tick did."""

    issued: list[IssuedSession]
    closed: list[ClosedSession]


def closed_session_events(closed: ClosedSession) -> list[WebhookEvent]:
    """Webhook events for a closed window: its verdict, and a violation when it was missed."""
    return verdict_events(
        closed.session_id, closed.person_id, closed.kind.value, closed.outcome, closed.verdict_id, "missed"
    )


def _tick_sync(services: Services, now: datetime, seed_key: bytes) -> TickReport:
    settings = services.settings.schedules
    with services.sessions() as db:
        issued = materialise_sessions(
            db,
            now,
            horizon=timedelta(minutes=settings.horizon_min),
            seed_key=seed_key,
            open_window_min_left=timedelta(minutes=settings.open_window_min_left_min),
        )
    closed = mark_missed(services, now, grace=timedelta(seconds=settings.missed_grace_s))
    with services.sessions.begin() as db:
        # Spent breath-station nonces older than the freshness window can never be replayed: drop them.
        prune_nonces(db, now, services.settings.sobriety)
    return TickReport(issued, closed)


async def tick_once(
    services: Services,
    *,
    seed_key: bytes,
    deliver: Callable[[IssuedSession], Awaitable[None]],
    now: datetime | None = None,
) -> TickReport:
    """One tick: database work in a worker thread, then each new link to `deliver` and events to webhooks."""
    report = await asyncio.to_thread(_tick_sync, services, now or datetime.now(UTC), seed_key)
    for issued in report.issued:
        try:
            await deliver(issued)
        except Exception:
            # The session exists; an officer can resend its link. Keep delivering the others.
            log.exception("check-in link delivery failed", extra={"session_id": issued.session_id})
    for closed in report.closed:
        if closed.retake is not None:
            try:
                await deliver(closed.retake)
            except Exception:
                log.exception("retake link delivery failed", extra={"session_id": closed.retake.session_id})
        announce(
            services,
            closed.session_id,
            closed.person_id,
            closed.kind.value,
            closed.outcome,
            closed.verdict_id,
            source="missed",
        )
    return report


async def run_scheduler(
    services: Services,
    *,
    seed_key: bytes,
    deliver: Callable[[IssuedSession], Awaitable[None]],
    is_leader: Callable[[], bool] | None = None,
) -> None:
    """Tick every `schedules.tick_s` until cancelled (start it as a task in the app lifespan).

    With several nodes, `is_leader` (a lease, blocking; run in a thread) lets only one of them tick.
    """
    while True:
        try:
            leader = True if is_leader is None else await asyncio.to_thread(is_leader)
            if leader:
                await tick_once(services, seed_key=seed_key, deliver=deliver)
        except Exception:
            log.exception("scheduler tick failed; will retry")
        await asyncio.sleep(services.settings.schedules.tick_s)
