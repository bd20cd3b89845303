"""Biometric enrolment: face images and voice utterances become encrypted templates.

Uploads are decoded here (light, bounded); embeddings are computed in the worker pool. The raw
enrolment images and recordings are not kept: only the encrypted template (data minimisation).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from starlette.datastructures import UploadFile as FormFile

from identity.checks import CheckResult
from identity.face import worker as face_worker
from identity.face.decode import decode_image
from identity.face.results import template_to_bytes
from identity.voice import worker as voice_worker
from identity.voice.audio import Pcm16k, decode_bytes
from identity.voice.config import VoiceSettings
from identity.voice.digits import DIGITS, enrol_digits, split_by_pauses, templates_to_bytes
from media_server.api.deps import OfficerDep, ServicesDep
from media_server.db import audit
from media_server.db.enums import Modality, TemplateSource
from media_server.db.models import Enrolment
from media_server.errors import BadInput
from media_server.gallery import save_template
from media_server.lifecycle import require_active
from media_server.services import Services

router = APIRouter(prefix="/api/v1/persons/{person_id}/enrolments", tags=["enrolment"])

MAX_ENROL_FILES = 20
MAX_DIGIT_FILES = 60  # ten digits x up to six takes
DIGIT_FIELDS = frozenset({f"digit_{d}" for d in DIGITS} | {"utterances", "digits"})


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
    """404 for an unknown person; 410 `person_not_active` once supervision ended or the person was
    erased: a template is new personal data, and no check will ever use it."""
    with services.sessions() as db:
        require_active(db, person_id)


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


async def _digit_audio(item: Any, label: str, limit_bytes: int, intake: VoiceSettings) -> Pcm16k:
    if not isinstance(item, FormFile):  # request.form() yields Starlette's class, FastAPI's subclasses it
        raise BadInput(f"{label} must be an audio file")
    data = await item.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise BadInput(f"{label} is larger than {limit_bytes} bytes")
    decoded = await asyncio.to_thread(decode_bytes, data, intake)
    if isinstance(decoded, CheckResult):
        raise BadInput(f"{label}: {decoded.message}")
    return decoded.pcm16k


@router.post("/digits", status_code=201)
async def enrol_spoken_digits(
    person_id: str, request: Request, services: ServicesDep, who: OfficerDep
) -> dict[str, Any]:
    """Enrol (or re-enrol) the person's spoken digits 0-9 for the check-in's read-the-digits step.

    Multipart form, either or both of: files `digit_0` .. `digit_9` (one or more takes of that digit
    each), or files `utterances` with a field `digits` naming what each says, comma-separated in file
    order (e.g. "0123456789,0123456789": each said with a short pause between digits). Any language.
    """
    await asyncio.to_thread(_person_exists, services, person_id)
    voice = services.settings.voice
    # A single digit may be shorter than the voice check's minimum clip length.
    intake = voice.model_copy(update={"min_input_s": max(0.1, voice.digits.min_template_speech_s)})
    limit = services.settings.evidence.max_upload_bytes
    form = await request.form(max_files=MAX_DIGIT_FILES + 1, max_fields=len(DIGIT_FIELDS) + MAX_DIGIT_FILES)
    try:
        unknown = sorted(set(form.keys()) - DIGIT_FIELDS)
        if unknown:
            raise BadInput(f"unknown form fields {unknown}: send digit_0..digit_9, or utterances with digits")
        n_files = sum(len(form.getlist(k)) for k in DIGIT_FIELDS - {"digits"})
        if n_files == 0:
            raise BadInput("send files digit_0..digit_9 (one or more takes each), or utterances with digits")
        if n_files > MAX_DIGIT_FILES:
            raise BadInput(f"at most {MAX_DIGIT_FILES} files per digit enrolment")
        takes: dict[str, list[Pcm16k]] = {d: [] for d in DIGITS}
        for d in DIGITS:
            for i, item in enumerate(form.getlist(f"digit_{d}")):
                takes[d].append(await _digit_audio(item, f"digit_{d} file {i + 1}", limit, intake))
        utterances = form.getlist("utterances")
        labels_field = form.get("digits")
        if utterances or labels_field is not None:
            if not isinstance(labels_field, str):
                raise BadInput("utterances need a 'digits' field naming what each says, comma-separated")
            labels = [part.strip() for part in labels_field.split(",")]
            if len(labels) != len(utterances):
                raise BadInput(f"'digits' names {len(labels)} utterance(s) but {len(utterances)} were sent")
            for i, (item, said) in enumerate(zip(utterances, labels, strict=True)):
                if not said or any(c not in DIGITS for c in said):
                    raise BadInput(f"utterance {i + 1}: '{said}' is not a string of digits")
                pcm = await _digit_audio(item, f"utterance {i + 1}", limit, intake)
                pieces = await asyncio.to_thread(split_by_pauses, pcm, len(said), voice.digits)
                if pieces is None:
                    raise BadInput(
                        f"utterance {i + 1}: fewer than {len(said)} separate words were heard; "
                        "say the digits with a short pause between them"
                    )
                for digit, piece in zip(said, pieces, strict=True):
                    takes[digit].append(piece)
    finally:
        await form.close()
    # MFCC frames of a few dozen short takes: tens of milliseconds of numpy, off the event loop.
    template, results = await asyncio.to_thread(enrol_digits, takes, voice.digits)
    enrolment_id = None
    if template is not None:
        enrolment_id = await asyncio.to_thread(
            lambda: save_template(
                services,
                person_id,
                Modality.DIGITS,
                templates_to_bytes(template),
                len(template.takes),
                template.stamp,
                actor=who.actor,
                source=TemplateSource.ENROLMENT,
                details={"takes_per_digit": template.counts()},
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
