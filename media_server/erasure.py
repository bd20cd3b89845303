"""Subject erasure: once a person's retention period has passed (or on request, by an admin, with a
reason), remove their biometric and personal data.

What goes: enrolment templates (rows with their ciphertexts), photo fingerprints, the `details` of
check results (they can hold embeddings, landmarks or frame data), session locations, the person's
name and external reference (the row stays, marked `erased_at`, for the verdicts that refer to it),
their logins are deactivated, their devices, schedules and open links revoked (`media_server.lifecycle`),
and every evidence object whose retention has ended — session artifacts and the artifacts of rejected
submissions (`rejection_artifacts`) alike. What stays:
decisions (check outcomes and codes, verdicts, reviews) and the audit log, which holds no personal data.

An object still under COMPLIANCE retention or legal hold is never deleted: it is reported as
"retained until X" / "legal hold" and picked up again by a later `erase_due` once it is free. An
object whose content is also evidence for another person who is not erased is left in the store.
Each pass that removes anything writes an `erasures` row (counts and `proof_sha256`, a SHA-256 over
the person id, the time, the counts and the sorted deleted keys) and an audit entry; `verify_erasure`
recomputes that hash from the rows marked in that pass and checks the store no longer holds them.
The bytes of rejected submissions that belong to nobody are erased `retention.unattributed_days` after
they arrived (`erase_unattributed`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, delete, func, null, select, update
from sqlalchemy.orm import Session

from media_server.db import audit
from media_server.db.enums import PersonStatus
from media_server.db.models import (
    Artifact,
    AuditEntry,
    CheckResultRecord,
    CheckSession,
    Enrolment,
    Erasure,
    Person,
    PhotoFingerprint,
    Rejection,
    RejectionArtifact,
    User,
)
from media_server.evidence.port import EvidenceStore, NotFound, ObjectLocked, StoreUnavailable
from media_server.lifecycle import revoke_person
from media_server.location.store import erase_location

RETENTION_ACTOR = "retention"
ERASED_NAME = "erased"
# Stored in `meta` of an artifact whose object is gone (or was never ours alone to delete).
ERASED_META = "erased_at"


class ErasureRefused(Exception):
    """An explicit erasure was asked for before the person's retention period ended."""


@dataclass(frozen=True)
class Retained:
    """An evidence object kept back: its key and why (retention end or legal hold)."""

    key: str
    reason: str
    retain_until: datetime | None = None


@dataclass(frozen=True)
class ErasureProof:
    """What one erasure pass removed for one person, and the proof recorded for it."""

    person_id: str
    erasure_id: str | None
    erased_at: datetime
    counts: dict[str, int]
    deleted_keys: list[str]
    retained: list[Retained] = field(default_factory=list)
    proof_sha256: str = ""


def proof_hash(
    person_id: str, erased_at: datetime, counts: dict[str, int], deleted_keys: Sequence[str]
) -> str:
    """SHA-256 (hex) of the canonical JSON of one erasure record (keys sorted)."""
    payload = {
        "person_id": person_id,
        "erased_at": erased_at.astimezone(UTC).isoformat(),
        "counts": counts,
        "deleted_keys": sorted(deleted_keys),
    }
    return hashlib.sha256(audit.canonical_json(payload).encode("ascii")).hexdigest()


def _run(db: Session, statement: Executable) -> int:
    """Execute a bulk DELETE/UPDATE; the number of rows it touched."""
    result = db.execute(statement)
    return int(cast(CursorResult[Any], result).rowcount or 0)


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    return now.astimezone(UTC)


def _shared_elsewhere(db: Session, key: str, person_id: str) -> bool:
    """Whether an artifact of a person who is not erased holds the same content (same key)."""
    other = db.scalar(
        select(func.count())
        .select_from(Artifact)
        .join(CheckSession, CheckSession.id == Artifact.session_id)
        .join(Person, Person.id == CheckSession.person_id)
        .where(Artifact.key == key, CheckSession.person_id != person_id, Person.erased_at.is_(None))
    )
    return bool(other)


