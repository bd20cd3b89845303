"""The retention report: what is held per person, and why (`kuzet retention report`, admin API).

For each person: their life-cycle state and dates, the rows and stored objects that still hold their
data (templates, fingerprints, sessions, evidence objects by kind with bytes, objects of rejected
submissions, and the location track: positions, signed batches, device events, alerts and zones), and
the reason it is held. Objects of rejected submissions that belong to nobody are
listed on their own with the date they become due for erasure.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from media_server.db.enums import PersonStatus
from media_server.db.models import (
    Artifact,
    CheckSession,
    DeviceEvent,
    Enrolment,
    LocationAlert,
    LocationZone,
    Person,
    PhotoFingerprint,
    Position,
    Rejection,
    RejectionArtifact,
    SignedBatch,
)
from media_server.erasure import ERASED_META
from media_server.lifecycle import status_of
from media_server.settings import RetentionSettings


@dataclass
class PersonHoldings:
    """What is held for one person and why."""

    person_id: str
    external_ref: str
    status: PersonStatus
    supervision_ended_on: str | None
    retention_until: str | None
    erased_at: str | None
    held: dict[str, int] = field(default_factory=dict)
    objects_by_kind: dict[str, int] = field(default_factory=dict)
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "external_ref": self.external_ref,
            "status": self.status.value,
            "supervision_ended_on": self.supervision_ended_on,
            "retention_until": self.retention_until,
            "erased_at": self.erased_at,
            "held": self.held,
            "objects_by_kind": self.objects_by_kind,
            "why": self.why,
        }


# The location track, erased with the person (`media_server.location.store.erase_location`).
LocationTable = (
    type[Position] | type[SignedBatch] | type[DeviceEvent] | type[LocationAlert] | type[LocationZone]
)
LOCATION_TABLES: tuple[tuple[str, LocationTable], ...] = (
    ("positions", Position),
    ("signed_batches", SignedBatch),
    ("device_events", DeviceEvent),
    ("location_alerts", LocationAlert),
    ("location_zones", LocationZone),
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _why_location(held: dict[str, int]) -> str:
    if not any(held[name] for name, _ in LOCATION_TABLES):
        return ""
    return (
        f"; location track: {held['positions']} position(s) in {held['signed_batches']} signed batch(es) "
        f"(the tracker's own signed evidence, re-verifiable with its key), {held['device_events']} device "
        f"event(s) and {held['location_alerts']} alert(s) proving zone or tamper violations, "
        f"{held['location_zones']} zone(s) (an exclusion zone is a third party's address) - erased with "
        "the person"
    )


def _why(p: Person, state: PersonStatus, held: dict[str, int], settings: RetentionSettings) -> str:
    if state is PersonStatus.ACTIVE:
        return (
            "under supervision: enrolment templates, the evidence of every check and the location track "
            "are kept while the order runs" + _why_location(held)
        )
    if state is PersonStatus.SUPERVISION_ENDED:
        return (
            f"supervision ended on {p.supervision_ended_on}; held until {_iso(p.retention_until)} "
            f"(retention.after_supervision_days={settings.after_supervision_days}) for appeals and audits, "
            "then erased by `kuzet retention erase-due`" + _why_location(held)
        )
    locked = held["objects"] + held["rejection_objects"]
    rest = (
        f"; {locked} evidence object(s) still under object lock or legal hold are erased once free"
        if locked
        else ""
    )
    return (
        f"erased on {_iso(p.erased_at)}: only decisions, verdicts and the audit log remain (no personal "
        f"data){rest}"
    )


def retention_report(db: Session, settings: RetentionSettings, now: datetime) -> dict[str, Any]:
    """Per person: state, dates, what is held (counts and bytes) and why; plus unattributed rejections."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pid, n in db.execute(select(Enrolment.person_id, func.count()).group_by(Enrolment.person_id)).all():
        counts[pid]["templates"] = int(n)
    for pid, n in db.execute(
        select(PhotoFingerprint.person_id, func.count()).group_by(PhotoFingerprint.person_id)
    ).all():
        counts[pid]["photo_fingerprints"] = int(n)
    for pid, n in db.execute(
        select(CheckSession.person_id, func.count()).group_by(CheckSession.person_id)
    ).all():
        counts[pid]["sessions"] = int(n)
    for name, model in LOCATION_TABLES:
        for pid, n in db.execute(select(model.person_id, func.count()).group_by(model.person_id)).all():
            counts[pid][name] = int(n)
    for pid, kind, size, meta in db.execute(
        select(CheckSession.person_id, Artifact.kind, Artifact.size, Artifact.meta).join(
            CheckSession, CheckSession.id == Artifact.session_id
        )
    ).all():
        if ERASED_META in (meta or {}):
            counts[pid]["objects_erased"] += 1
            continue
        counts[pid]["objects"] += 1
        counts[pid]["object_bytes"] += int(size)
        kinds[pid][kind.value] += 1
    loose = {"rejections": 0, "objects": 0, "object_bytes": 0}
    oldest: datetime | None = None
    for pid, size, meta, created in db.execute(
        select(
            Rejection.person_id, RejectionArtifact.size, RejectionArtifact.meta, Rejection.created_at
        ).join(Rejection, Rejection.id == RejectionArtifact.rejection_id)
    ).all():
        if ERASED_META in (meta or {}):
            continue
        if pid is None:
            loose["objects"] += 1
            loose["object_bytes"] += int(size)
            oldest = created if oldest is None or created < oldest else oldest
            continue
        counts[pid]["rejection_objects"] += 1
        counts[pid]["rejection_object_bytes"] += int(size)
    loose["rejections"] = int(
        db.scalar(select(func.count()).select_from(Rejection).where(Rejection.person_id.is_(None))) or 0
    )
    persons = []
    keys = (
        "templates",
        "photo_fingerprints",
        "sessions",
        "objects",
        "object_bytes",
        "objects_erased",
        "rejection_objects",
        "rejection_object_bytes",
        *(name for name, _ in LOCATION_TABLES),
    )
    for p in db.scalars(select(Person).order_by(Person.created_at, Person.id)).all():
        state = status_of(p)
        held = {k: counts[p.id][k] for k in keys}
        persons.append(
            PersonHoldings(
                person_id=p.id,
                external_ref=p.external_ref,
                status=state,
                supervision_ended_on=p.supervision_ended_on.isoformat() if p.supervision_ended_on else None,
                retention_until=_iso(p.retention_until),
                erased_at=_iso(p.erased_at),
                held=held,
                objects_by_kind=dict(kinds[p.id]),
                why=_why(p, state, held, settings),
            ).to_dict()
        )
    due = oldest + timedelta(days=settings.unattributed_days) if oldest else None
    return {
        "generated_at": now.isoformat(),
        "persons": persons,
        "unattributed": {
            **loose,
            "oldest": _iso(oldest),
            "first_due_for_erasure": _iso(due),
            "why": (
                "bytes of rejected submissions that name no registered station or person, kept as evidence "
                f"of the attempt for retention.unattributed_days={settings.unattributed_days}"
            ),
        },
    }
