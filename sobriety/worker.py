"""Worker-process entry point for breath photos (run it in the service's spawn pool).

    result = await pool.run(sobriety.worker.analyse_photos_job, photos, gallery, template_model, settings)

The pool initializer has already built this process's face engine (`identity.face.worker.init_worker`)
and PAD engine (`identity.pad.worker.init_worker`); this job reuses both through
`sobriety.face_port.EngineFacePort`. Arguments and results are plain picklable values: encoded photo
bytes in, `PhotoAnalysis` values and per-photo decode failures out. Importing this module is light.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face.config import FaceSettings
from identity.face.decode import decode_image
from sobriety.config import SobrietySettings
from sobriety.photos import BreathPhoto, PhotoAnalysis, analyse_breath_photos


@dataclass(frozen=True, slots=True)
class PhotoJobResult:
    """What one breath test's photo job produced.

    `analyses` holds one `PhotoAnalysis` per decodable photo, in upload order; `unreadable` one TECHNICAL
    BREATH_PHOTO result per photo that could not be decoded (its `details["photo_id"]` names it);
    `problem` is set instead when the photos could not be judged at all (e.g. the enrolled template was
    made by another face model).
    """

    analyses: list[PhotoAnalysis] = field(default_factory=list)
    unreadable: list[CheckResult] = field(default_factory=list)
    problem: CheckResult | None = None


def decode_photo(photo_id: str, data: bytes, face_settings: FaceSettings) -> BreathPhoto | CheckResult:
    """Decode one uploaded photo (bounded by the face settings' byte and pixel limits) to RGB uint8.

    Returns a `BreathPhoto` (sha256 of the uploaded bytes) or a TECHNICAL BREATH_PHOTO result.
    """
    decoded = decode_image(data, face_settings)
    if isinstance(decoded, CheckResult):
        return CheckResult(
            CheckKind.BREATH_PHOTO,
            Outcome.TECHNICAL,
            decoded.code,
            decoded.message,
            details={**decoded.details, "photo_id": photo_id},
        )
    return BreathPhoto(photo_id, decoded.rgb, hashlib.sha256(data).hexdigest())


def analyse_photos_job(
    photos: list[tuple[str, bytes]],
    gallery: npt.NDArray[np.float32],
    template_model: ModelStamp | None,
    settings: dict[str, Any],
) -> PhotoJobResult:
    """Decode and analyse one test's photos in this worker: faces, quality, mouthpiece, identity, PAD, pHash.

    `photos` are (photo id, encoded bytes) in upload order; `gallery` is the enrolled template's (n, 128)
    L2-normalised embeddings (n = 0 when the person is not enrolled: identity is then not judged);
    `template_model` is the stamp the template was made with; `settings` is `SobrietySettings` as a dict.
    """
    from identity.face import worker as face_worker
    from identity.pad import worker as pad_worker
    from sobriety.face_port import EngineFacePort

    sobriety_settings = SobrietySettings.model_validate(settings)
    engine = face_worker.current_engine()
    if template_model is not None and template_model != engine.stamp:
        return PhotoJobResult(
            problem=CheckResult(
                CheckKind.FACE,
                Outcome.TECHNICAL,
                "template_model_mismatch",
                "The enrolment was made with another face model; the person must be re-enrolled.",
                model=engine.stamp,
                details={"template_model": template_model.to_dict()},
            )
        )
    decoded = [decode_photo(pid, data, engine.settings) for pid, data in photos]
    good = [d for d in decoded if isinstance(d, BreathPhoto)]
    bad = [d for d in decoded if isinstance(d, CheckResult)]
    band = (sobriety_settings.occluded_accept_distance, sobriety_settings.occluded_reject_distance)
    port = EngineFacePort(engine, pad=pad_worker.pad_score_rgb, band=band)
    rows = [np.asarray(g, dtype=np.float64) for g in np.atleast_2d(gallery)] if len(gallery) else []
    return PhotoJobResult(analyse_breath_photos(good, rows, port, sobriety_settings), bad)
