"""Location monitoring on the database: trackers, zones, the position chain, events and alerts.

Every function takes an open SQLAlchemy session and works in the caller's transaction.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from media_server.db.audit import canonical_json
from media_server.db.enums import AlertKind, AlertSource, DeviceKind, ZoneKind
from media_server.db.models import (
    BreathNonce,
    Device,
    DeviceEvent,
    LocationAlert,
    LocationZone,
    Person,
    Position,
    SignedBatch,
)
from media_server.db.types import utcnow
from media_server.location import chain
from media_server.location.policy import policy_for
from media_server.location.signed import EventBatch, PositionBatch, Tracker
from media_server.location.zones import (
    Breach,
    Fix,
    JitterRule,
    Zone,
    ZoneError,
    ZoneGeometry,
    breaches,
    on_wrong_side,
    parse_hours,
    timezone_of,
)
from media_server.settings import LocationSettings

# Compiled zone geometries kept per process, keyed by their exact definition (immutable values).
GEOMETRY_CACHE_ZONES = 4096


class DbTrackerRegistry:
    """`TrackerRegistry` on the devices table (kind tracker, with a public key), in the caller's session."""

    def __init__(self, db: Session) -> None:
        self._db = db

    def get_tracker(self, serial: str) -> Tracker | None:
        """The tracker with this serial, or None."""
        row = self._db.scalars(select(Device).where(Device.serial == serial)).one_or_none()
        if row is None or row.kind is not DeviceKind.TRACKER or not row.public_key_b64:
            return None
        return Tracker(row.id, row.serial, row.public_key_b64, row.active, row.person_id)


class DbNonceLedger:
    """`sobriety.reading.NonceLedger` on breath_nonces (shared with breathalyzers), in the caller's session.

    The nonce is written in the same transaction as the batch it admits (one commit, and a batch that
    fails to store does not burn its nonce); a savepoint turns a clash on the (device, nonce) primary key -
    an earlier or concurrent use - into False.
    """

    def __init__(self, db: Session) -> None:
        self._db = db

    def seen(self, device_id: str, nonce: str) -> bool:
        """True when this device already used this nonce."""
        return self._db.get(BreathNonce, (device_id, nonce)) is not None

    def remember(self, device_id: str, nonce: str, at: datetime) -> bool:
        """Record the nonce; False when it was already there."""
        try:
            with self._db.begin_nested():
                self._db.add(BreathNonce(device_id=device_id, nonce=nonce, seen_at=at))
        except DbIntegrityError:
            return False
        return True


# ------------------------------------------------------------------------------------------------ zones
@functools.lru_cache(maxsize=GEOMETRY_CACHE_ZONES)
def _geometry(spec_json: str, max_vertices: int, min_radius_m: float, max_extent_m: float) -> ZoneGeometry:
    return ZoneGeometry(
        json.loads(spec_json), max_vertices=max_vertices, min_radius_m=min_radius_m, max_extent_m=max_extent_m
    )


def compile_geometry(spec: dict[str, Any], settings: LocationSettings) -> ZoneGeometry:
    """The zone geometry of `spec` under the settings' bounds; raises ZoneError."""
    try:
        key = canonical_json(spec)
    except (TypeError, ValueError) as exc:
        raise ZoneError(f"geometry is not plain JSON: {exc}") from exc
    return _geometry(
        key, settings.max_polygon_vertices, settings.min_circle_radius_m, settings.max_zone_extent_m
    )


def zone_view(row: LocationZone) -> dict[str, Any]:
    """The API's view of a zone."""
    return {
        "id": row.id,
        "person_id": row.person_id,
        "kind": row.kind.value,
        "label": row.label,
        "geometry": row.geometry,
        "hours": row.hours,
        "created_at": row.created_at.isoformat(),
        "deleted_at": row.deleted_at.isoformat() if row.deleted_at else None,
    }


