"""Positions as evidence: a hash chain per person, in arrival order.

Each row's `row_hash` is SHA-256 over the canonical JSON (`media_server.db.audit.canonical_json`) of
its content - person, seq, fix time, lat, lon, accuracy, source, device, the sha256 of the signed batch
that carried it, when it was received - and `prev_hash`, the person's previous row's hash (64 zeros for
the first). Rows are numbered `seq` = 1, 2, ... per person; (person, seq) and (person, prev_hash) are
unique, so two writers cannot fork a chain. Appends for one person are serialised: PostgreSQL takes a
transaction-scoped advisory lock on (POSITIONS_LOCK_KEY, hashtext(person_id)); SQLite's transactions
already begin IMMEDIATE (one writer). Late and out-of-order fixes are appended when they arrive; their
fix time `t` is data, not order.

`verify_person` recomputes the chain and also checks each row's batch: the stored batch body must hash
to the sha256 the row names, and its signature must verify with the device's registered key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from media_server.db.audit import canonical_json
from media_server.db.enums import PositionSource
from media_server.db.models import GENESIS_HASH, Device, Position, SignedBatch
from media_server.location.zones import Fix
from sobriety.reading import verify_signature

# pg_advisory_xact_lock(int, int) class key for position appends ("kz" + 7); the second key is the person.
POSITIONS_LOCK_KEY = 0x6B7A0007
VERIFY_BATCH_ROWS = 1000


def _iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("position timestamps must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def row_hash(
    *,
    person_id: str,
    seq: int,
    t: datetime,
    lat: float,
    lon: float,
    accuracy_m: float,
    source: str,
    device_id: str | None,
    batch_sha256: str | None,
    received_at: datetime,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of one position row's content and its predecessor's hash."""
    payload: dict[str, Any] = {
        "person_id": person_id,
        "seq": seq,
        "t": _iso(t),
        "lat": lat,
        "lon": lon,
        "accuracy_m": accuracy_m,
        "source": source,
        "device_id": device_id,
        "batch_sha256": batch_sha256,
        "received_at": _iso(received_at),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class NewFix:
    """A fix to append: time (aware), degrees, accuracy (m), source."""

    t: datetime
    lat: float
    lon: float
    accuracy_m: float
    source: PositionSource


def _lock_person(db: Session, person_id: str) -> None:
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k, hashtext(:p))"), {"k": POSITIONS_LOCK_KEY, "p": person_id}
        )


def append(
    db: Session,
    person_id: str,
    fixes: Sequence[NewFix],
    *,
    device_id: str | None,
    batch: SignedBatch | None,
    received_at: datetime,
) -> list[Position]:
    """Append `fixes` (in the order given) to the person's chain in the caller's transaction; flushed."""
    _lock_person(db, person_id)
    head = db.execute(
        select(Position.seq, Position.row_hash)
        .where(Position.person_id == person_id)
        .order_by(Position.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (head.seq, head.row_hash) if head else (0, GENESIS_HASH)
    rows: list[Position] = []
    batch_sha = batch.sha256 if batch is not None else None
    for fix in fixes:
        seq += 1
        digest = row_hash(
            person_id=person_id,
            seq=seq,
            t=fix.t,
            lat=fix.lat,
            lon=fix.lon,
            accuracy_m=fix.accuracy_m,
            source=fix.source.value,
            device_id=device_id,
            batch_sha256=batch_sha,
            received_at=received_at,
            prev_hash=prev,
        )
        rows.append(
            Position(
                person_id=person_id,
                seq=seq,
                t=fix.t,
                lat=fix.lat,
                lon=fix.lon,
                accuracy_m=fix.accuracy_m,
                source=fix.source,
                device_id=device_id,
                batch_id=batch.id if batch is not None else None,
                batch_sha256=batch_sha,
                received_at=received_at,
                prev_hash=prev,
                row_hash=digest,
            )
        )
        prev = digest
    db.add_all(rows)
    db.flush()
    return rows


def as_fix(row: Position) -> Fix:
    """The zone module's view of a stored position."""
    return Fix(t=row.t, lat=row.lat, lon=row.lon, accuracy_m=row.accuracy_m, id=row.id)


@dataclass(frozen=True, slots=True)
class PositionsReport:
    """The result of `verify_person`: ok, rows checked, head, and the first bad seq with the reason."""

    ok: bool
    rows_checked: int
    head_seq: int | None
    head_hash: str | None
    first_bad_seq: int | None = None
    reason: str | None = None


def verify_person(db: Session, person_id: str) -> PositionsReport:
    """Recompute the person's position chain in seq order; check links, hashes and signed batches."""
    rows = db.execute(
        select(Position)
        .where(Position.person_id == person_id)
        .order_by(Position.seq)
        .execution_options(yield_per=VERIFY_BATCH_ROWS)
    ).scalars()
    prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    head: Position | None = None
    batches_ok: dict[str, str | None] = {}

    def broken(seq: int, reason: str) -> PositionsReport:
        return PositionsReport(
            False, checked, head.seq if head else None, head.row_hash if head else None, seq, reason
        )

    for row in rows:
        checked += 1
        if row.seq != expected_seq:
            return broken(row.seq, f"expected seq {expected_seq}, found {row.seq}: a row was removed")
        if row.prev_hash != prev:
            return broken(
                row.seq, f"seq {row.seq} does not link to its predecessor: a row was altered or removed"
            )
        recomputed = row_hash(
            person_id=row.person_id,
            seq=row.seq,
            t=row.t,
            lat=row.lat,
            lon=row.lon,
            accuracy_m=row.accuracy_m,
            source=row.source.value,
            device_id=row.device_id,
            batch_sha256=row.batch_sha256,
            received_at=row.received_at,
            prev_hash=row.prev_hash,
        )
        if recomputed != row.row_hash:
            return broken(row.seq, f"seq {row.seq}: content does not match its stored hash (altered)")
        if row.batch_id is not None:
            if row.batch_id not in batches_ok:
                batches_ok[row.batch_id] = _batch_problem(db, row.batch_id, row.batch_sha256)
            problem = batches_ok[row.batch_id]
            if problem is not None:
                return broken(row.seq, f"seq {row.seq}: {problem}")
        prev = row.row_hash
        expected_seq += 1
        head = row
    return PositionsReport(True, checked, head.seq if head else None, head.row_hash if head else None)


def _batch_problem(db: Session, batch_id: str, expected_sha256: str | None) -> str | None:
    batch = db.get(SignedBatch, batch_id)
    if batch is None:
        return f"its signed batch {batch_id} is missing"
    body = batch.body.encode("utf-8")
    if hashlib.sha256(body).hexdigest() != (expected_sha256 or batch.sha256):
        return f"its signed batch {batch_id} no longer hashes to the recorded sha256"
    device = db.get(Device, batch.device_id)
    if device is None or not device.public_key_b64:
        return f"the device of batch {batch_id} has no registered key"
    if not verify_signature(body, batch.signature, device.public_key_b64):
        return f"the signature of batch {batch_id} does not verify with the device's key"
    return None
