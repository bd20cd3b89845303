"""Schedules: windows in the person's zone, deterministic random tests, the tick on a migrated database
(SQLite, and PostgreSQL when KUZET_TEST_PG_ADMIN_URL is set)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from media_server.db import audit
from media_server.db.enums import Decision, DeviceKind, PersonStatus, SessionKind, SessionStatus
from media_server.db.models import AuditEntry, BreathNonce, CheckSession, Device, Person, Schedule, Verdict
from media_server.links import record_link_delivery
from media_server.schedules import (
    IssuedSession,
    closed_session_events,
    due_windows,
    mark_missed,
    materialise_sessions,
    parse_rule,
    request_on_demand,
    tick_once,
    windows_between,
    zone,
)
from media_server.services import Services, build_services
from media_server.settings import DatabaseSettings, SchedulesSettings, Settings
from media_server.tokens import token_hash
from tests.support.verdicts import signed_manifest

ALMATY = zone("Asia/Almaty")
# The shipped setting: an open window is offered while at least this much of it remains.
OPEN_LEFT = timedelta(minutes=SchedulesSettings().open_window_min_left_min)
DAILY: dict[str, Any] = {"type": "daily", "start": "09:00", "end": "10:00", "days": [0, 1, 2, 3, 4]}
RANDOM: dict[str, Any] = {
    "type": "random",
    "per_week": 4,
    "earliest": "08:00",
    "latest": "21:00",
    "duration_min": 30,
}
KEY = b"k" * 32
MONDAY = date(2026, 11, 23)


def test_almaty_is_utc_plus_5() -> None:
    # Kazakhstan moved to a single zone, UTC+5, on 2024-03-01 (tzdata 2024a); older data says +6.
    assert datetime(2026, 6, 1, 12, tzinfo=ALMATY).utcoffset() == timedelta(hours=5)
    assert datetime(2026, 1, 1, 12, tzinfo=ALMATY).utcoffset() == timedelta(hours=5)


def test_daily_window_in_almaty_is_five_hours_ahead_of_utc() -> None:
    [window] = due_windows(DAILY, "Asia/Almaty", MONDAY)
    assert window.start == datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert due_windows(DAILY, ALMATY, MONDAY + timedelta(days=5)) == []  # Saturday is not listed


def test_daily_window_past_midnight_ends_the_next_day() -> None:
    [window] = due_windows({"type": "daily", "start": "23:30", "end": "00:30"}, ALMATY, MONDAY)
    assert window.start == datetime(2026, 11, 23, 18, 30, tzinfo=UTC)
    assert window.end == datetime(2026, 11, 23, 19, 30, tzinfo=UTC)
    # Still open just after local midnight, so a range starting then finds it.
    found = windows_between(
        {"type": "daily", "start": "23:30", "end": "00:30"},
        ALMATY,
        datetime(2026, 11, 23, 19, 10, tzinfo=UTC),
        datetime(2026, 11, 23, 19, 20, tzinfo=UTC),
    )
    assert found == [window]


def _week(
    rule: dict[str, Any], monday: date, schedule_id: str, key: bytes
) -> list[tuple[datetime, datetime]]:
    return [
        w
        for d in range(7)
        for w in due_windows(rule, ALMATY, monday + timedelta(days=d), schedule_id=schedule_id, seed_key=key)
    ]


def test_random_windows_are_deterministic_bounded_and_counted_per_week() -> None:
    for weeks in range(6):
        monday = MONDAY + timedelta(weeks=weeks)
        windows = _week(RANDOM, monday, "sched-1", KEY)
        assert windows == _week(RANDOM, monday, "sched-1", KEY)  # the server recomputes the same
        assert len(windows) == 4
        for start, end in windows:
            assert end - start == timedelta(minutes=30)
            local_start, local_end = start.astimezone(ALMATY), end.astimezone(ALMATY)
            assert local_start.date() == local_end.date()
            assert time(8, 0) <= local_start.time() and local_end.time() <= time(21, 0)
            assert monday <= local_start.date() < monday + timedelta(days=7)
        ordered = sorted(windows)
        assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))  # never overlap


def test_random_windows_depend_on_schedule_week_and_secret() -> None:
    base = _week(RANDOM, MONDAY, "sched-1", KEY)
    assert base != _week(RANDOM, MONDAY, "sched-2", KEY)
    assert base != _week(RANDOM, MONDAY, "sched-1", b"another secret")
    next_week = [
        (s - timedelta(weeks=1), e - timedelta(weeks=1))
        for s, e in _week(RANDOM, MONDAY + timedelta(weeks=1), "sched-1", KEY)
    ]
    assert base != next_week


def test_many_random_tests_on_few_days_stack_without_overlap() -> None:
    rule = {
        "type": "random",
        "per_week": 6,
        "earliest": "18:00",
        "latest": "21:00",
        "duration_min": 60,
        "days": [5, 6],
    }
    windows = sorted(_week(rule, MONDAY, "s", KEY))
    assert len(windows) == 6
    assert {w[0].astimezone(ALMATY).weekday() for w in windows} == {5, 6}
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))


def test_rules_that_cannot_fit_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_rule(
            {"type": "random", "per_week": 8, "earliest": "08:00", "latest": "09:00", "duration_min": 45}
        )
    with pytest.raises(ValidationError):
        parse_rule({"type": "daily", "start": "25:00", "end": "10:00"})
    with pytest.raises(ValidationError):
        parse_rule({"type": "weekly"})


# -- the tick on a real migrated database ---------------------------------------------------------


@pytest.fixture()
def services(empty_db_url: str, tmp_path: Path) -> Iterator[Services]:
    """The real composition root on each backend of tests/conftest.py `empty_db_url`: the embedded default
    (SQLite), then a fresh PostgreSQL database (the scheduler's queries and person-status filters run on both)."""
    built = build_services(
        Settings(
            data_dir=tmp_path / "var",
            schedules=SchedulesSettings(horizon_min=60, missed_grace_s=300),
            database=DatabaseSettings(url=empty_db_url),
        )
    )
    try:
        yield built
    finally:
        built.workers.shutdown()
        built.engine.dispose()


@pytest.fixture()
def factory(services: Services) -> sessionmaker[Session]:
    return services.sessions


def _person_with_schedule(
    db: Session, rule: dict[str, Any], created_at: datetime, ref: str = "case-1"
) -> Schedule:
    person = Person(external_ref=ref, display_name="Test Person", timezone="Asia/Almaty")
    db.add(person)
    db.flush()
    schedule = Schedule(
        person_id=person.id,
        kind=SessionKind.CHECKIN,
        rule=rule,
        timezone="Asia/Almaty",
        created_at=created_at,
    )
    db.add(schedule)
    db.commit()
    return schedule


def test_tick_creates_sessions_once_with_hashed_tokens(factory: sessionmaker[Session]) -> None:
    created = datetime(2026, 11, 22, tzinfo=UTC)
    now = datetime(2026, 11, 23, 3, 30, tzinfo=UTC)  # 08:30 in Almaty
    with factory() as db:
        schedule = _person_with_schedule(db, DAILY, created)
        issued = materialise_sessions(
            db, now, horizon=timedelta(hours=1), seed_key=KEY, open_window_min_left=OPEN_LEFT
        )
        assert [(i.window_start, i.window_end) for i in issued] == [
            (datetime(2026, 11, 23, 4, tzinfo=UTC), datetime(2026, 11, 23, 5, tzinfo=UTC))
        ]
        assert (
            materialise_sessions(
                db,
                now + timedelta(minutes=5),
                horizon=timedelta(hours=1),
                seed_key=KEY,
                open_window_min_left=OPEN_LEFT,
            )
            == []
        )
        rows = db.scalars(select(CheckSession)).all()
        assert len(rows) == 1
        assert rows[0].status is SessionStatus.SCHEDULED
        assert rows[0].token_hash == token_hash(issued[0].token) != issued[0].token
        assert rows[0].meta["schedule_id"] == schedule.id
        [entry] = db.scalars(select(AuditEntry).where(AuditEntry.action == "session.scheduled")).all()
        assert entry.subject_id == rows[0].id
        assert audit.verify_chain(db).ok


def test_a_window_open_when_the_schedule_is_made_is_offered_while_enough_of_it_remains(
    factory: sessionmaker[Session],
) -> None:
    with factory() as db:
        # Created at 04:30 UTC during today's 04:00-05:00 window (09:00-10:00 in Almaty).
        _person_with_schedule(db, DAILY, datetime(2026, 11, 23, 4, 30, tzinfo=UTC))
        [today] = materialise_sessions(
            db,
            datetime(2026, 11, 23, 4, 40, tzinfo=UTC),
            horizon=timedelta(hours=2),
            seed_key=KEY,
            open_window_min_left=OPEN_LEFT,
        )
        assert today.window_end == datetime(2026, 11, 23, 5, tzinfo=UTC)  # 20 minutes left: offered
        late = _person_with_schedule(db, DAILY, datetime(2026, 11, 23, 4, 50, tzinfo=UTC), ref="case-late")
        issued = materialise_sessions(
            db,
            datetime(2026, 11, 23, 4, 52, tzinfo=UTC),
            horizon=timedelta(hours=2),
            seed_key=KEY,
            open_window_min_left=OPEN_LEFT,
        )
        assert all(i.person_id != late.person_id for i in issued)  # 8 minutes left: skipped
        # Windows already over are never created; tomorrow's, already open, is offered.
        issued = materialise_sessions(
            db,
            datetime(2026, 11, 24, 4, 10, tzinfo=UTC),
            horizon=timedelta(hours=2),
            seed_key=KEY,
            open_window_min_left=OPEN_LEFT,
        )
        assert {i.window_start.date() for i in issued} == {date(2026, 11, 24)}


def _session(db: Session, person_id: str, status: SessionStatus, end: datetime, **kw: object) -> CheckSession:
    row = CheckSession(
        person_id=person_id,
        kind=SessionKind.CHECKIN,
        status=status,
        window_start=end - timedelta(hours=1),
        window_end=end,
        **kw,
    )
    db.add(row)
    db.commit()
    return row


def test_missed_window_is_a_violation_and_technical_failure_is_not(
    services: Services, factory: sessionmaker[Session]
) -> None:
    end = datetime(2026, 11, 23, 5, tzinfo=UTC)
    with factory() as db:
        schedule = _person_with_schedule(db, DAILY, datetime(2026, 11, 1, tzinfo=UTC))
        pid = schedule.person_id
        # The gateway accepted its link: a window never opened is the person's own absence.
        missed = _session(
            db, pid, SessionStatus.SCHEDULED, end, token_hash="a" * 64, meta={"link": {"status": "delivered"}}
        )
        technical = _session(
            db, pid, SessionStatus.TECHNICAL_FAILURE, end, started_at=end - timedelta(minutes=30)
        )
        started = _session(db, pid, SessionStatus.SCHEDULED, end, token_used_at=end - timedelta(minutes=10))
        completed = _session(db, pid, SessionStatus.COMPLETED, end)
        ids = (missed.id, technical.id, started.id, completed.id)
        db.rollback()  # SQLite: no transaction of this test may hold the write lock while the tick runs

        assert (
            mark_missed(services, end + timedelta(minutes=4), grace=timedelta(minutes=5)) == []
        )  # within grace
        closed = {
            c.session_id: c
            for c in mark_missed(services, end + timedelta(minutes=6), grace=timedelta(minutes=5))
        }
        assert set(closed) == set(ids[:2])
        assert closed[missed.id].decision is Decision.FAIL
        assert closed[technical.id].decision is Decision.REVIEW

        db.expire_all()
        assert db.get(CheckSession, missed.id).status is SessionStatus.MISSED  # type: ignore[union-attr]
        assert db.get(CheckSession, missed.id).token_hash is None  # type: ignore[union-attr]
        assert db.get(CheckSession, technical.id).status is SessionStatus.TECHNICAL_FAILURE  # type: ignore[union-attr]
        assert db.get(CheckSession, started.id).status is SessionStatus.SCHEDULED  # type: ignore[union-attr]
        assert db.get(CheckSession, completed.id).status is SessionStatus.COMPLETED  # type: ignore[union-attr]

        [fail] = db.scalars(select(Verdict).where(Verdict.session_id == missed.id)).all()
        assert fail.decision is Decision.FAIL and "attendance: missed" in fail.reasons[0]
        assert not fail.retake_offered
        [review] = db.scalars(select(Verdict).where(Verdict.session_id == technical.id)).all()
        assert review.decision is Decision.REVIEW and review.retake_offered
        assert closed[missed.id].verdict_id == fail.id
        # Each closed window has a signed manifest like any other verdict.
        judged = [(v.id, v.session_id, v.decision.value) for v in (fail, review)]
        db.rollback()  # SQLite: every transaction holds the write lock; the helper reads in its own
        for verdict_id, session_id, decision in judged:
            manifest = signed_manifest(services, verdict_id, services.signing_key.public_key())
            assert manifest["session_id"] == session_id and manifest["verdict"]["decision"] == decision
        # Our failure comes with a fresh link; the person's own absence does not.
        assert closed[missed.id].retake is None
        retake = closed[technical.id].retake
        assert retake is not None and retake.person_id == pid
        fresh = db.get(CheckSession, retake.session_id)
        assert fresh is not None and fresh.token_hash == token_hash(retake.token)
        assert fresh.meta["retake_of"] == technical.id and fresh.status is SessionStatus.SCHEDULED

        # A second tick changes nothing.
        db.rollback()
        assert mark_missed(services, end + timedelta(hours=1), grace=timedelta(minutes=5)) == []
        actions = db.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions.count("session.missed") == 1 and actions.count("session.technical_review") == 1
        assert audit.verify_chain(db).ok


def test_on_demand_window_opens_now(factory: sessionmaker[Session]) -> None:
    now = datetime(2026, 11, 23, 10, 7, tzinfo=UTC)
    with factory() as db:
        schedule = _person_with_schedule(db, {"type": "on_demand"}, datetime(2026, 11, 1, tzinfo=UTC))
        assert (
            materialise_sessions(
                db, now, horizon=timedelta(days=7), seed_key=KEY, open_window_min_left=OPEN_LEFT
            )
            == []
        )
        issued = request_on_demand(
            db,
            person_id=schedule.person_id,
            kind=SessionKind.BREATH,
            now=now,
            duration=timedelta(minutes=30),
            requested_by="officer:7",
        )
        assert (issued.window_start, issued.window_end) == (now, now + timedelta(minutes=30))
        row = db.get(CheckSession, issued.session_id)
        assert (
            row is not None and row.kind is SessionKind.BREATH and row.token_hash == token_hash(issued.token)
        )
        [entry] = db.scalars(select(AuditEntry).where(AuditEntry.action == "session.on_demand")).all()
        assert entry.actor == "officer:7"


async def test_tick_once_delivers_links_and_builds_violation_events(
    services: Services, factory: sessionmaker[Session]
) -> None:
    delivered: list[IssuedSession] = []

    async def deliver(issued: IssuedSession) -> None:
        delivered.append(issued)
        if len(delivered) == 1:
            raise RuntimeError("SMS gateway down")  # one failed delivery must not stop the tick
        record_link_delivery(services, issued.session_id, "delivered")

    with factory() as db:
        _person_with_schedule(db, DAILY, datetime(2026, 11, 1, tzinfo=UTC))
        _person_with_schedule(db, DAILY, datetime(2026, 11, 1, tzinfo=UTC), ref="case-2")
    first = await tick_once(
        services, seed_key=KEY, deliver=deliver, now=datetime(2026, 11, 23, 3, 30, tzinfo=UTC)
    )
    assert len(first.issued) == 2 and delivered == first.issued and first.closed == []
    # Nobody checked in: after the window and the grace, both windows are closed as missed.
    later = await tick_once(
        services, seed_key=KEY, deliver=deliver, now=datetime(2026, 11, 23, 5, 6, tzinfo=UTC)
    )
    # The link that never went out is our failure (REVIEW, a fresh link delivered); the other is missed.
    decisions = {c.person_id: c.decision for c in later.closed}
    failed_person = delivered[0].person_id
    assert later.issued == [] and decisions[failed_person] is Decision.REVIEW
    assert [d for p, d in decisions.items() if p != failed_person] == [Decision.FAIL]
    undelivered = next(c for c in later.closed if c.person_id == failed_person)
    assert undelivered.retake is not None and delivered[-1] == undelivered.retake
    assert any("never reached the person" in r for r in undelivered.outcome.reasons)
    missed = next(c for c in later.closed if c.person_id != failed_person)
    events = closed_session_events(missed)
    assert [e.type.value for e in events] == ["verdict", "violation"]
    assert "attendance: missed" in events[1].data["reason"] and events[1].data["source"] == "missed"


async def test_the_tick_prunes_breath_nonces_past_the_freshness_window(
    services: Services, factory: sessionmaker[Session]
) -> None:
    now = datetime(2026, 11, 23, 3, 30, tzinfo=UTC)
    sob = services.settings.sobriety
    horizon = timedelta(seconds=sob.nonce_max_age_s + sob.clock_skew_s)  # no older reading is admissible
    with factory.begin() as db:
        device = Device(serial="BR-nonces", kind=DeviceKind.BREATHALYZER)
        db.add(device)
        db.flush()
        seen = {
            "expired": now - horizon - timedelta(seconds=1),
            "long-expired": now - timedelta(days=2),
            "fresh": now - horizon + timedelta(seconds=1),
            "just-seen": now,
        }
        db.add_all(BreathNonce(device_id=device.id, nonce=n, seen_at=at) for n, at in seen.items())

    async def deliver(issued: IssuedSession) -> None:
        raise AssertionError("no schedule, no link")

    await tick_once(services, seed_key=KEY, deliver=deliver, now=now)
    with factory() as db:
        assert set(db.scalars(select(BreathNonce.nonce))) == {"fresh", "just-seen"}


# -- issue 18: our failures are not violations; random tests are announced when they open ---------


def test_random_window_is_created_only_once_it_opens(factory: sessionmaker[Session]) -> None:
    with factory() as db:
        schedule = _person_with_schedule(db, RANDOM, datetime(2026, 11, 1, tzinfo=UTC))
        windows = windows_between(
            RANDOM,
            "Asia/Almaty",
            datetime(2026, 11, 23, tzinfo=UTC),
            datetime(2026, 11, 30, tzinfo=UTC),
            schedule_id=schedule.id,
            seed_key=KEY,
        )
        first = windows[0]
        # Within the horizon but not open yet: nothing is created, so no link can announce it early.
        before = first.start - timedelta(minutes=30)
        assert (
            materialise_sessions(
                db, before, horizon=timedelta(hours=1), seed_key=KEY, open_window_min_left=OPEN_LEFT
            )
            == []
        )
        opened = materialise_sessions(
            db,
            first.start + timedelta(seconds=30),
            horizon=timedelta(hours=1),
            seed_key=KEY,
            open_window_min_left=OPEN_LEFT,
        )
        assert [(i.window_start, i.window_end) for i in opened] == [(first.start, first.end)]


def _closed_by(services: Services, end: datetime) -> dict[str, Any]:
    return {
        c.session_id: c for c in mark_missed(services, end + timedelta(minutes=6), grace=timedelta(minutes=5))
    }


def test_page_opened_but_never_connected_is_review_with_a_fresh_link(
    services: Services, factory: sessionmaker[Session]
) -> None:
    end = datetime(2026, 11, 23, 5, tzinfo=UTC)
    with factory() as db:
        pid = _person_with_schedule(db, DAILY, datetime(2026, 11, 1, tzinfo=UTC)).person_id
        opened = _session(
            db,
            pid,
            SessionStatus.SCHEDULED,
            end,
            token_hash="b" * 64,
            meta={
                "link": {"status": "delivered"},
                "page_opened_at": (end - timedelta(minutes=20)).isoformat(),
            },
        )
        undelivered = _session(
            db, pid, SessionStatus.SCHEDULED, end, token_hash="c" * 64, meta={"link": {"status": "failed"}}
        )
        ids = (opened.id, undelivered.id)
        db.rollback()
    closed = _closed_by(services, end)
    assert set(closed) == set(ids)
    with factory() as db:
        for sid, code in zip(ids, ("never_connected", "link_not_delivered"), strict=True):
            assert closed[sid].decision is Decision.REVIEW and closed[sid].outcome.retake_offered
            row = db.get_one(CheckSession, sid)
            assert row.status is SessionStatus.TECHNICAL_FAILURE and row.token_hash is None
            [verdict] = db.scalars(select(Verdict).where(Verdict.session_id == sid)).all()
            assert verdict.decision is Decision.REVIEW
            retake = closed[sid].retake
            assert retake is not None
            fresh = db.get_one(CheckSession, retake.session_id)
            assert fresh.meta["retake_of"] == sid and fresh.meta["retake_reason"] == code
            assert fresh.window_end - fresh.window_start == timedelta(minutes=60)


def test_automatic_retakes_stop_at_the_limit(services: Services, factory: sessionmaker[Session]) -> None:
    end = datetime(2026, 11, 23, 5, tzinfo=UTC)
    limit = services.settings.schedules.max_automatic_retakes
    with factory() as db:
        pid = _person_with_schedule(db, DAILY, datetime(2026, 11, 1, tzinfo=UTC)).person_id
        deep = _session(
            db,
            pid,
            SessionStatus.SCHEDULED,
            end,
            token_hash="d" * 64,
            meta={"retake_depth": limit, "link": {"status": "failed"}},
        )
        sid = deep.id
        db.rollback()
    closed = _closed_by(services, end)
    assert closed[sid].decision is Decision.REVIEW and closed[sid].retake is None
    with factory() as db:
        assert db.scalars(select(AuditEntry).where(AuditEntry.action == "session.retake_limit")).all()


def test_persons_no_longer_supervised_get_no_windows_and_no_bookings(
    services: Services, factory: sessionmaker[Session]
) -> None:
    end = datetime(2026, 11, 23, 5, tzinfo=UTC)
    with factory() as db:
        schedule = _person_with_schedule(db, DAILY, datetime(2026, 11, 1, tzinfo=UTC))
        technical = _session(
            db,
            schedule.person_id,
            SessionStatus.TECHNICAL_FAILURE,
            end,
            started_at=end - timedelta(minutes=9),
        )
        person = db.get_one(Person, schedule.person_id)
        person.status = PersonStatus.SUPERVISION_ENDED
        db.commit()
        tid = technical.id
        assert (
            materialise_sessions(
                db,
                end - timedelta(hours=2),
                horizon=timedelta(hours=2),
                seed_key=KEY,
                open_window_min_left=OPEN_LEFT,
            )
            == []
        )
    assert tid not in _closed_by(services, end)
