"""Evidence first: route a submission to its station and person, store every byte before judging."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from identity.checks import CheckResult, Outcome
from media_server.artifacts import NewArtifact, StoredRef, store_artifacts
from media_server.breath.episodes import context_of
from media_server.breath.values import PHOTO_CONTENT_TYPES, SYSTEM_ACTOR, Upload, _Route, _sig
from media_server.db import audit
from media_server.db.enums import (
    ArtifactKind,
    DeviceKind,
    PersonStatus,
    RejectionSource,
    SessionKind,
    SessionStatus,
)
from media_server.db.models import (
    Artifact,
    BreathNonce,
    CheckSession,
    Device,
    Person,
    Rejection,
    RejectionArtifact,
)
from media_server.lifecycle import status_of
from media_server.services import Services
from sobriety.reading import (
    RegisteredDevice,
    verify_signature,
)

log = logging.getLogger("kuzet.breath")


def _lenient_fields(reading: bytes) -> dict[str, Any]:
    """The reading's JSON object even when not canonical ({} when not JSON): only to route evidence."""
    try:
        obj = json.loads(reading.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _route(services: Services, upload: Upload, now: datetime) -> _Route:
    """Find device and person, then claim an open scheduled breath session or open an unscheduled one."""
    fields = _lenient_fields(upload.reading)
    serial = fields.get("device_serial")
    if not isinstance(serial, str) or not 0 < len(serial) <= 64:
        return _Route(None, None, None, None)
    with services.sessions.begin() as db:
        device = db.scalars(select(Device).where(Device.serial == serial)).one_or_none()
        if device is None or device.kind is not DeviceKind.BREATHALYZER:
            return _Route(serial, None, None, None)
        if device.person_id is None:
            problem = _sig(
                Outcome.INCONCLUSIVE,
                "device_unassigned",
                f"Device {serial!r} is registered but not assigned to a person.",
                serial=serial,
            )
            return _Route(serial, device.id, None, None, problem=problem)
        person = db.get(Person, device.person_id)
        if person is None:
            problem = _sig(
                Outcome.INCONCLUSIVE,
                "device_unassigned",
                f"Device {serial!r} is assigned to no active person.",
                serial=serial,
            )
            return _Route(serial, device.id, None, None, problem=problem)
        state = status_of(person)
        if state is not PersonStatus.ACTIVE:
            problem = _sig(
                Outcome.INCONCLUSIVE,
                "person_not_active",
                "This station's person is no longer under supervision; nothing was stored.",
                serial=serial,
                status=state.value,
            )
            return _Route(serial, device.id, None, None, problem=problem, inactive_person=person.id)
        nonce = fields.get("nonce")
        signed = (
            device.active
            and device.public_key_b64 is not None
            and isinstance(nonce, str)
            and verify_signature(upload.reading, upload.signature, device.public_key_b64)
        )
        spent = isinstance(nonce, str) and db.get(BreathNonce, (device.id, nonce[:128])) is not None
        if signed and spent:
            original = _original_submission(db, person.id, upload)
            if original is not None:
                return _Route(serial, device.id, person.id, original, resend=True)
        may_claim = signed and not spent
        # The station and the person as read here are all the rest of the flow needs of them.
        station = RegisteredDevice(
            serial=device.serial,
            public_key_b64=device.public_key_b64 or "",
            active=device.active,
            calibrated_on=device.calibrated_on,
            device_id=device.id,
        )
        context = context_of(person, device, services.settings.sobriety)
        if may_claim:
            open_rows = db.scalars(
                select(CheckSession)
                .where(
                    CheckSession.person_id == person.id,
                    CheckSession.kind == SessionKind.BREATH,
                    CheckSession.status == SessionStatus.SCHEDULED,
                    CheckSession.window_start <= now,
                    CheckSession.window_end >= now,
                )
                .order_by(CheckSession.window_start)
            ).all()
            for row in open_rows:
                # Claim atomically: of two racing submissions exactly one moves the row.
                claimed = db.execute(
                    update(CheckSession)
                    .where(CheckSession.id == row.id, CheckSession.status == SessionStatus.SCHEDULED)
                    .values(status=SessionStatus.ACTIVE, started_at=now, device_id=device.id)
                )
                if getattr(claimed, "rowcount", 0) == 1:
                    audit.append(
                        db,
                        SYSTEM_ACTOR,
                        "breath_session_claimed",
                        "session",
                        row.id,
                        {"device_id": device.id, "serial": serial},
                    )
                    return _Route(
                        serial,
                        device.id,
                        person.id,
                        row.id,
                        scheduled=True,
                        device=station if device.public_key_b64 else None,
                        context=context,
                    )
        session = CheckSession(
            person_id=person.id,
            kind=SessionKind.BREATH,
            status=SessionStatus.ACTIVE,
            window_start=now,
            window_end=now,
            started_at=now,
            device_id=device.id,
            meta={"unscheduled": True, "source": "breath_station"},
        )
        db.add(session)
        db.flush()
        audit.append(
            db,
            SYSTEM_ACTOR,
            "breath_session_opened",
            "session",
            session.id,
            {"device_id": device.id, "serial": serial, "unscheduled": True},
        )
        return _Route(
            serial,
            device.id,
            person.id,
            session.id,
            device=station if device.public_key_b64 else None,
            context=context,
        )


def _original_submission(db: Session, person_id: str, upload: Upload) -> str | None:
    """The breath session that already stored this exact reading and signature, if any.

    Same nonce + same signature is the same request (a station resending after a lost answer or a
    server crash): it is answered from that session, never booked as a replay.
    """
    reading_sha = hashlib.sha256(upload.reading).hexdigest()
    signature_sha = hashlib.sha256(upload.signature.encode("utf-8")).hexdigest()
    candidates = db.scalars(
        select(Artifact.session_id)
        .join(CheckSession, CheckSession.id == Artifact.session_id)
        .where(
            Artifact.kind == ArtifactKind.READING,
            Artifact.sha256 == reading_sha,
            CheckSession.person_id == person_id,
            CheckSession.kind == SessionKind.BREATH,
        )
        .order_by(Artifact.created_at)
    ).all()
    for session_id in candidates:
        signatures = db.scalars(
            select(Artifact.sha256).where(
                Artifact.session_id == session_id,
                Artifact.kind == ArtifactKind.OTHER,
                Artifact.sha256 == signature_sha,
            )
        ).all()
        if signatures:
            return session_id
    return None


@dataclass(frozen=True)
class StoredSubmission:
    """Where a breath session's submission lies in the evidence store (no bytes read yet)."""

    refs: list[StoredRef]  # reading, signature, photos in upload order
    reading: StoredRef
    signature: StoredRef
    photos: list[tuple[str, StoredRef, str]]  # (form field, artifact, content type) in upload order


def stored_submission(services: Services, session_id: str) -> StoredSubmission | None:
    """The artifact rows of what a breath session stored, or None when its reading or signature is missing."""
    with services.sessions() as db:
        rows = db.scalars(
            select(Artifact).where(Artifact.session_id == session_id).order_by(Artifact.created_at)
        ).all()
        reading = next((a for a in rows if a.kind is ArtifactKind.READING), None)
        signature = next(
            (a for a in rows if a.kind is ArtifactKind.OTHER and a.meta.get("what") == "reading_signature"),
            None,
        )
        photos = sorted(
            (a for a in rows if a.kind is ArtifactKind.PHOTO), key=lambda a: int(a.meta.get("index", 0))
        )
        if reading is None or signature is None:
            return None
        return StoredSubmission(
            refs=[StoredRef.of(a) for a in [reading, signature, *photos]],
            reading=StoredRef.of(reading),
            signature=StoredRef.of(signature),
            photos=[
                (str(a.meta.get("field", f"photo_{i}")), StoredRef.of(a), a.content_type)
                for i, a in enumerate(photos)
            ],
        )


def load_upload(services: Services, stored: StoredSubmission) -> Upload:
    """The stored submission's bytes, each the version its row names and verified against its sha256
    by the store (blocking)."""

    def read(ref: StoredRef) -> bytes:
        return services.store.get_bytes(ref.key, version_id=ref.version_id)

    return Upload(
        reading=read(stored.reading),
        signature=read(stored.signature).decode("utf-8"),
        photos=[(name, read(ref), ctype) for name, ref, ctype in stored.photos],
    )


def _photo_content_type(declared: str) -> str:
    base = (declared or "").split(";")[0].strip().lower()
    return base if base in PHOTO_CONTENT_TYPES else "application/octet-stream"


def _store_session_evidence(services: Services, session_id: str, upload: Upload) -> list[StoredRef]:
    """Reading, signature and photos as artifacts of the session (each hashed and stored, then all rows
    committed in one transaction)."""
    items = [
        NewArtifact(ArtifactKind.READING, "application/json", {"what": "breath_reading"}, upload.reading),
        NewArtifact(
            ArtifactKind.OTHER, "text/plain", {"what": "reading_signature"}, upload.signature.encode("utf-8")
        ),
    ]
    for index, (name, data, content_type) in enumerate(upload.photos):
        items.append(
            NewArtifact(
                ArtifactKind.PHOTO,
                _photo_content_type(content_type),
                {"what": "breath_photo", "field": name, "index": index},
                data,
            )
        )
    return store_artifacts(services, session_id, items)


def _store_loose_evidence(services: Services, upload: Upload) -> list[dict[str, Any]]:
    """Store the bytes of a submission that names no known device/person; returns key, sha256, what.

    They become `rejection_artifacts` of the rejection record (`_record_rejection`), so retention and
    erasure find them.
    """
    items: list[tuple[str, bytes, str]] = [
        ("breath_reading", upload.reading, "application/json"),
        ("reading_signature", upload.signature.encode("utf-8"), "text/plain"),
    ]
    items += [(name, data, _photo_content_type(ct)) for name, data, ct in upload.photos]
    out = []
    for what, data, content_type in items:
        stored = services.store.put_bytes(
            data, content_type=content_type, metadata={"kind": "breath-unattributed"}
        )
        if stored.spooled:
            services.metrics.spooled.inc()
        out.append(
            {
                "what": what,
                "key": stored.key,
                "sha256": stored.sha256,
                "size": stored.size,
                "content_type": content_type,
                "spooled": stored.spooled,
            }
        )
    return out


def _refs_view(refs: Sequence[StoredRef]) -> list[dict[str, Any]]:
    return [
        {"artifact_id": r.artifact_id, "kind": r.kind.value, "key": r.key, "sha256": r.sha256, "size": r.size}
        for r in refs
    ]


def _audit_loose_rejection(
    services: Services, route: _Route, rejection: CheckResult, evidence: list[dict[str, Any]]
) -> None:
    """The rejection record, its artifacts (the stored objects) and the audit line, in one transaction."""
    with services.sessions.begin() as db:
        record = Rejection(
            source=RejectionSource.BREATH,
            code=rejection.code,
            message=rejection.message,
            device_id=route.device_id,
            person_id=route.person_id,
            serial=route.serial,
        )
        db.add(record)
        db.flush()
        for item in evidence:
            row = RejectionArtifact(
                rejection_id=record.id,
                key=item["key"],
                sha256=item["sha256"],
                size=item["size"],
                content_type=item["content_type"],
                what=item["what"],
                spooled=item["spooled"],
                meta={},
            )
            db.add(row)
            db.flush()
            item["rejection_artifact_id"] = row.id
        audit.append(
            db,
            SYSTEM_ACTOR,
            "breath_rejected",
            "device" if route.device_id else "breath_submission",
            route.device_id,
            {
                "code": rejection.code,
                "outcome": rejection.outcome.value,
                "serial": route.serial,
                "rejection_id": record.id,
                "artifacts": [
                    {k: item[k] for k in ("what", "key", "sha256", "size", "rejection_artifact_id")}
                    for item in evidence
                ],
            },
        )