def _erase_artifacts(
    db: Session, store: EvidenceStore, person_id: str, now: datetime
) -> tuple[list[str], list[Retained], dict[str, int]]:
    artifacts = db.scalars(
        select(Artifact)
        .join(CheckSession, CheckSession.id == Artifact.session_id)
        .where(CheckSession.person_id == person_id)
        .order_by(Artifact.id)
    ).all()
    deleted: list[str] = []
    retained: list[Retained] = []
    counts = {
        "artifacts_deleted": 0,
        "artifacts_already_gone": 0,
        "artifacts_shared": 0,
        "artifacts_retained": 0,
    }
    done_keys: dict[str, str] = {}  # key -> outcome, for several rows naming one object
    for art in artifacts:
        if ERASED_META in (art.meta or {}):
            continue
        outcome = done_keys.get(art.key)
        if outcome is None:
            outcome = _erase_object(db, store, art.key, person_id, now, retained)
            done_keys[art.key] = outcome
            if outcome == "deleted":
                deleted.append(art.key)
        if outcome == "retained":
            counts["artifacts_retained"] += 1
            continue
        counts[
            {"deleted": "artifacts_deleted", "gone": "artifacts_already_gone", "shared": "artifacts_shared"}[
                outcome
            ]
        ] += 1
        art.meta = {ERASED_META: now.isoformat(), "outcome": outcome}
    return deleted, retained, counts


def _erase_rejection_artifacts(
    db: Session, store: EvidenceStore, rows: Sequence[RejectionArtifact], owner: str, now: datetime
) -> tuple[list[str], list[Retained], dict[str, int]]:
    """The objects of rejected submissions (`owner` is the person id, or '' for nobody's)."""
    deleted: list[str] = []
    retained: list[Retained] = []
    counts = {
        "rejection_artifacts_deleted": 0,
        "rejection_artifacts_already_gone": 0,
        "rejection_artifacts_shared": 0,
        "rejection_artifacts_retained": 0,
    }
    done_keys: dict[str, str] = {}
    for art in rows:
        if ERASED_META in (art.meta or {}):
            continue
        outcome = done_keys.get(art.key)
        if outcome is None:
            outcome = _erase_object(db, store, art.key, owner, now, retained)
            done_keys[art.key] = outcome
            if outcome == "deleted":
                deleted.append(art.key)
        counts[f"rejection_artifacts_{'already_gone' if outcome == 'gone' else outcome}"] += 1
        if outcome != "retained":
            art.meta = {ERASED_META: now.isoformat(), "outcome": outcome}
    return deleted, retained, counts


def _person_rejection_artifacts(db: Session, person_id: str) -> Sequence[RejectionArtifact]:
    return db.scalars(
        select(RejectionArtifact)
        .join(Rejection, Rejection.id == RejectionArtifact.rejection_id)
        .where(Rejection.person_id == person_id)
        .order_by(RejectionArtifact.id)
    ).all()


def _erase_object(
    db: Session, store: EvidenceStore, key: str, person_id: str, now: datetime, retained: list[Retained]
) -> str:
    """Delete one object if it is free; 'deleted', 'gone', 'shared' or 'retained'."""
    if _shared_elsewhere(db, key, person_id):
        return "shared"
    try:
        info = store.stat(key)
    except NotFound:
        return "gone"
    if info.legal_hold:
        retained.append(Retained(key, "legal hold"))
        return "retained"
    if info.retain_until is not None and info.retain_until > now:
        retained.append(Retained(key, f"retained until {info.retain_until.isoformat()}", info.retain_until))
        return "retained"
    try:
        store.delete(key)
    except NotFound:
        return "gone"
    except ObjectLocked as exc:
        # The store's clock or lock state disagrees with what stat said: trust the store.
        until = None
        try:
            until = store.retention(key)
        except (NotFound, StoreUnavailable):
            pass
        retained.append(Retained(key, f"locked by the store: {exc}", until))
        return "retained"
    return "deleted"