def create_zone(
    db: Session,
    *,
    person_id: str,
    kind: ZoneKind,
    label: str,
    geometry: dict[str, Any],
    hours: dict[str, Any] | None,
    created_by: str | None,
    settings: LocationSettings,
) -> LocationZone:
    """Validate and store a zone (ZoneError for a bad shape or hours, LookupError for too many zones)."""
    compiled = compile_geometry(geometry, settings)
    parsed_hours = parse_hours(hours)
    active = db.scalar(
        select(func.count())
        .select_from(LocationZone)
        .where(LocationZone.person_id == person_id, LocationZone.deleted_at.is_(None))
    )
    if (active or 0) >= settings.max_zones_per_person:
        raise ZoneError(f"a person has at most {settings.max_zones_per_person} active zones")
    row = LocationZone(
        person_id=person_id,
        kind=kind,
        label=label,
        geometry=compiled.spec,
        hours=parsed_hours.to_json() if parsed_hours else None,
        created_by=created_by,
    )
    db.add(row)
    db.flush()
    return row


def active_zones(db: Session, person_id: str, settings: LocationSettings) -> list[Zone]:
    """The person's zones that are not deleted, compiled."""
    rows = db.scalars(
        select(LocationZone).where(LocationZone.person_id == person_id, LocationZone.deleted_at.is_(None))
    )
    return [
        Zone(r.id, r.kind, compile_geometry(r.geometry, settings), parse_hours(r.hours), r.label)
        for r in rows
    ]


# --------------------------------------------------------------------------------------------- positions
def rule_of(settings: LocationSettings) -> JitterRule:
    """The jitter rule the settings define."""
    return JitterRule(
        settings.min_fixes, settings.min_duration_s, settings.max_gap_s, settings.max_accuracy_m
    )


def store_batch(
    db: Session, tracker: Tracker, kind: str, body: bytes, signature: str, received_at: datetime
) -> SignedBatch:
    """Keep the signed batch exactly as received (the evidence the rows below point at)."""
    assert tracker.person_id is not None
    row = SignedBatch(
        device_id=tracker.device_id,
        person_id=tracker.person_id,
        kind=kind,
        body=body.decode("utf-8"),
        signature=signature,
        sha256=hashlib.sha256(body).hexdigest(),
        received_at=received_at,
    )
    db.add(row)
    db.flush()
    return row


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert created by this request (its webhook is sent after the commit)."""

    id: str
    person_id: str
    kind: AlertKind
    source: AlertSource
    code: str
    started_at: datetime
    ended_at: datetime
    zone_id: str | None
    position_ids: tuple[int, ...]
    device_event_id: str | None


def _new_alert(row: LocationAlert) -> NewAlert:
    return NewAlert(
        row.id,
        row.person_id,
        row.kind,
        row.source,
        row.code,
        row.started_at,
        row.ended_at,
        row.zone_id,
        tuple(row.position_ids),
        row.device_event_id,
    )


def ingest_positions(
    db: Session,
    tracker: Tracker,
    batch: PositionBatch,
    body: bytes,
    signature: str,
    received_at: datetime,
    settings: LocationSettings,
) -> tuple[list[Position], list[NewAlert]]:
    """Store the batch, append its fixes to the person's chain, re-evaluate the affected span."""
    assert tracker.person_id is not None
    signed = store_batch(db, tracker, "positions", body, signature, received_at)
    fixes = [chain.NewFix(p.t, p.lat, p.lon, p.accuracy_m, p.source) for p in batch.positions]
    rows = chain.append(
        db, tracker.person_id, fixes, device_id=tracker.device_id, batch=signed, received_at=received_at
    )
    alerts = evaluate_span(db, tracker.person_id, [chain.as_fix(r) for r in rows], settings)
    return rows, alerts


