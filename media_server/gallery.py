"""Biometric templates at rest: AES-GCM encrypted per person; one active template per modality.

Housekeeping: a saved template supersedes the active one, and superseded templates beyond
`gallery.superseded_templates_kept` (default 0) are deleted in the same transaction, so a person holds
at most 1 + that many template rows per modality however often the adaptive gallery refreshes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from identity.checks import ModelStamp
from media_server.db import audit
from media_server.db.enums import Modality, TemplateSource
from media_server.db.models import Enrolment
from media_server.keys import decrypt_template, encrypt_template
from media_server.services import Services


def active_template(services: Services, person_id: str, modality: Modality) -> bytes | None:
    """The decrypted latest active template of a person, or None when not enrolled."""
    with services.sessions() as db:
        row = db.scalars(
            select(Enrolment)
            .where(
                Enrolment.person_id == person_id, Enrolment.modality == modality, Enrolment.active.is_(True)
            )
            .order_by(Enrolment.created_at.desc())
        ).first()
        if row is None:
            return None
        return decrypt_template(
            services.keys.template_key, row.template_nonce, row.template_ciphertext, person_id
        )


def save_template(
    services: Services,
    person_id: str,
    modality: Modality,
    template: bytes,
    n_samples: int,
    model: ModelStamp,
    *,
    actor: str,
    source: TemplateSource,
    details: dict[str, Any],
) -> str:
    """Encrypt and store a template as the person's active one; superseded ones beyond the kept number
    are deleted; audited (with how many were deleted)."""
    nonce, ciphertext = encrypt_template(services.keys.template_key, template, person_id)
    with services.sessions.begin() as db:
        db.execute(
            update(Enrolment)
            .where(
                Enrolment.person_id == person_id, Enrolment.modality == modality, Enrolment.active.is_(True)
            )
            .values(active=False)
        )
        row = Enrolment(
            person_id=person_id,
            modality=modality,
            template_ciphertext=ciphertext,
            template_nonce=nonce,
            n_samples=n_samples,
            model_name=model.name,
            model_version=model.version,
            weights_sha256=model.weights_sha256,
            source=source,
        )
        db.add(row)
        db.flush()
        kept = services.settings.gallery.superseded_templates_kept
        superseded = db.scalars(
            select(Enrolment.id)
            .where(
                Enrolment.person_id == person_id,
                Enrolment.modality == modality,
                Enrolment.active.is_(False),
            )
            .order_by(Enrolment.created_at.desc(), Enrolment.id.desc())
        ).all()
        doomed = list(superseded[kept:])
        if doomed:
            db.execute(delete(Enrolment).where(Enrolment.id.in_(doomed)))
        audit.append(
            db,
            actor=actor,
            action="enrolled" if source is TemplateSource.ENROLMENT else "template_adapted",
            subject_type="person",
            subject_id=person_id,
            details={
                "modality": modality.value,
                "enrolment_id": row.id,
                "n_samples": n_samples,
                "model": model.name,
                "superseded_deleted": len(doomed),
                **details,
            },
        )
        return row.id