def erase_person(
    db: Session,
    store: EvidenceStore,
    person_id: str,
    now: datetime,
    *,
    actor: str = RETENTION_ACTOR,
    reason: str | None = None,
    on_request: bool = False,
) -> ErasureProof:
    """Erase one person whose retention period has ended (ErasureRefused before then); commits.

    `on_request`: an admin's erasure on request (a `reason` is required): it does not wait for the
    retention period; evidence objects still under object lock or legal hold stay until they are free.
    Safe to repeat: a later pass deletes only objects that were retained before. A pass that removes
    nothing writes no erasures row (its proof has `erasure_id` None).
    """
    now = _require_aware(now)
    person = db.get(Person, person_id)
    if person is None:
        raise LookupError(f"no such person: {person_id}")
    if on_request and not (reason or "").strip():
        raise ValueError("an erasure on request needs a reason")
    if not on_request and (person.retention_until is None or person.retention_until > now):
        until = person.retention_until.isoformat() if person.retention_until else "no end set"
        raise ErasureRefused(f"person {person_id} is retained ({until}); erasure is not allowed yet")

    first_pass = person.erased_at is None
    counts: dict[str, int] = {}
    if first_pass:
        counts.update(revoke_person(db, person_id, reason="erased"))
    counts["templates"] = _run(db, delete(Enrolment).where(Enrolment.person_id == person_id))
    counts["photo_fingerprints"] = _run(
        db, delete(PhotoFingerprint).where(PhotoFingerprint.person_id == person_id)
    )
    # positions, signed batches, device events, alerts and zones (an exclusion zone is a third party's address)
    counts.update(erase_location(db, person_id))
    session_ids = select(CheckSession.id).where(CheckSession.person_id == person_id).scalar_subquery()
    if first_pass:
        counts["check_details"] = _run(
            db,
            update(CheckResultRecord)
            .where(CheckResultRecord.session_id.in_(session_ids))
            .values(details={"erased": True}),
        )
        counts["session_locations"] = _run(
            db,
            update(CheckSession)
            .where(CheckSession.person_id == person_id, CheckSession.location.is_not(None))
            .values(location=null()),
        )
    deleted_keys, retained, art_counts = _erase_artifacts(db, store, person_id, now)
    counts.update(art_counts)
    rej_keys, rej_retained, rej_counts = _erase_rejection_artifacts(
        db, store, _person_rejection_artifacts(db, person_id), person_id, now
    )
    deleted_keys += rej_keys
    retained += rej_retained
    counts.update(rej_counts)
    if first_pass:
        person.display_name = ERASED_NAME
        person.external_ref = f"erased:{person.id}"
        person.erased_at = now
        person.status = PersonStatus.ERASED

    removed = sum(v for k, v in counts.items() if not k.endswith("_retained"))
    erasure_id: str | None = None
    proof = proof_hash(person_id, now, counts, deleted_keys)
    if first_pass or removed:
        row = Erasure(person_id=person_id, erased_at=now, counts=counts, proof_sha256=proof)
        db.add(row)
        db.flush()
        erasure_id = row.id
        details: dict[str, Any] = {
            "erasure_id": row.id,
            "counts": counts,
            "proof_sha256": proof,
            "retained": len(retained),
            "pass": "first" if first_pass else "retry",
            "on_request": on_request,
        }
        if reason:
            details["reason"] = reason
        audit.append(db, actor, "person.erased", "person", person_id, details)
    db.commit()
    return ErasureProof(
        person_id=person_id,
        erasure_id=erasure_id,
        erased_at=now,
        counts=counts,
        deleted_keys=sorted(deleted_keys),
        retained=retained,
        proof_sha256=proof,
    )


def _pending_retained(db: Session) -> list[str]:
    """Erased persons with artifacts not yet marked erased (held back by retention before)."""
    rows = db.execute(
        select(CheckSession.person_id, Artifact.meta)
        .join(Artifact, Artifact.session_id == CheckSession.id)
        .join(Person, Person.id == CheckSession.person_id)
        .where(Person.erased_at.is_not(None))
    ).all()
    rejected = db.execute(
        select(Rejection.person_id, RejectionArtifact.meta)
        .join(RejectionArtifact, RejectionArtifact.rejection_id == Rejection.id)
        .join(Person, Person.id == Rejection.person_id)
        .where(Person.erased_at.is_not(None))
    ).all()
    return sorted({pid for pid, meta in [*rows, *rejected] if pid and ERASED_META not in (meta or {})})


UNATTRIBUTED = "unattributed"


def erase_unattributed(
    db: Session, store: EvidenceStore, now: datetime, *, older_than: timedelta
) -> ErasureProof | None:
    """Erase the bytes of rejected submissions that belong to nobody once `older_than` has passed.

    Recorded like a person's erasure, under the pseudo-subject 'unattributed'; None when nothing was due.
    """
    now = _require_aware(now)
    rows = db.scalars(
        select(RejectionArtifact)
        .join(Rejection, Rejection.id == RejectionArtifact.rejection_id)
        .where(Rejection.person_id.is_(None), Rejection.created_at <= now - older_than)
        .order_by(RejectionArtifact.id)
    ).all()
    rows = [r for r in rows if ERASED_META not in (r.meta or {})]
    if not rows:
        return None
    deleted, retained, counts = _erase_rejection_artifacts(db, store, rows, "", now)
    proof = proof_hash(UNATTRIBUTED, now, counts, deleted)
    row = Erasure(person_id=UNATTRIBUTED, erased_at=now, counts=counts, proof_sha256=proof)
    db.add(row)
    db.flush()
    audit.append(
        db,
        RETENTION_ACTOR,
        "rejections.erased",
        "erasure",
        row.id,
        {"counts": counts, "proof_sha256": proof, "retained": len(retained)},
    )
    db.commit()
    return ErasureProof(UNATTRIBUTED, row.id, now, counts, sorted(deleted), retained, proof)


