"""Biometric enrolment: face images and voice utterances become encrypted templates.

Uploads are decoded here (light, bounded); embeddings are computed in the worker pool. The raw
enrolment images and recordings are not kept: only the encrypted template (data minimisation).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, UploadFile

from identity.checks import CheckResult
from identity.face import worker as face_worker
from identity.face.decode import decode_image
from identity.face.results import template_to_bytes
from identity.voice import worker as voice_worker
from identity.voice.audio import decode_bytes
from media_server.api.deps import OfficerDep, ServicesDep
from media_server.db import audit
from media_server.db.enums import Modality, TemplateSource
from media_server.db.models import Enrolment, Person
from media_server.errors import BadInput, NotFoundError
from media_server.gallery import save_template
from media_server.services import Services

router = APIRouter(prefix="/api/v1/persons/{person_id}/enrolments", tags=["enrolment"])

MAX_ENROL_FILES = 20


async def _read_all(files: list[UploadFile], limit_bytes: int) -> list[bytes]:
    if not files:
        raise BadInput("send at least one file")
    if len(files) > MAX_ENROL_FILES:
        raise BadInput(f"at most {MAX_ENROL_FILES} files per enrolment")
    out = []
    for f in files:
        data = await f.read(limit_bytes + 1)
        if len(data) > limit_bytes:
            raise BadInput(f"{f.filename or 'file'} is larger than {limit_bytes} bytes")
        out.append(data)
    return out


def _person_exists(services: Services, person_id: str) -> None:
    with services.sessions() as db:
        person = db.get(Person, person_id)
        if person is None or person.erased_at is not None:
            raise NotFoundError("no such person")


def _response(enrolment_id: str | None, results: list[CheckResult]) -> dict[str, Any]:
    return {
        "enrolled": enrolment_id is not None,
        "enrolment_id": enrolment_id,
        "results": [r.to_dict() for r in results],
    }


@router.post("/face", status_code=201)
async def enrol_face(
    person_id: str, images: list[UploadFile], services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """Enrol (or re-enrol) a face from several photos; per-image quality outcomes say what to retake."""
    await asyncio.to_thread(_person_exists, services, person_id)
    settings = services.settings.face
    blobs = await _read_all(images, settings.max_image_bytes)
    decoded = [await asyncio.to_thread(decode_image, b, settings) for b in blobs]
    bad = [d for d in decoded if isinstance(d, CheckResult)]
    if bad:
        raise BadInput(
            "; ".join(
                f"image {i + 1}: {d.message}" for i, d in enumerate(decoded) if isinstance(d, CheckResult)
            )
        )
    rgbs = [d.rgb for d in decoded if not isinstance(d, CheckResult)]
    template, results = await services.workers.run(face_worker.enrol, rgbs)
    enrolment_id = None
    if template is not None:
        enrolment_id = await asyncio.to_thread(
            lambda: save_template(
                services,
                person_id,
                Modality.FACE,
                template_to_bytes(template),
                int(template.embeddings.shape[0]),
                template.model,
                actor=who.actor,
                source=TemplateSource.ENROLMENT,
                details={},
            )
        )
    return _response(enrolment_id, results)


@router.post("/voice", status_code=201)
async def enrol_voice(
    person_id: str, utterances: list[UploadFile], services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """Enrol (or re-enrol) a voice from several utterances (wav/flac/ogg, any rate; converted to 16 kHz)."""
    await asyncio.to_thread(_person_exists, services, person_id)
    blobs = await _read_all(utterances, services.settings.evidence.max_upload_bytes)
    decoded = [await asyncio.to_thread(decode_bytes, b, services.settings.voice) for b in blobs]
    bad = [d for d in decoded if isinstance(d, CheckResult)]
    if bad:
        raise BadInput(
            "; ".join(
                f"file {i + 1}: {d.message}" for i, d in enumerate(decoded) if isinstance(d, CheckResult)
            )
        )
    pcm = [d.pcm16k for d in decoded if not isinstance(d, CheckResult)]
    template, result_dicts = await services.workers.run(voice_worker.enrol_job, pcm)
    results = [CheckResult.from_dict(d) for d in result_dicts]
    enrolment_id = None
    if template is not None:
        model = next((r.model for r in results if r.model is not None), None)
        if model is None:
            raise BadInput("the voice engine returned no model stamp")
        enrolment_id = await asyncio.to_thread(
            lambda: save_template(
                services,
                person_id,
                Modality.VOICE,
                template,
                len(pcm),
                model,
                actor=who.actor,
                source=TemplateSource.ENROLMENT,
                details={},
            )
        )
    return _response(enrolment_id, results)


@router.delete("/{modality}")
def delete_enrolment(
    person_id: str, modality: Modality, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """Delete every template of one modality for a person (audited)."""
    with services.sessions.begin() as db:
        rows = (
            db.query(Enrolment).filter(Enrolment.person_id == person_id, Enrolment.modality == modality).all()
        )
        for row in rows:
            db.delete(row)
        audit.append(
            db,
            actor=who.actor,
            action="enrolment_deleted",
            subject_type="person",
            subject_id=person_id,
            details={"modality": modality.value, "count": len(rows)},
        )
    return {"deleted": len(rows)}
