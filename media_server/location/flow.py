"""The location flows: a signed batch in, evidence and alerts stored, webhooks out.

Each flow reads top to bottom: parse the envelope, then in one transaction admit the signed batch
(signature, freshness, the person still under supervision, nonce; `media_server.location.signed`) and store it with its rows and alerts
(`media_server.location.store`) - or audit the refusal - then announce the new alerts through the webhook notifier. Database
work runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from media_server.db import audit
from media_server.errors import BadInput, TooLarge
from media_server.lifecycle import PersonNotActive, require_active
from media_server.location import store
from media_server.location.signed import (
    Admitted,
    EventBatch,
    PositionBatch,
    Refused,
    SignedEnvelope,
    admit,
)
from media_server.location.store import NewAlert
from media_server.services import Services
from media_server.webhooks import alert_event


@dataclass(frozen=True, slots=True)
class Accepted:
    """What an accepted batch produced: the stored batch, how many rows, and the alerts it raised."""

    person_id: str
    rows: int
    row_ids: tuple[Any, ...]
    alerts: tuple[NewAlert, ...]

    def to_dict(self) -> dict[str, Any]:
        """The 201 response body."""
        return {
            "person_id": self.person_id,
            "accepted": self.rows,
            "ids": list(self.row_ids),
            "alerts": [{"id": a.id, "kind": a.kind.value, "code": a.code} for a in self.alerts],
        }


def parse_envelope(body: bytes, max_body_bytes: int) -> SignedEnvelope:
    """The {"batch", "signature"} request body; BadInput / TooLarge otherwise."""
    if len(body) > max_body_bytes:
        raise TooLarge(f"a batch request is at most {max_body_bytes} bytes")
    try:
        return SignedEnvelope.model_validate_json(body)
    except ValidationError as exc:
        raise BadInput('send JSON {"batch": "<canonical JSON text>", "signature": "<base64>"}') from exc


def _limits(
    now: datetime, services: Services, max_items: int
) -> Callable[[PositionBatch | EventBatch], Refused | None]:
    loc = services.settings.location
    skew = timedelta(seconds=services.settings.sobriety.clock_skew_s)
    oldest = now - timedelta(days=loc.max_position_age_days)

    def check(batch: PositionBatch | EventBatch) -> Refused | None:
        items = batch.positions if isinstance(batch, PositionBatch) else batch.events
        if len(items) > max_items:
            return Refused("too_many_items", f"at most {max_items} items per batch")
        times = [item.t for item in items]
        if max(times) > now + skew:
            return Refused("future_fix", "an item is timestamped in the future; check the tracker's clock")
        if min(times) < oldest:
            return Refused("fix_too_old", f"items older than {loc.max_position_age_days} days are refused")
        return None

    return check


def _supervised(
    db: Session,
    trackers: store.DbTrackerRegistry,
    limits: Callable[[PositionBatch | EventBatch], Refused | None],
) -> Callable[[PositionBatch | EventBatch], Refused | None]:
    """`limits`, after refusing a tracker whose person is no longer supervised (410).

    A revoked tracker is refused earlier (401); this holds even for a tracker switched back on by
    mistake. It runs after the signature check, so an unsigned request learns nothing of the person,
    and before the nonce is remembered, so a refused batch stores nothing but its audit line.
    """

    def check(batch: PositionBatch | EventBatch) -> Refused | None:
        tracker = trackers.get_tracker(batch.device_serial)
        if tracker is not None and tracker.person_id is not None:
            try:
                require_active(db, tracker.person_id)
            except PersonNotActive as refused:
                return Refused(PersonNotActive.code, str(refused))
        return limits(batch)

    return check


def _admit(
    services: Services,
    db: Session,
    model: type[PositionBatch] | type[EventBatch],
    envelope: SignedEnvelope,
    now: datetime,
) -> Admitted[Any] | Refused:
    loc, sob = services.settings.location, services.settings.sobriety
    max_items = loc.max_batch_positions if model is PositionBatch else loc.max_batch_events
    trackers = store.DbTrackerRegistry(db)
    return admit(
        model,
        envelope.batch.encode("utf-8"),
        envelope.signature,
        trackers,
        store.DbNonceLedger(db),
        now,
        max_age_s=sob.nonce_max_age_s,
        clock_skew_s=sob.clock_skew_s,
        nonce_min_chars=sob.nonce_min_chars,
        check=_supervised(db, trackers, _limits(now, services, max_items)),
    )


def announce(services: Services, alerts: Sequence[NewAlert]) -> None:
    """Send an `alert` webhook for each new alert (call on the event loop, after the commit)."""
    if not services.notifier.enabled:
        return
    for a in alerts:
        services.notifier.submit(
            alert_event(
                alert_id=a.id,
                person_id=a.person_id,
                kind=a.kind.value,
                source=a.source.value,
                code=a.code,
                started_at=a.started_at,
                ended_at=a.ended_at,
                zone_id=a.zone_id,
                position_ids=a.position_ids,
                device_event_id=a.device_event_id,
            )
        )


def _record_refusal(db: Session, kind: str, envelope: SignedEnvelope, refused: Refused) -> Refused:
    """Audit a refused batch (forgery and replay attempts are security events), without its content."""
    audit.append(
        db,
        actor="device:unauthenticated" if refused.status == 401 else "device:tracker",
        action="location_batch_refused",
        subject_type="device",
        subject_id=None,
        details={
            "kind": kind,
            "code": refused.code,
            "sha256": hashlib.sha256(envelope.batch.encode("utf-8")).hexdigest(),
        },
    )
    return refused


def _positions_sync(services: Services, envelope: SignedEnvelope, now: datetime) -> Accepted | Refused:
    """Admission and storage in one transaction (one commit; the nonce is kept only with its batch)."""
    with services.sessions.begin() as db:
        admitted = _admit(services, db, PositionBatch, envelope, now)
        if isinstance(admitted, Refused):
            return _record_refusal(db, "positions", envelope, admitted)
        tracker, batch = admitted.tracker, admitted.batch
        assert tracker.person_id is not None
        rows, alerts = store.ingest_positions(
            db,
            tracker,
            batch,
            envelope.batch.encode("utf-8"),
            envelope.signature,
            now,
            services.settings.location,
        )
        return Accepted(tracker.person_id, len(rows), tuple(r.id for r in rows), tuple(alerts))


def _events_sync(services: Services, envelope: SignedEnvelope, now: datetime) -> Accepted | Refused:
    """Admission and storage in one transaction."""
    with services.sessions.begin() as db:
        admitted = _admit(services, db, EventBatch, envelope, now)
        if isinstance(admitted, Refused):
            return _record_refusal(db, "events", envelope, admitted)
        tracker, batch = admitted.tracker, admitted.batch
        assert tracker.person_id is not None
        events, alerts = store.ingest_events(
            db, tracker, batch, envelope.batch.encode("utf-8"), envelope.signature, now
        )
        return Accepted(tracker.person_id, len(events), tuple(e.id for e in events), tuple(alerts))


async def submit_positions(services: Services, body: bytes, now: datetime) -> Accepted | Refused:
    """Admit and store a signed position batch; announce the violations it proves."""
    envelope = parse_envelope(body, services.settings.location.max_body_bytes)
    outcome = await asyncio.to_thread(_positions_sync, services, envelope, now)
    if isinstance(outcome, Accepted):
        announce(services, outcome.alerts)
    return outcome


async def submit_events(services: Services, body: bytes, now: datetime) -> Accepted | Refused:
    """Admit and store a signed device-event batch; announce the alerts its policy raises."""
    envelope = parse_envelope(body, services.settings.location.max_body_bytes)
    outcome = await asyncio.to_thread(_events_sync, services, envelope, now)
    if isinstance(outcome, Accepted):
        announce(services, outcome.alerts)
    return outcome