def erase_due(
    db: Session, store: EvidenceStore, now: datetime, *, unattributed_after: timedelta | None = None
) -> list[ErasureProof]:
    """Erase every person whose retention has ended, and retry objects held back on earlier passes;
    with `unattributed_after`, also the bytes of rejected submissions nobody owns that are that old.

    Returns a proof per person processed; call it from a periodic job (e.g. daily) or
    `kuzet retention erase-due`.
    """
    now = _require_aware(now)
    due = db.scalars(
        select(Person.id)
        .where(Person.erased_at.is_(None), Person.retention_until.is_not(None), Person.retention_until <= now)
        .order_by(Person.id)
    ).all()
    proofs = [erase_person(db, store, pid, now) for pid in due]
    proofs += [erase_person(db, store, pid, now) for pid in _pending_retained(db) if pid not in due]
    if unattributed_after is not None:
        loose = erase_unattributed(db, store, now, older_than=unattributed_after)
        if loose is not None:
            proofs.append(loose)
    return proofs


@dataclass(frozen=True)
class ErasureCheck:
    """The outcome of re-checking one erasure record."""

    erasure_id: str
    person_id: str
    ok: bool
    proof_sha256: str
    recomputed_sha256: str
    problems: list[str]
    deleted_keys: int


def verify_erasure(db: Session, store: EvidenceStore, erasure_id: str) -> ErasureCheck:
    """Recompute an erasure's proof from the rows it marked, and check what it claims still holds.

    Checks: the SHA-256 over (person, time, counts, keys deleted in that pass) equals the stored proof and
    the audit entry's; each deleted key is absent from the store; the person (unless 'unattributed') is
    erased, has no templates, no fingerprints and no active login. LookupError for an unknown id.
    """
    row = db.get(Erasure, erasure_id)
    if row is None:
        raise LookupError(f"no such erasure: {erasure_id}")
    stamp = row.erased_at.astimezone(UTC).isoformat()
    owner = None if row.person_id == UNATTRIBUTED else row.person_id
    rejected = (
        select(RejectionArtifact.key, RejectionArtifact.meta)
        .join(Rejection, Rejection.id == RejectionArtifact.rejection_id)
        .where(Rejection.person_id.is_(None) if owner is None else Rejection.person_id == owner)
    )
    candidates = list(db.execute(rejected).all())
    if owner is not None:
        candidates += db.execute(
            select(Artifact.key, Artifact.meta)
            .join(CheckSession, CheckSession.id == Artifact.session_id)
            .where(CheckSession.person_id == owner)
        ).all()
    keys: set[str] = set()
    for key, meta in candidates:
        meta = meta or {}
        if meta.get(ERASED_META) == stamp and meta.get("outcome") == "deleted":
            keys.add(key)
    problems: list[str] = []
    recomputed = proof_hash(row.person_id, row.erased_at, dict(row.counts), sorted(keys))
    if recomputed != row.proof_sha256:
        problems.append("the proof does not match the rows marked erased in this pass")
    entry = db.scalars(
        select(AuditEntry).where(AuditEntry.action.in_(["person.erased", "rejections.erased"]))
    ).all()
    if not any((e.details or {}).get("proof_sha256") == row.proof_sha256 for e in entry):
        problems.append("no audit entry records this proof")
    for key in sorted(keys):
        try:
            store.stat(key)
            problems.append(f"object {key} is still in the store")
        except NotFound:
            pass
    if row.person_id != UNATTRIBUTED:
        person = db.get(Person, row.person_id)
        if person is None or person.erased_at is None:
            problems.append("the person is not marked erased")
        leftovers = {
            "templates": select(func.count())
            .select_from(Enrolment)
            .where(Enrolment.person_id == row.person_id),
            "photo_fingerprints": select(func.count())
            .select_from(PhotoFingerprint)
            .where(PhotoFingerprint.person_id == row.person_id),
            "active_logins": select(func.count())
            .select_from(User)
            .where(User.person_id == row.person_id, User.active.is_(True)),
        }
        for name, query in leftovers.items():
            n = int(db.scalar(query) or 0)
            if n:
                problems.append(f"{n} {name} remain")
    return ErasureCheck(
        erasure_id=row.id,
        person_id=row.person_id,
        ok=not problems,
        proof_sha256=row.proof_sha256,
        recomputed_sha256=recomputed,
        problems=problems,
        deleted_keys=len(keys),
    )
