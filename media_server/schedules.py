"""When checks are due: schedule rules, their windows in the person's time zone, and the scheduler tick.

A rule is stored as JSON in `schedules.rule` and read in `schedules.timezone` (the person's zone,
"Asia/Almaty" = UTC+5 since 2024-03-01; tzdata 2024a or newer is needed, the `tzdata` package ships it
where the system's zoneinfo is older). Three kinds:

- daily: `{"type": "daily", "start": "09:00", "end": "10:00", "days": [0, 1, 2, 3, 4]}`, weekdays
  Monday = 0; an end at or before the start means the window runs past midnight.
- random: `{"type": "random", "per_week": 3, "earliest": "08:00", "latest": "21:00", "duration_min": 30}`:
  `per_week` windows in every ISO week (local), placed by a generator seeded with an HMAC of the
  service secret, the schedule id and the week, so the server always recomputes the same windows but
  the person cannot predict them.
- on_demand: `{"type": "on_demand"}`: no windows of its own; an officer calls `request_on_demand`.

The tick (`materialise_sessions`, `mark_missed`) turns windows into session rows with a one-time
check-in token (only its sha256 is stored) and books unattended windows as missed (a FAIL verdict:
a missed test is a violation). A session that ended in a technical failure is never missed: it gets a
REVIEW verdict with a retake offered. Every created or closed session is written to the audit log.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import importlib.resources
import json
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from media_server.db import audit
from media_server.db.enums import Decision, SessionKind, SessionStatus
from media_server.db.models import CheckSession, Person, Schedule, Verdict
from media_server.settings import SchedulesSettings
from media_server.tokens import new_secret_token, token_hash
from media_server.verdict import POLICY_VERSION
from media_server.webhooks import WebhookEvent, WebhookNotifier, verdict_event, violation_event

log = logging.getLogger(__name__)

# Token prefix of check-in links ("ck_..."), see media_server.tokens.new_secret_token.
CHECKIN_TOKEN_PREFIX = "ck"
# Audit actor of everything the scheduler tick does.
SCHEDULER_ACTOR = "scheduler"
# Namespace of the deterministic session ids (uuid5 of schedule id + window start): two ticks racing
# on the same window insert the same primary key, so one of them fails and nothing is doubled.
SESSION_ID_NAMESPACE = uuid.UUID("6b757a65-7400-4000-8000-7363686564ff")
# Domain-separation label of the random-rule seed key derived from the service secret.
_SEED_LABEL = b"kuzet/schedules/random-seed/v1"
_DAY_MINUTES = 24 * 60
ALL_DAYS = (0, 1, 2, 3, 4, 5, 6)


class RuleType(StrEnum):
    """Kinds of schedule rule. Stored values are stable."""

    DAILY = "daily"
    RANDOM = "random"
    ON_DEMAND = "on_demand"


def _parse_hhmm(value: Any) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise ValueError("a time of day is written 'HH:MM'")
    try:
        hh, mm = value.split(":")
        return time(int(hh), int(mm))
    except ValueError as exc:
        raise ValueError(f"not a time of day 'HH:MM': {value!r}") from exc


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_days(days: tuple[int, ...]) -> tuple[int, ...]:
    if not days:
        raise ValueError("at least one weekday is needed")
    if any(d < 0 or d > 6 for d in days):
        raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
    return tuple(sorted(set(days)))


class DailyRule(_Rule):
    """A fixed window on chosen weekdays, local time; end <= start runs past midnight."""

    type: Literal[RuleType.DAILY] = RuleType.DAILY
    start: time = Field(description="Local start of the window, 'HH:MM'.")
    end: time = Field(description="Local end of the window, 'HH:MM'.")
    days: tuple[int, ...] = Field(ALL_DAYS, description="Weekdays the window applies to, Monday = 0.")

    _hhmm = field_validator("start", "end", mode="before")(_parse_hhmm)
    _days = field_validator("days")(_check_days)


class RandomRule(_Rule):
    """`per_week` unannounced windows of `duration_min` between `earliest` and `latest` each local day."""

    type: Literal[RuleType.RANDOM] = RuleType.RANDOM
    per_week: int = Field(ge=1, le=28, description="Windows in each ISO week (local).")
    earliest: time = Field(description="No window starts before this local time, 'HH:MM'.")
    latest: time = Field(description="Every window ends by this local time, 'HH:MM'.")
    duration_min: int = Field(ge=5, le=240, description="Length of each window in minutes.")
    days: tuple[int, ...] = Field(ALL_DAYS, description="Weekdays windows may fall on, Monday = 0.")

    _hhmm = field_validator("earliest", "latest", mode="before")(_parse_hhmm)
    _days = field_validator("days")(_check_days)

    @model_validator(mode="after")
    def _fits(self) -> RandomRule:
        span = _minutes(self.latest) - _minutes(self.earliest)
        per_day = math.ceil(self.per_week / len(self.days))
        if span < per_day * self.duration_min:
            raise ValueError(
                f"{self.per_week} windows of {self.duration_min} min a week on {len(self.days)} day(s) "
                f"do not fit between {self.earliest:%H:%M} and {self.latest:%H:%M}"
            )
        return self


class OnDemandRule(_Rule):
    """No windows of its own: tests are requested by an officer (`request_on_demand`)."""

    type: Literal[RuleType.ON_DEMAND] = RuleType.ON_DEMAND


Rule = Annotated[DailyRule | RandomRule | OnDemandRule, Field(discriminator="type")]


AnyRule = DailyRule | RandomRule | OnDemandRule
_RULE_ADAPTER: TypeAdapter[AnyRule] = TypeAdapter(Rule)


def parse_rule(data: dict[str, Any] | AnyRule) -> AnyRule:
    """Validate a stored JSON rule (pydantic ValidationError, a ValueError, when malformed)."""
    if isinstance(data, DailyRule | RandomRule | OnDemandRule):
        return data
    return _RULE_ADAPTER.validate_python(data)


def rule_to_json(rule: AnyRule) -> dict[str, Any]:
    """The JSON form stored in `schedules.rule` (times as 'HH:MM')."""
    data: dict[str, Any] = rule.model_dump(mode="json")
    for name in ("start", "end", "earliest", "latest"):
        if name in data:
            data[name] = data[name][:5]
    return data


class Window(NamedTuple):
    """One due window, aware UTC datetimes, start < end."""

    start: datetime
    end: datetime


def derive_seed_key(service_secret: bytes) -> bytes:
    """The key that seeds random rules, derived from the service secret (never the secret itself)."""
    return hmac.new(service_secret, _SEED_LABEL, hashlib.sha256).digest()


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The zone `name`, from the `tzdata` package when installed, else from the system's zoneinfo.

    zoneinfo itself prefers the system's files, which can be older than 2024a and still put
    Kazakhstan at UTC+6; the pinned package gives every node the same rules.
    """
    if "/" in name and ".." not in name:
        try:
            area, _, city = name.rpartition("/")
            ref = importlib.resources.files("tzdata.zoneinfo").joinpath(*area.split("/"), city)
            with ref.open("rb") as src:
                return ZoneInfo.from_file(src, key=name)
        except (ModuleNotFoundError, FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
            pass
    return ZoneInfo(name)


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else zone(tz)


def _local_to_utc(day: date, minute_of_day: int, tz: ZoneInfo) -> datetime:
    day = day + timedelta(days=minute_of_day // _DAY_MINUTES)
    minute_of_day %= _DAY_MINUTES
    local = datetime.combine(day, time(minute_of_day // 60, minute_of_day % 60), tzinfo=tz)
    return local.astimezone(UTC)


def _week_plan(rule: RandomRule, monday: date, schedule_id: str, seed_key: bytes) -> dict[date, list[int]]:
    """Start minutes of every window in the ISO week starting `monday`, by local date."""
    iso_year, iso_week, _ = monday.isocalendar()
    message = f"{schedule_id}|{iso_year}-W{iso_week:02d}|{json.dumps(rule_to_json(rule), sort_keys=True)}"
    seed = hmac.new(seed_key, message.encode(), hashlib.sha256).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    per_day = math.ceil(rule.per_week / len(rule.days))
    picked = rng.sample([d for d in rule.days for _ in range(per_day)], rule.per_week)
    earliest = _minutes(rule.earliest)
    span = _minutes(rule.latest) - earliest
    plan: dict[date, list[int]] = {}
    for weekday in sorted(set(picked)):
        count = picked.count(weekday)
        free = span - count * rule.duration_min
        # Sorted offsets in [0, free], then each window pushed past the ones before it: uniform over
        # all non-overlapping placements, never overlapping.
        offsets = sorted(rng.randint(0, free) for _ in range(count))
        plan[monday + timedelta(days=weekday)] = [
            earliest + off + i * rule.duration_min for i, off in enumerate(offsets)
        ]
    return plan


def due_windows(
    rule: AnyRule | dict[str, Any],
    tz: ZoneInfo | str,
    day: date,
    *,
    schedule_id: str = "",
    seed_key: bytes = b"",
) -> list[Window]:
    """Windows that start on local date `day` in zone `tz`, as UTC, sorted by start.

    Random rules are a function of (seed_key, schedule_id, ISO week, rule): pass the same values to get
    the same windows.
    """
    parsed = parse_rule(rule)
    zone = _zone(tz)
    if isinstance(parsed, DailyRule):
        if day.weekday() not in parsed.days:
            return []
        start, end = _minutes(parsed.start), _minutes(parsed.end)
        if end <= start:
            end += _DAY_MINUTES
        return [Window(_local_to_utc(day, start, zone), _local_to_utc(day, end, zone))]
    if isinstance(parsed, RandomRule):
        monday = day - timedelta(days=day.weekday())
        starts = _week_plan(parsed, monday, schedule_id, seed_key).get(day, [])
        return [
            Window(_local_to_utc(day, s, zone), _local_to_utc(day, s + parsed.duration_min, zone))
            for s in starts
        ]
    return []


def windows_between(
    rule: AnyRule | dict[str, Any],
    tz: ZoneInfo | str,
    start: datetime,
    end: datetime,
    *,
    schedule_id: str = "",
    seed_key: bytes = b"",
) -> list[Window]:
    """Windows (UTC) that overlap [start, end), for aware datetimes `start` <= `end`."""
    zone = _zone(tz)
    parsed = parse_rule(rule)
    # A window starting the local day before `start` can still be open (past midnight).
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date()
    out: list[Window] = []
    while day <= last:
        out += [
            w
            for w in due_windows(parsed, zone, day, schedule_id=schedule_id, seed_key=seed_key)
            if w.end > start and w.start < end
        ]
        day += timedelta(days=1)
    return sorted(out)


def on_demand_window(now: datetime, duration: timedelta) -> Window:
    """A window for an officer's on-demand test: it opens now."""
    return Window(now.astimezone(UTC), now.astimezone(UTC) + duration)


# -- the tick -------------------------------------------------------------------------------------


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
    """A window that closed without a completed check: missed (FAIL) or technical failure (REVIEW)."""

    session_id: str
    person_id: str
    kind: SessionKind
    window_start: datetime
    window_end: datetime
    verdict_id: str
    decision: Decision
    reason: str


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
    db: Session, now: datetime, *, horizon: timedelta, seed_key: bytes
) -> list[IssuedSession]:
    """Create the sessions of every active schedule whose window starts before `now + horizon`.

    Idempotent: a window that already has its session is skipped (its token is not reissued). Windows
    that already ended are not created (the person was never told of them), nor windows that started
    before the schedule was created. Each session is committed with its audit entry on its own.
    """
    now = _require_aware(now)
    until = now + horizon
    schedules = db.scalars(
        select(Schedule)
        .join(Person, Person.id == Schedule.person_id)
        .where(Schedule.active.is_(True), Person.erased_at.is_(None))
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
            if window.start < schedule.created_at or window.end <= now:
                continue
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
    person = db.get(Person, person_id)
    if person is None or person.erased_at is not None:
        raise LookupError(f"no such person: {person_id}")
    created = _create_session(
        db,
        session_id=str(uuid.uuid4()),
        person_id=person_id,
        kind=kind,
        window=on_demand_window(now, duration),
        meta={"rule_type": RuleType.ON_DEMAND.value, "requested_by": requested_by},
        actor=requested_by,
        action="session.on_demand",
    )
    if created is None:  # a fresh uuid4 cannot collide; kept for the type checker
        raise RuntimeError("on-demand session could not be created")
    return created


def _verdict_manifest_sha256(payload: dict[str, Any]) -> str:
    return hashlib.sha256(audit.canonical_json(payload).encode("ascii")).hexdigest()


def mark_missed(db: Session, now: datetime, *, grace: timedelta) -> list[ClosedSession]:
    """Close windows that ended more than `grace` before `now` without a completed check.

    A session never started (still scheduled, token unused) becomes `missed` with a FAIL verdict,
    reason "missed", and its check-in token is revoked. A session that ended in a technical failure
    and has no verdict yet gets REVIEW with a retake offered: a technical failure is never a
    violation. Each closed session is committed with its audit entry on its own.
    """
    now = _require_aware(now)
    cutoff = now - grace
    candidates = db.scalars(
        select(CheckSession)
        .where(
            CheckSession.status.in_([SessionStatus.SCHEDULED, SessionStatus.TECHNICAL_FAILURE]),
            CheckSession.window_end <= cutoff,
        )
        .order_by(CheckSession.window_end, CheckSession.id)
    ).all()
    closed: list[ClosedSession] = []
    for s in candidates:
        if s.status is SessionStatus.SCHEDULED:
            if s.started_at is not None or s.token_used_at is not None:
                continue  # it began: the pipeline decides how it ended
            decision, retake = Decision.FAIL, False
            reason = (
                f"missed: no {s.kind.value} check between {s.window_start.isoformat()} "
                f"and {s.window_end.isoformat()}"
            )
            # Conditional UPDATE: a check-in that starts right now, or a second tick, wins the race.
            moved = db.execute(
                update(CheckSession)
                .where(
                    CheckSession.id == s.id,
                    CheckSession.status == SessionStatus.SCHEDULED,
                    CheckSession.started_at.is_(None),
                    CheckSession.token_used_at.is_(None),
                )
                .values(status=SessionStatus.MISSED, token_hash=None)  # the link dies with the window
            )
            if getattr(moved, "rowcount", 0) != 1:
                db.rollback()
                continue
            action = "session.missed"
        else:
            if db.scalar(select(Verdict.id).where(Verdict.session_id == s.id).limit(1)) is not None:
                continue
            decision, retake = Decision.REVIEW, True
            reason = "technical: the session ended in a technical failure; a retake is offered"
            action = "session.technical_review"
        reasons = [reason]
        verdict = Verdict(
            session_id=s.id,
            decision=decision,
            reasons=reasons,
            retake_offered=retake,
            policy_version=POLICY_VERSION,
            thresholds={},
            models={},
            manifest_sha256=_verdict_manifest_sha256(
                {
                    "session_id": s.id,
                    "decision": decision.value,
                    "reasons": reasons,
                    "window_start": s.window_start.isoformat(),
                    "window_end": s.window_end.isoformat(),
                    "policy_version": POLICY_VERSION,
                    "artifacts": [],
                }
            ),
        )
        db.add(verdict)
        db.flush()
        audit.append(
            db,
            SCHEDULER_ACTOR,
            action,
            "session",
            s.id,
            {"person_id": s.person_id, "verdict_id": verdict.id, "decision": decision.value},
        )
        db.commit()
        closed.append(
            ClosedSession(
                session_id=s.id,
                person_id=s.person_id,
                kind=s.kind,
                window_start=s.window_start,
                window_end=s.window_end,
                verdict_id=verdict.id,
                decision=decision,
                reason=reason,
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
    events = [
        verdict_event(
            session_id=closed.session_id,
            person_id=closed.person_id,
            kind=closed.kind.value,
            decision=closed.decision.value,
            reasons=[closed.reason],
            verdict_id=closed.verdict_id,
            retake_offered=closed.decision is Decision.REVIEW,
        )
    ]
    if closed.decision is Decision.FAIL:
        events.append(
            violation_event(
                session_id=closed.session_id,
                person_id=closed.person_id,
                kind=closed.kind.value,
                reason=closed.reason,
                verdict_id=closed.verdict_id,
                source="missed",
            )
        )
    return events


def _tick_sync(
    factory: sessionmaker[Session], now: datetime, settings: SchedulesSettings, seed_key: bytes
) -> TickReport:
    with factory() as db:
        issued = materialise_sessions(
            db, now, horizon=timedelta(minutes=settings.horizon_min), seed_key=seed_key
        )
        closed = mark_missed(db, now, grace=timedelta(seconds=settings.missed_grace_s))
    return TickReport(issued, closed)


async def tick_once(
    factory: sessionmaker[Session],
    settings: SchedulesSettings,
    *,
    seed_key: bytes,
    deliver: Callable[[IssuedSession], Awaitable[None]],
    notifier: WebhookNotifier | None = None,
    now: datetime | None = None,
) -> TickReport:
    """One tick: database work in a worker thread, then each new link to `deliver` and events to webhooks."""
    report = await asyncio.to_thread(_tick_sync, factory, now or datetime.now(UTC), settings, seed_key)
    for issued in report.issued:
        try:
            await deliver(issued)
        except Exception:
            # The session exists; an officer can resend its link. Keep delivering the others.
            log.exception("check-in link delivery failed", extra={"session_id": issued.session_id})
    if notifier is not None:
        for closed in report.closed:
            for event in closed_session_events(closed):
                notifier.submit(event)
    return report


async def run_scheduler(
    factory: sessionmaker[Session],
    settings: SchedulesSettings,
    *,
    seed_key: bytes,
    deliver: Callable[[IssuedSession], Awaitable[None]],
    notifier: WebhookNotifier | None = None,
    is_leader: Callable[[], bool] | None = None,
) -> None:
    """Tick every `settings.tick_s` until cancelled (start it as a task in the app lifespan).

    With several nodes, `is_leader` (a lease, blocking; run in a thread) lets only one of them tick.
    """
    while True:
        try:
            leader = True if is_leader is None else await asyncio.to_thread(is_leader)
            if leader:
                await tick_once(factory, settings, seed_key=seed_key, deliver=deliver, notifier=notifier)
        except Exception:
            log.exception("scheduler tick failed; will retry")
        await asyncio.sleep(settings.tick_s)
