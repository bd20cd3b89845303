"""Retest episodes in the database: the person's open episode, its stage, advancing it with an event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from identity.checks import CheckResult
from media_server.breath.values import SYSTEM_ACTOR, BreathContext, Retest
from media_server.db import audit
from media_server.db.models import (
    BreathEpisode,
    Device,
    Person,
)
from media_server.services import Services
from sobriety.config import SobrietySettings
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
    BreathReading,
)
from sobriety.units import AlcoholUnit

log = logging.getLogger("kuzet.breath")


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


# pg_advisory_xact_lock(int, int) class key for a person's breath episodes ("br" + 1); the second key is
# the person.
EPISODE_LOCK_KEY = 0x62720001


def _lock_person_episodes(db: Session, person_id: str) -> None:
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k, hashtext(:p))"), {"k": EPISODE_LOCK_KEY, "p": person_id}
        )


def _current_episode(
    db: Session, person_id: str, reading_at: datetime, now: datetime, settings: SobrietySettings
) -> tuple[BreathEpisode | None, Episode]:
    """The person's open episode advanced to the reading's time, or a new one due at the reading.

    Locks the person's episodes first: a row lock alone locks nothing when no episode is open yet, and two
    first tests at once would each open their own (SQLite's BEGIN IMMEDIATE already serialises them)."""
    _lock_person_episodes(db, person_id)
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


def _order_of(person: Person | None, settings: SobrietySettings) -> tuple[OrderLimit, str]:
    if person is not None and person.order_brac_limit is not None and person.order_brac_unit:
        return OrderLimit(person.order_brac_limit, AlcoholUnit(person.order_brac_unit)), "court_order"
    return OrderLimit.default(settings), "default_limit_g_210l"


def order_limit(services: Services, person_id: str) -> tuple[OrderLimit, str]:
    """The person's court-order limit, or the service default; and which one it is."""
    with services.sessions() as db:
        return _order_of(db.get(Person, person_id), services.settings.sobriety)


def context_of(person: Person | None, device: Device | None, settings: SobrietySettings) -> BreathContext:
    """The judging context from person and station rows already loaded."""
    order, source = _order_of(person, settings)
    names = (person.id, person.external_ref) if person is not None else ()
    return BreathContext(names, order, source, device.calibrated_on if device is not None else None)


def load_context(services: Services, person_id: str, device_id: str) -> BreathContext:
    """The person and the station, read once in one transaction (when the route did not already)."""
    with services.sessions() as db:
        return context_of(db.get(Person, person_id), db.get(Device, device_id), services.settings.sobriety)


def judge_reading_and_advance(
    services: Services,
    person_id: str,
    session_id: str,
    reading: BreathReading,
    context: BreathContext,
    reading_used: Callable[[CheckResult], bool],
    now: datetime,
) -> tuple[_EpisodeStep, TestStage, CheckResult]:
    """In ONE locked transaction: the stage the episode expects, the reading against the order at that
    stage, and the episode moved on by it — so two concurrent tests of one person cannot both be judged
    at the same stage. `reading_used(check)` is False when the photos show the reading is not the person's.
    """
    settings: SobrietySettings = services.settings.sobriety
    with services.sessions.begin() as db:
        row, ep = _current_episode(db, person_id, reading.timestamp, now, settings)
        stage = expected_stage(ep)
        check = evaluate_reading(reading.brac, AlcoholUnit(reading.unit), context.order, stage, settings)
        check = replace(check, details={**check.details, "order_limit_source": context.order_source})
        event = (
            event_for(check, reading.timestamp)
            if reading_used(check)
            else RetestEvent(EventKind.REJECTED, reading.timestamp)
        )
        return _advance_in(db, row, ep, person_id, session_id, event, now, settings), stage, check


def _advance_episode(
    services: Services, person_id: str, session_id: str, event: RetestEvent, now: datetime
) -> _EpisodeStep:
    settings: SobrietySettings = services.settings.sobriety
    with services.sessions.begin() as db:
        row, ep = _current_episode(db, person_id, event.at, now, settings)
        return _advance_in(db, row, ep, person_id, session_id, event, now, settings)


def _advance_in(
    db: Session,
    row: BreathEpisode | None,
    ep: Episode,
    person_id: str,
    session_id: str,
    event: RetestEvent,
    now: datetime,
    settings: SobrietySettings,
) -> _EpisodeStep:
    """Move the (locked) episode on by `event` in the caller's transaction, and audit it."""
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
