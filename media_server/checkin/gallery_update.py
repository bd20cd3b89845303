"""The adaptive face gallery: a confidently passed check-in refreshes the template (bounded, audited).

Only check-ins feed it, never breath-test photos: the mouthpiece occludes the lower face, and learning
occluded embeddings would drift the template away from the person's ordinary face.
"""

from __future__ import annotations

import asyncio

import numpy as np

from identity.checks import CheckKind, CheckResult
from identity.face import worker as face_worker
from identity.face.results import Template, template_from_bytes, template_to_bytes
from media_server.db.enums import Decision, Modality, TemplateSource
from media_server.gallery import active_template, save_template
from media_server.jobs import run_engine
from media_server.services import Services
from media_server.verdict import VerdictOutcome
from media_server.webrtc.capture import SessionCapture


async def adapt_gallery(
    services: Services, capture: SessionCapture, results: list[CheckResult], outcome: VerdictOutcome
) -> str | None:
    """Refresh the face template from a confidently passed session (bounded, audited); the new enrolment id.

    Only a PASS verdict whose fused face distance is well inside the threshold may add frames, and the
    embeddings enrolled by an officer are always kept: adaptive ones are capped and replaced oldest first.
    """
    cfg = services.settings.gallery
    face = next((r for r in results if r.kind is CheckKind.FACE), None)
    if not cfg.adaptive or outcome.decision is not Decision.PASS or face is None or not face.passed:
        return None
    if face.score is None or face.threshold is None or face.score > cfg.confidence_ratio * face.threshold:
        return None
    stored = await asyncio.to_thread(active_template, services, capture.person_id, Modality.FACE)
    if stored is None:
        return None
    old = template_from_bytes(stored)
    ranked = sorted(
        (
            f
            for f in face.details.get("frames", [])
            if f.get("distance") is not None and f.get("duplicate_of") is None
        ),
        key=lambda f: f["distance"],
    )
    kept = (capture.frame_at(int(f["index"])) for f in ranked)
    picks = [rgb for rgb in kept if rgb is not None][: cfg.frames_per_update]
    if len(picks) < services.settings.face.enrol_min_images:
        return None
    got = await run_engine(services, CheckKind.FACE, face_worker.enrol, picks, old)
    if isinstance(got, CheckResult) or got[0] is None:
        return None
    fresh: Template = got[0]
    n_enrolled = int(old.metadata.get("n_enrolled") or old.embeddings.shape[0])
    adaptive = np.concatenate([old.embeddings[n_enrolled:], fresh.embeddings])[-cfg.max_adaptive_embeddings :]
    if cfg.max_adaptive_embeddings == 0:
        adaptive = old.embeddings[:0]
    merged = Template(
        embeddings=np.concatenate([old.embeddings[:n_enrolled], adaptive]).astype(np.float32),
        model=old.model,
        created_at=Template.now(),
        metadata={**old.metadata, "n_enrolled": n_enrolled, "adaptive_from": capture.session_id},
    )
    return await asyncio.to_thread(
        lambda: save_template(
            services,
            capture.person_id,
            Modality.FACE,
            template_to_bytes(merged),
            int(merged.embeddings.shape[0]),
            merged.model,
            actor="system",
            source=TemplateSource.ADAPTIVE,
            details={"session_id": capture.session_id, "added": int(fresh.embeddings.shape[0])},
        )
    )