def record_checkin_fixes(
    db: Session,
    person_id: str,
    fixes: Sequence[chain.NewFix],
    received_at: datetime,
    settings: LocationSettings,
) -> list[NewAlert]:
    """Append fixes the check-in page reported (no device, no signed batch) and judge them against zones.

    For the check-in flow: call it in the transaction that stores the session's result, with the page's
    location fix(es) (source `checkin`); announce the returned alerts after the commit
    (`media_server.location.flow.announce`).
    """
    if not fixes:
        return []
    rows = chain.append(db, person_id, fixes, device_id=None, batch=None, received_at=received_at)
    return evaluate_span(db, person_id, [chain.as_fix(r) for r in rows], settings)


def evaluate_span(
    db: Session, person_id: str, new_fixes: Sequence[Fix], settings: LocationSettings
) -> list[NewAlert]:
    """Re-evaluate, in time order, each zone that a new fix is on the wrong side of, around the new fixes.

    The span is [first - reevaluate_window_s, last + reevaluate_window_s] of the new fixes' times (late and
    out-of-order fixes included). Breaches overlapping an existing alert of the same zone extend it (a late
    fix adds proof, no second webhook); others become new violations. An alert is never withdrawn
    automatically. Zones no new fix is on the wrong side of are skipped: such fixes cannot make a breach.
    """
    if not new_fixes:
        return []
    zones = active_zones(db, person_id, settings)
    if not zones:
        return []
    person = db.get(Person, person_id)
    tz = timezone_of(person.timezone if person else "UTC")
    rule = rule_of(settings)
    touched = [zone for zone in zones if on_wrong_side(zone, new_fixes, rule, tz)]
    if not touched:
        return []
    window = timedelta(seconds=settings.reevaluate_window_s)
    first, last = min(f.t for f in new_fixes), max(f.t for f in new_fixes)
    rows = db.execute(
        select(Position.id, Position.t, Position.lat, Position.lon, Position.accuracy_m)
        .where(Position.person_id == person_id, Position.t >= first - window, Position.t <= last + window)
        .order_by(Position.t, Position.id)
    ).all()
    fixes = [Fix(t=t, lat=lat, lon=lon, accuracy_m=acc, id=pid) for pid, t, lat, lon, acc in rows]
    created: list[NewAlert] = []
    for zone in touched:
        for breach in breaches(zone, fixes, rule, tz):
            row = _upsert_breach(db, person_id, zone, breach, rule)
            if row is not None:
                created.append(_new_alert(row))
    return created


def _upsert_breach(
    db: Session, person_id: str, zone: Zone, breach: Breach, rule: JitterRule
) -> LocationAlert | None:
    existing = db.scalars(
        select(LocationAlert)
        .where(
            LocationAlert.person_id == person_id,
            LocationAlert.zone_id == zone.id,
            LocationAlert.started_at <= breach.end,
            LocationAlert.ended_at >= breach.start,
        )
        .order_by(LocationAlert.started_at)
        .limit(1)
    ).one_or_none()
    if existing is not None:
        ids = sorted(set(existing.position_ids) | set(breach.fix_ids))
        start = min(existing.started_at, breach.start)
        end = max(existing.ended_at, breach.end)
        if ids != list(existing.position_ids) or start != existing.started_at or end != existing.ended_at:
            existing.position_ids = ids
            existing.started_at, existing.ended_at = start, end
            existing.updated_at = utcnow()
        return None
    what = "entered exclusion zone" if zone.kind is ZoneKind.EXCLUSION else "left inclusion zone"
    row = LocationAlert(
        person_id=person_id,
        kind=AlertKind.VIOLATION,
        source=AlertSource.ZONE,
        code=breach.code,
        message=f"The person {what} {zone.label!r}: {len(breach.fix_ids)} fixes from "
        f"{breach.start.isoformat()} to {breach.end.isoformat()}.",
        zone_id=zone.id,
        started_at=breach.start,
        ended_at=breach.end,
        position_ids=list(breach.fix_ids),
        details={
            "zone_kind": zone.kind.value,
            "zone_label": zone.label,
            "rule": {
                "min_fixes": rule.min_fixes,
                "min_duration_s": rule.min_duration_s,
                "max_gap_s": rule.max_gap_s,
                "max_accuracy_m": rule.max_accuracy_m,
            },
        },
    )
    db.add(row)
    db.flush()
    return row


