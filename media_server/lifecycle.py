"""A supervised person's life cycle: active -> supervision ended -> erased.

Ending supervision records the order's end date, starts the retention clock (`retention_until` =
end date + `retention.after_supervision_days`) and revokes at once everything that lets the person be
tested or sign in: devices, schedules, open check-in links and the person's own logins. Erasure
(`media_server.erasure.erase_person`) revokes the same and then removes personal data. Every entry point (WHIP, station and breath API, check-in page)
asks `require_active` and refuses anyone else with `PersonNotActive` (410), storing nothing but an audit
line (`refuse_entry`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from media_server.db import audit
from media_server.db.enums import PersonStatus, SessionStatus
from media_server.db.models import CheckSession, Device, Person, Schedule, User
from media_server.db.types import utcnow
from media_server.errors import Conflict, Gone, NotFoundError
from media_server.settings import RetentionSettings

REVOKED_META = "revoked"


class PersonNotActive(Gone):
    """The person's supervision ended or they were erased: nothing may be taken from or sent to them."""

    code = "person_not_active"

    def __init__(self, person_id: str, status: PersonStatus) -> None:
        self.person_id = person_id
        self.status = status
        what = "was erased" if status is PersonStatus.ERASED else "is no longer under supervision"
        super().__init__(f"this person {what}; no check can be taken")


def status_of(person: Person) -> PersonStatus:
    """The person's life-cycle state (a row erased before the status column existed counts as erased)."""
    if person.erased_at is not None:
        return PersonStatus.ERASED
    return person.status


def require_active(db: Session, person_id: str) -> Person:
    """The person, when under supervision; NotFoundError / PersonNotActive otherwise."""
    person = db.get(Person, person_id)
    if person is None:
        raise NotFoundError("no such person")
    state = status_of(person)
    if state is not PersonStatus.ACTIVE:
        raise PersonNotActive(person_id, state)
    return person


def refuse_entry(
    sessions: sessionmaker[Session], refused: PersonNotActive, entry: str, details: dict[str, Any]
) -> None:
    """The one thing stored when a non-active person's device or link knocks: an audit line."""
    with sessions.begin() as db:
        audit.append(
            db,
            "system",
            "entry_refused",
            "person",
            refused.person_id,
            {"entry": entry, "status": refused.status.value, **details},
        )


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0) if isinstance(result, CursorResult) else 0


def revoke_person(db: Session, person_id: str, *, reason: str) -> dict[str, int]:
    """Deactivate the person's devices, schedules and own logins; cancel every open (unstarted) session.

    A cancelled session keeps its token hash, so its link is refused with a clear 410, not a 401.
    Does not commit; the caller writes the audit line.
    """
    now = utcnow()
    devices = _rowcount(
        db.execute(
            update(Device).where(Device.person_id == person_id, Device.active.is_(True)).values(active=False)
        )
    )
    schedules = _rowcount(
        db.execute(
            update(Schedule)
            .where(Schedule.person_id == person_id, Schedule.active.is_(True))
            .values(active=False)
        )
    )
    # Every request checks `User.active`, so a login token the person still holds stops working too.
    logins = _rowcount(
        db.execute(
            update(User).where(User.person_id == person_id, User.active.is_(True)).values(active=False)
        )
    )
    open_rows = db.scalars(
        select(CheckSession).where(
            CheckSession.person_id == person_id,
            CheckSession.status == SessionStatus.SCHEDULED,
            CheckSession.token_used_at.is_(None),
            CheckSession.started_at.is_(None),
        )
    ).all()
    for row in open_rows:
        row.status = SessionStatus.CANCELLED
        row.ended_at = now
        row.meta = {**(row.meta or {}), REVOKED_META: {"at": now.isoformat(), "reason": reason}}
    db.flush()
    return {
        "devices_revoked": devices,
        "schedules_revoked": schedules,
        "links_revoked": len(open_rows),
        "logins_deactivated": logins,
    }


def retention_until_for(ended_on: date, settings: RetentionSettings) -> datetime:
    """When a person whose order ended on `ended_on` becomes due for erasure (UTC midnight)."""
    start = datetime.combine(ended_on, time(0), tzinfo=UTC)
    return start + timedelta(days=settings.after_supervision_days)


def end_supervision(
    db: Session,
    person_id: str,
    ended_on: date,
    *,
    actor: str,
    reason: str,
    settings: RetentionSettings,
    today: date | None = None,
) -> dict[str, Any]:
    """Record the order's end: status, end date, retention clock; revoke at once; audited; commits.

    `ended_on` may not lie in the future (revocation takes effect now). Ending twice is a Conflict.
    """
    today = today or utcnow().date()
    if ended_on > today:
        raise Conflict(f"ended_on {ended_on.isoformat()} is in the future; record it on the day it ends")
    person = db.get(Person, person_id)
    if person is None:
        raise NotFoundError("no such person")
    state = status_of(person)
    if state is PersonStatus.ERASED:
        raise PersonNotActive(person_id, state)
    if state is PersonStatus.SUPERVISION_ENDED:
        raise Conflict(f"supervision already ended on {person.supervision_ended_on}")
    person.status = PersonStatus.SUPERVISION_ENDED
    person.supervision_ended_on = ended_on
    person.retention_until = retention_until_for(ended_on, settings)
    counts = revoke_person(db, person_id, reason="supervision_ended")
    audit.append(
        db,
        actor,
        "person.supervision_ended",
        "person",
        person_id,
        {
            "ended_on": ended_on.isoformat(),
            "retention_until": person.retention_until.isoformat(),
            "reason": reason,
            **counts,
        },
    )
    db.commit()
    return {
        "id": person_id,
        "status": person.status.value,
        "supervision_ended_on": ended_on.isoformat(),
        "retention_until": person.retention_until.isoformat(),
        **counts,
    }
