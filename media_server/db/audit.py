"""The hash-chained, append-only audit log.

Each row's `row_hash` is SHA-256 over a canonical JSON of its content (ts, actor, action,
subject_type, subject_id, details) and `prev_hash`, the previous row's `row_hash` (64 zeros for
the first row). Changing, inserting or deleting a row breaks the chain at that row or the next one;
`verify_chain` finds the first break. Removing rows from the end leaves a shorter valid chain: compare
the head with one recorded elsewhere to catch that: a signed checkpoint (`make_checkpoint`, published
by `kuzet audit checkpoint`, checked by `kuzet audit verify --checkpoint F`) or an evidence manifest.

Appends are serialised so the chain never forks: PostgreSQL takes a transaction-scoped advisory
lock, SQLite takes its single write lock before the head is read; `prev_hash` is also UNIQUE.
Both locks are held until the caller's transaction ends, so commit promptly after appending.
PostgreSQL must run at READ COMMITTED (its default) for the head read to see the last commit.

The lock is the chain's one serialisation point, so what matters is how long it is held. On PostgreSQL
the append is one statement after the lock (`_append_postgres`): it reads the head, takes the timestamp
and computes the row hash in the server (the canonical JSON is built here around two slots, the previous
hash and the timestamp), so the lock is held for that statement and the commit only, never for a head
read and an INSERT round trip apart (benchmarks/audit_append.py gives the figures).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Text, cast, func, select, text
from sqlalchemy.orm import Session

from media_server.db.models import GENESIS_HASH, AuditEntry
from media_server.db.types import utcnow
from media_server.keys import EvidenceSigner

# pg_advisory_xact_lock key for audit appends ("kuzet" + 1); any constant shared by all writers.
AUDIT_LOCK_KEY = 0x6B757A6574_0001
# Rows fetched per round trip while verifying.
VERIFY_BATCH_ROWS = 1000


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only, no NaN/Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _iso_utc(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def compute_row_hash(
    *,
    ts: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | None,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of the canonical JSON of one row's content and its predecessor's hash."""
    payload = {
        "ts": _iso_utc(ts),
        "actor": actor,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The last row of the chain: anchor it elsewhere to detect truncation of the tail."""

    id: int
    row_hash: str


class ChainProblem(StrEnum):
    """Why verification stopped at a row."""

    ROW_HASH_MISMATCH = "row_hash_mismatch"  # the row's content no longer matches its hash
    PREV_HASH_MISMATCH = "prev_hash_mismatch"  # a row before it was removed, inserted or rewritten
    HEAD_MISMATCH = "head_mismatch"  # the chain is shorter than, or differs from, an anchored head
    UNREADABLE = "unreadable"  # the row's stored values cannot be hashed (e.g. a naive ts)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of `verify_chain`: ok, rows checked, and the first bad row with the reason."""

    ok: bool
    rows_checked: int
    head: AuditHead | None
    first_bad_id: int | None = None
    problem: ChainProblem | None = None
    reason: str | None = None


def _take_write_lock(session: Session) -> None:
    bind = session.connection()
    if bind.dialect.name == "postgresql":
        bind.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    elif bind.dialect.name == "sqlite":
        # A write statement that touches no row takes SQLite's write lock now (like BEGIN IMMEDIATE,
        # but valid mid-transaction), so the head read below cannot go stale before our INSERT.
        bind.execute(text("DELETE FROM audit_log WHERE 1 = 0"))


def head(session: Session) -> AuditHead | None:
    """The newest row's id and hash (None for an empty log)."""
    row = session.execute(
        select(AuditEntry.id, AuditEntry.row_hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    return AuditHead(row.id, row.row_hash) if row else None


def append(
    session: Session,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (flushed, not committed) and return it.

    `details` must be JSON-serialisable; it is stored in its JSON round-tripped form (tuples become
    lists, keys strings) so the stored value hashes the same when read back. Keep personal data
    out of it: the log is never erased.
    """
    try:
        stored_details: dict[str, Any] = json.loads(json.dumps(dict(details or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit details are not plain JSON: {exc}") from exc
    if session.connection().dialect.name == "postgresql":
        return _append_postgres(session, actor, action, subject_type, subject_id, stored_details)
    return _append_orm(session, actor, action, subject_type, subject_id, stored_details)


def _append_orm(
    session: Session,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | None,
    stored_details: dict[str, Any],
) -> AuditEntry:
    """Lock, read the head, hash here, INSERT through the unit of work (SQLite: one writer anyway)."""
    _take_write_lock(session)
    last = head(session)
    prev_hash = last.row_hash if last else GENESIS_HASH
    # Taken after the lock so timestamps follow chain order.
    ts = utcnow()
    entry = AuditEntry(
        ts=ts,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        details=stored_details,
        prev_hash=prev_hash,
        row_hash=compute_row_hash(
            ts=ts,
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            details=stored_details,
            prev_hash=prev_hash,
        ),
    )
    session.add(entry)
    session.flush()
    return entry


# The server formats the timestamp exactly as `_iso_utc` does (UTC, microseconds, "+00:00").
_PG_APPEND = text(
    """
    INSERT INTO audit_log (ts, actor, action, subject_type, subject_id, details, prev_hash, row_hash)
    SELECT n.ts, :actor, :action, :subject_type, :subject_id, CAST(:details AS JSON), h.prev,
           encode(sha256(convert_to(
               :before_prev || h.prev || :before_ts
               || to_char(n.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00' || :after_ts,
               'UTF8')), 'hex')
    FROM (SELECT date_trunc('microseconds', clock_timestamp()) AS ts) AS n,
         (SELECT COALESCE((SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1), :genesis) AS prev) AS h
    RETURNING id, ts, prev_hash, row_hash
    """
)


def _append_postgres(
    session: Session,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | None,
    details: dict[str, Any],
) -> AuditEntry:
    """One INSERT after the advisory lock: head, timestamp and row hash computed by the server."""
    slot = f"@@{secrets.token_hex(16)}@@"  # cannot occur in the canonical JSON of real content
    template = canonical_json(
        {
            "ts": slot + "ts",
            "actor": actor,
            "action": action,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "details": details,
            "prev_hash": slot + "prev",
        }
    )
    before_prev, rest = template.split(slot + "prev", 1)
    before_ts, after_ts = rest.split(slot + "ts", 1)
    session.flush()  # the caller's own rows first, outside the lock
    _take_write_lock(session)
    row = session.execute(
        _PG_APPEND,
        {
            "actor": actor,
            "action": action,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "details": json.dumps(details, allow_nan=False),
            "before_prev": before_prev,
            "before_ts": before_ts,
            "after_ts": after_ts,
            "genesis": GENESIS_HASH,
        },
    ).one()
    # A detached copy of the written row (the INSERT bypassed the unit of work; nothing to flush).
    return AuditEntry(
        id=row.id,
        ts=row.ts.astimezone(UTC),
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        details=details,
        prev_hash=row.prev_hash,
        row_hash=row.row_hash,
    )


def verify_chain(
    session: Session, *, expected_head: AuditHead | None = None, expected_count: int | None = None
) -> ChainReport:
    """Recompute every row's hash in id order and check each links to its predecessor.

    With `expected_head` (a head recorded earlier, e.g. a signed checkpoint), also report a chain
    that no longer contains it; with `expected_count`, also one that holds a different number of
    rows up to and including that head.
    """
    # details are read as their stored text and parsed here, so a corrupted value is reported
    # against its row instead of failing the whole query.
    query = select(
        AuditEntry.id,
        AuditEntry.ts,
        AuditEntry.actor,
        AuditEntry.action,
        AuditEntry.subject_type,
        AuditEntry.subject_id,
        cast(AuditEntry.details, Text).label("details_json"),
        AuditEntry.prev_hash,
        AuditEntry.row_hash,
    ).order_by(AuditEntry.id)
    prev_hash = GENESIS_HASH
    checked = 0
    last: AuditHead | None = None
    anchor_seen = expected_head is None

    def broken(row_id: int | None, problem: ChainProblem, reason: str) -> ChainReport:
        return ChainReport(
            ok=False, rows_checked=checked, head=last, first_bad_id=row_id, problem=problem, reason=reason
        )

    rows = session.execute(query.execution_options(yield_per=VERIFY_BATCH_ROWS))
    try:
        for row in rows:
            checked += 1
            if row.prev_hash != prev_hash:
                return broken(
                    row.id,
                    ChainProblem.PREV_HASH_MISMATCH,
                    f"row {row.id} names predecessor {row.prev_hash[:12]}..., but the row before it "
                    f"hashes to {prev_hash[:12]}...: a row was removed, inserted or rewritten before it",
                )
            try:
                recomputed = compute_row_hash(
                    ts=row.ts.astimezone(UTC),
                    actor=row.actor,
                    action=row.action,
                    subject_type=row.subject_type,
                    subject_id=row.subject_id,
                    details=json.loads(row.details_json),
                    prev_hash=row.prev_hash,
                )
            except (TypeError, ValueError) as exc:
                return broken(row.id, ChainProblem.UNREADABLE, f"row {row.id} cannot be hashed: {exc}")
            if recomputed != row.row_hash:
                return broken(
                    row.id,
                    ChainProblem.ROW_HASH_MISMATCH,
                    f"row {row.id}: content does not match its stored hash (altered after it was written)",
                )
            prev_hash = row.row_hash
            last = AuditHead(row.id, row.row_hash)
            if last == expected_head:
                anchor_seen = True
                if expected_count is not None and checked != expected_count:
                    return broken(
                        row.id,
                        ChainProblem.HEAD_MISMATCH,
                        f"the checkpoint counted {expected_count} rows up to row {row.id}, the log has "
                        f"{checked}",
                    )
    except (TypeError, ValueError) as exc:  # a stored value the column type cannot even decode
        after = f"after row {last.id}" if last else "at the start"
        return broken(None, ChainProblem.UNREADABLE, f"a row {after} cannot be read: {exc}")
    finally:
        rows.close()
    if expected_head is not None and not anchor_seen:
        return broken(
            expected_head.id,
            ChainProblem.HEAD_MISMATCH,
            f"anchored head row {expected_head.id} ({expected_head.row_hash[:12]}...) is not in the chain",
        )
    return ChainReport(ok=True, rows_checked=checked, head=last)


# -- signed checkpoints ---------------------------------------------------------------------------

CHECKPOINT_FORMAT = "kuzet-audit-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file that is malformed or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the log had `count` rows ending in `head`" taken at `created_at`.

    Published outside the database (a ticket, an e-mail to the auditor, WORM storage), it lets
    `verify_chain` notice rows deleted from the tail, which the chain alone cannot show."""

    head: AuditHead
    count: int
    created_at: str
    public_key_b64: str


def _checkpoint_body(head_row: AuditHead, count: int, created_at: str, public_key_b64: str) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "head_id": head_row.id,
        "head_hash": head_row.row_hash,
        "count": count,
        "created_at": created_at,
        "public_key": public_key_b64,
    }


def make_checkpoint(session: Session, signing_key: EvidenceSigner) -> dict[str, Any]:
    """The current head and row count, signed (Ed25519 over the canonical JSON of the other fields)."""
    head_row = head(session)
    if head_row is None:
        raise CheckpointError("the audit log is empty: nothing to checkpoint")
    count = int(session.scalar(select(func.count()).where(AuditEntry.id <= head_row.id)) or 0)
    pub = base64.b64encode(
        signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    body = _checkpoint_body(head_row, count, _iso_utc(utcnow()), pub)
    signature = signing_key.sign(canonical_json(body).encode("ascii"))
    return {**body, "signature": base64.b64encode(signature).decode()}


def read_checkpoint(doc: Any, trusted_public_key_b64: str) -> Checkpoint:
    """A checkpoint document checked against the trusted key; CheckpointError when it is not valid."""
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a {CHECKPOINT_FORMAT} document")
    try:
        head_row = AuditHead(int(doc["head_id"]), str(doc["head_hash"]))
        count = int(doc["count"])
        body = _checkpoint_body(head_row, count, str(doc["created_at"]), str(doc["public_key"]))
        signature = base64.b64decode(str(doc["signature"]), validate=True)
        trusted = Ed25519PublicKey.from_public_bytes(base64.b64decode(trusted_public_key_b64, validate=True))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed checkpoint: {exc}") from exc
    if str(doc["public_key"]) != trusted_public_key_b64.strip():
        raise CheckpointError("the checkpoint was signed by another key than the trusted one")
    try:
        trusted.verify(signature, canonical_json(body).encode("ascii"))
    except InvalidSignature as exc:
        raise CheckpointError("the checkpoint's signature does not verify (altered or forged)") from exc
    return Checkpoint(head_row, count, body["created_at"], body["public_key"])