# ------------------------------------------------------------------------------------------ device events
def ingest_events(
    db: Session, tracker: Tracker, batch: EventBatch, body: bytes, signature: str, received_at: datetime
) -> tuple[list[DeviceEvent], list[NewAlert]]:
    """Store the batch and its events; raise alerts by the policy table (media_server.location.policy)."""
    assert tracker.person_id is not None
    signed = store_batch(db, tracker, "events", body, signature, received_at)
    events: list[DeviceEvent] = []
    alerts: list[NewAlert] = []
    for item in batch.events:
        event = DeviceEvent(
            device_id=tracker.device_id,
            person_id=tracker.person_id,
            batch_id=signed.id,
            type=item.type,
            t=item.t,
            details=dict(item.details),
            received_at=received_at,
        )
        db.add(event)
        db.flush()
        events.append(event)
        policy = policy_for(item.type)
        if policy.alert is None:
            continue
        alert = LocationAlert(
            person_id=tracker.person_id,
            kind=policy.alert,
            source=AlertSource.DEVICE,
            code=item.type.value,
            message=policy.message,
            device_event_id=event.id,
            started_at=item.t,
            ended_at=item.t,
            position_ids=[],
            details={"device_serial": tracker.serial},
        )
        db.add(alert)
        db.flush()
        alerts.append(_new_alert(alert))
    return events, alerts


# ------------------------------------------------------------------------------------------------ reading
def alert_view(row: LocationAlert) -> dict[str, Any]:
    """The API's view of an alert."""
    return {
        "id": row.id,
        "person_id": row.person_id,
        "kind": row.kind.value,
        "source": row.source.value,
        "code": row.code,
        "message": row.message,
        "zone_id": row.zone_id,
        "device_event_id": row.device_event_id,
        "started_at": row.started_at.isoformat(),
        "ended_at": row.ended_at.isoformat(),
        "position_ids": list(row.position_ids),
        "details": row.details,
        "created_at": row.created_at.isoformat(),
    }


def list_alerts(
    db: Session,
    *,
    person_id: str | None,
    kind: AlertKind | None,
    source: AlertSource | None,
    since: datetime | None,
    limit: int,
) -> Sequence[LocationAlert]:
    """Alerts, newest first, filtered."""
    query = select(LocationAlert)
    if person_id is not None:
        query = query.where(LocationAlert.person_id == person_id)
    if kind is not None:
        query = query.where(LocationAlert.kind == kind)
    if source is not None:
        query = query.where(LocationAlert.source == source)
    if since is not None:
        query = query.where(LocationAlert.started_at >= since)
    return db.scalars(query.order_by(LocationAlert.started_at.desc(), LocationAlert.id).limit(limit)).all()


def position_view(row: Position) -> dict[str, Any]:
    """The API's view of a stored position."""
    return {
        "id": row.id,
        "seq": row.seq,
        "t": row.t.isoformat(),
        "lat": row.lat,
        "lon": row.lon,
        "accuracy_m": row.accuracy_m,
        "source": row.source.value,
        "device_id": row.device_id,
        "received_at": row.received_at.isoformat(),
        "row_hash": row.row_hash,
    }


def erase_location(db: Session, person_id: str) -> dict[str, int]:
    """Delete everything location monitoring holds on a person (for `media_server.erasure.erase_person`).

    Zones go too: an exclusion zone is a third party's address. Returns row counts per table.
    """
    counts: dict[str, int] = {}
    for name, model in (
        ("location_alerts", LocationAlert),
        ("device_events", DeviceEvent),
        ("positions", Position),
        ("signed_batches", SignedBatch),
        ("location_zones", LocationZone),
    ):
        result = db.execute(delete(model).where(model.person_id == person_id))
        counts[name] = int(getattr(result, "rowcount", 0) or 0)
    return counts
