"""After a check-in: evidence first, then the checks (in worker processes), then the verdict.

Order matters and is the point of this module:
1. every captured artifact (recording, sampled frames, speech, data-channel log) is hashed and stored,
   and its row committed, before anything is judged;
2. face, passive anti-spoofing, liveness challenge, audio-visual sync and voice run in the worker pool;
3. the verdict policy fuses the results; a signed manifest ties artifacts, checks, models and thresholds
   to the verdict; the verdict is audited and announced by webhook.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from sqlalchemy import select

from identity.checks import CheckKind, CheckResult, Outcome
from identity.face import worker as face_worker
from identity.face.results import FaceAnalysis, Template, template_from_bytes, template_to_bytes
from identity.liveness.challenge import Challenge, Observations, evaluate_challenge
from identity.liveness.landmarks import eye_aspect_ratio, mouth_open_ratio, yaw_deg
from identity.pad import worker as pad_worker
from identity.voice import worker as voice_worker
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, Modality, SessionStatus, TemplateSource
from media_server.db.models import Artifact, CheckResultRecord, CheckSession, Verdict
from media_server.db.types import utcnow
from media_server.gallery import active_template, save_template
from media_server.package import load_or_create_signing_key
from media_server.verdict import VerdictOutcome, decide
from media_server.webhooks import verdict_event, violation_event
from media_server.webrtc.capture import EndedReason, SessionCapture
from media_server.services import Services

log = logging.getLogger("kuzet.pipeline")

# How many sampled frames are kept as evidence and scored by passive anti-spoofing.
EVIDENCE_FRAMES = 12
PAD_FRAMES = 3
AUDIO_ENERGY_BLOCK_S = 0.02


@dataclass(frozen=True)
class StoredRef:
    """An artifact row written for this session."""

    artifact_id: str
    key: str
    sha256: str
    size: int
    kind: ArtifactKind


def store_artifact(
    services: Services,
    session_id: str,
    kind: ArtifactKind,
    content_type: str,
    meta: dict[str, Any],
    *,
    data: bytes | None = None,
    path: Any = None,
) -> StoredRef:
    """Store bytes or a file in the evidence store and commit its artifact row (blocking; call in a thread)."""
    metadata = {"session-id": session_id, "kind": kind.value}
    if path is not None:
        stored = services.store.put_file(path, content_type=content_type, metadata=metadata)
    else:
        stored = services.store.put_bytes(data or b"", content_type=content_type, metadata=metadata)
    if stored.spooled:
        services.metrics.spooled.inc()
    with services.sessions.begin() as db:
        row = Artifact(
            session_id=session_id,
            key=stored.key,
            sha256=stored.sha256,
            size=stored.size,
            content_type=content_type,
            kind=kind,
            spooled=stored.spooled,
            meta=meta,
        )
        db.add(row)
        db.flush()
        audit.append(
            db,
            actor="system",
            action="evidence_stored",
            subject_type="session",
            subject_id=session_id,
            details={"artifact_id": row.id, "kind": kind.value, "sha256": stored.sha256, "size": stored.size},
        )
        return StoredRef(row.id, stored.key, stored.sha256, stored.size, kind)


def jpeg_bytes(rgb: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """JPEG encoding of an RGB frame (evidence copy of a sampled frame)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def wav_bytes(pcm16k: npt.NDArray[np.float32]) -> bytes:
    """16 kHz mono 16-bit WAV of float32 samples in [-1, 1]."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(pcm16k, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _evidence_frames(frames: list[tuple[float, npt.NDArray[np.uint8]]]) -> list[int]:
    """Indexes of up to EVIDENCE_FRAMES frames spread evenly over the session."""
    if len(frames) <= EVIDENCE_FRAMES:
        return list(range(len(frames)))
    return sorted({int(round(i)) for i in np.linspace(0, len(frames) - 1, EVIDENCE_FRAMES)})


def store_capture_evidence(services: Services, capture: SessionCapture) -> list[StoredRef]:
    """Evidence first: recording, sampled frames, speech and the event log, each hashed and committed."""
    sid = capture.session_id
    refs: list[StoredRef] = []
    with services.sessions.begin() as db:
        row = db.get(CheckSession, sid)
        if row is not None:
            row.ended_at = capture.ended_at
            row.location = capture.location
            row.challenge = capture.challenge
            row.status = (
                SessionStatus.COMPLETED
                if capture.ended_reason is EndedReason.COMPLETED
                else SessionStatus.TECHNICAL_FAILURE
            )
            row.meta = {
                **(row.meta or {}),
                "ended_reason": capture.ended_reason.value,
                "stats": capture.stats,
            }
    if capture.recording_path is not None and capture.recording_path.exists():
        refs.append(
            store_artifact(
                services,
                sid,
                ArtifactKind.RECORDING,
                "video/mp4",
                {"ended_reason": capture.ended_reason.value},
                path=capture.recording_path,
            )
        )
    for i in _evidence_frames(capture.frames):
        t_s, rgb = capture.frames[i]
        h, w = rgb.shape[:2]
        refs.append(
            store_artifact(
                services,
                sid,
                ArtifactKind.FRAME,
                "image/jpeg",
                {"t_s": round(t_s, 3), "frame_index": i, "width": w, "height": h},
                data=jpeg_bytes(rgb),
            )
        )
    if capture.audio_pcm16k.size:
        refs.append(
            store_artifact(
                services,
                sid,
                ArtifactKind.AUDIO,
                "audio/wav",
                {"t0_s": capture.audio_t0_s, "seconds": round(capture.audio_pcm16k.size / 16000, 2)},
                data=wav_bytes(capture.audio_pcm16k),
            )
        )
    events = json.dumps(
        {"events": capture.events, "location": capture.location, "stats": capture.stats},
        default=str,
        sort_keys=True,
    ).encode()
    refs.append(
        store_artifact(
            services, sid, ArtifactKind.OTHER, "application/json", {"what": "session_events"}, data=events
        )
    )
    return refs


def _not_enrolled(kind: CheckKind, what: str) -> CheckResult:
    return CheckResult(
        kind,
        Outcome.INCONCLUSIVE,
        "not_enrolled",
        f"No {what} enrolment for this person: an officer must enrol before this check can run.",
    )


def _technical(kind: CheckKind, code: str, message: str, **details: Any) -> CheckResult:
    return CheckResult(kind, Outcome.TECHNICAL, code, message, details=details)


def _ltrb(analysis: FaceAnalysis) -> tuple[int, int, int, int]:
    """The primary face box as (left, top, right, bottom), the order the PAD engine takes."""
    face = analysis.primary_face
    assert face is not None
    return face.box.left, face.box.top, face.box.right, face.box.bottom


def fuse_pad(results: list[CheckResult]) -> CheckResult:
    """Several frames' passive anti-spoofing results -> one: a majority of attack frames is an attack."""
    if not results:
        return CheckResult(
            CheckKind.PAD,
            Outcome.INCONCLUSIVE,
            "no_face_for_pad",
            "No frame showed a face clearly enough for the anti-spoofing check.",
        )
    if all(r.outcome is Outcome.TECHNICAL for r in results):
        return results[0]
    fails = [r for r in results if r.outcome is Outcome.FAIL]
    passes = [r for r in results if r.outcome is Outcome.PASS]
    scores = [r.score for r in results if r.score is not None]
    base = results[0]
    details = {"frames": [r.to_dict() for r in results]}
    score = float(np.median(scores)) if scores else None
    if len(fails) * 2 > len(results):
        return CheckResult(
            CheckKind.PAD,
            Outcome.FAIL,
            "presentation_attack",
            f"{len(fails)} of {len(results)} frames look like a photo or screen, not a live face.",
            score=score,
            threshold=base.threshold,
            model=base.model,
            details=details,
        )
    if len(passes) == len(results):
        return CheckResult(
            CheckKind.PAD,
            Outcome.PASS,
            "live",
            "Every scored frame looks like a live face.",
            score=score,
            threshold=base.threshold,
            model=base.model,
            details=details,
        )
    return CheckResult(
        CheckKind.PAD,
        Outcome.INCONCLUSIVE,
        "pad_mixed",
        "Anti-spoofing could not decide on these frames.",
        score=score,
        threshold=base.threshold,
        model=base.model,
        details=details,
    )


def observations(capture: SessionCapture, analyses: list[FaceAnalysis], challenge: Challenge) -> Observations:
    """Per-frame yaw / eye / mouth measures, speech energy and prompt times on the session clock."""
    frame_ts: list[float] = []
    yaw: list[float] = []
    ear: list[float] = []
    mouth: list[float] = []
    for (t_s, _), analysis in zip(capture.frames, analyses, strict=True):
        face = analysis.primary_face
        frame_ts.append(t_s)
        if face is None:
            measures = (np.nan, np.nan, np.nan)
        else:
            pts = face.landmarks.astype(np.float64)
            measures = (yaw_deg(pts), eye_aspect_ratio(pts), mouth_open_ratio(pts))
        yaw.append(measures[0])
        ear.append(measures[1])
        mouth.append(measures[2])
    audio_ts: npt.NDArray[np.float64] = np.empty(0)
    energy: npt.NDArray[np.float64] = np.empty(0)
    if capture.audio_pcm16k.size and capture.audio_t0_s is not None:
        block = int(16000 * AUDIO_ENERGY_BLOCK_S)
        n = capture.audio_pcm16k.size // block
        blocks = capture.audio_pcm16k[: n * block].astype(np.float64).reshape(n, block)
        energy = np.sqrt((blocks**2).mean(axis=1)).astype(np.float64)
        audio_ts = capture.audio_t0_s + (np.arange(n) + 0.5) * AUDIO_ENERGY_BLOCK_S  # type: ignore[assignment]
    prompts = [float("nan")] * len(challenge.steps)
    for ev in capture.events:
        if ev.get("type") == "prompt" and ev.get("delivered", True):
            index = int(ev.get("index", -1))
            if 0 <= index < len(prompts):
                prompts[index] = float(ev["t_s"])
    return Observations(frame_ts, yaw, ear, mouth, audio_ts, energy, prompts)


async def _run_engine(services: Services, kind: CheckKind, fn: Any, *args: Any) -> Any:
    """Run an engine job in the pool; any crash becomes a TECHNICAL result (never a violation)."""
    try:
        return await services.workers.run(fn, *args)
    except Exception as exc:
        log.exception("engine job failed", extra={"job": getattr(fn, "__name__", "?")})
        return _technical(
            kind, "engine_failure", "An analysis engine failed; the check will be retried.", error=repr(exc)
        )


@dataclass(frozen=True)
class CheckinChecks:
    """All results of one check-in and which kinds the verdict requires."""

    results: list[CheckResult]
    required: list[CheckKind]
    face_analyses: list[FaceAnalysis]


async def run_checkin_checks(services: Services, capture: SessionCapture) -> CheckinChecks:
    """Face, passive anti-spoofing, liveness challenge, AV sync, voice and location for one capture."""
    results: list[CheckResult] = []
    required = [CheckKind.FACE, CheckKind.PAD]
    if capture.ended_reason is not EndedReason.COMPLETED:
        results.append(
            _technical(
                CheckKind.MEDIA,
                capture.ended_reason.value,
                "The session was interrupted before the end (network or device). Please take the check again.",
                stats=capture.stats,
            )
        )
    frames = [rgb for _, rgb in capture.frames]
    analyses: list[FaceAnalysis] = []
    if not frames:
        results.append(
            _technical(CheckKind.MEDIA, "no_video", "No video reached the server: check the camera.")
        )
    else:
        got = await _run_engine(services, CheckKind.FACE, face_worker.analyse_frames, frames)
        if isinstance(got, CheckResult):
            results.append(got)
        else:
            analyses = got
    face_template = await asyncio.to_thread(active_template, services, capture.person_id, Modality.FACE)
    if frames and analyses:
        if face_template is None:
            results.append(_not_enrolled(CheckKind.FACE, "face"))
        else:
            results.append(
                await _run_engine(
                    services,
                    CheckKind.FACE,
                    face_worker.verify_analyses,
                    template_from_bytes(face_template),
                    analyses,
                )
            )
        with_face = [(i, a) for i, a in enumerate(analyses) if a.primary_face is not None]
        with_face.sort(key=lambda ia: -(ia[1].measures.score() if ia[1].measures else -1e9))
        pad_results = [
            await _run_engine(services, CheckKind.PAD, pad_worker.pad_score_rgb, frames[i], _ltrb(a))
            for i, a in with_face[:PAD_FRAMES]
        ]
        results.append(fuse_pad(pad_results))
    if capture.challenge:
        challenge = Challenge.from_dict(capture.challenge)
        kinds = {s.kind.value for s in challenge.steps}
        if kinds & {"turn_left", "turn_right", "blink"}:
            required.append(CheckKind.LIVENESS)
        if "read_digits" in kinds and services.settings.liveness.av_sync_decides:
            required.append(CheckKind.AV_SYNC)
            results.append(
                CheckResult(
                    CheckKind.SPOKEN_DIGITS,
                    Outcome.INCONCLUSIVE,
                    "words_not_recognised",
                    "The digits' words were not recognised: no offline recogniser exists for Russian or Kazakh. "
                    "Lip-speech synchrony and the speaker's voice were checked on that segment instead.",
                    details={"digits": [s.digits for s in challenge.steps if s.digits]},
                )
            )
        if analyses:
            results.extend(
                evaluate_challenge(
                    challenge, observations(capture, analyses, challenge), services.settings.liveness
                )
            )
    voice_template = await asyncio.to_thread(active_template, services, capture.person_id, Modality.VOICE)
    if voice_template is not None:
        required.append(CheckKind.VOICE)
        if capture.audio_pcm16k.size:
            got = await _run_engine(
                services, CheckKind.VOICE, voice_worker.verify_job, voice_template, capture.audio_pcm16k
            )
            if isinstance(got, CheckResult):
                results.append(got)
            else:
                results.extend(CheckResult.from_dict(d) for d in got)
        else:
            results.append(
                _technical(CheckKind.VOICE, "no_audio", "No audio reached the server: check the microphone.")
            )
    loc = capture.location or {}
    if loc.get("status") == "ok":
        results.append(
            CheckResult(
                CheckKind.LOCATION,
                Outcome.PASS,
                "location_recorded",
                "Location recorded with the session.",
                details=loc,
            )
        )
    else:
        results.append(
            CheckResult(
                CheckKind.LOCATION,
                Outcome.INCONCLUSIVE,
                "location_missing",
                "The phone did not share its location.",
                details=loc,
            )
        )
    return CheckinChecks(results, required, analyses)


# Results of these kinds add a note to the verdict but never decide it on their own.
ADVISORY = frozenset({CheckKind.LOCATION, CheckKind.SPOKEN_DIGITS})


def write_verdict(
    services: Services, session_id: str, results: list[CheckResult], required: list[CheckKind]
) -> tuple[VerdictOutcome, str]:
    """Persist results, decide, sign the manifest, store it as evidence, write and audit the verdict."""
    advisory = ADVISORY if services.settings.liveness.av_sync_decides else ADVISORY | {CheckKind.AV_SYNC}
    deciding = [r for r in results if r.kind not in advisory]
    outcome = decide(deciding, required)
    notes = [f"note: {r.kind.value}: {r.message}" for r in results if r.kind in advisory and not r.passed]
    reasons = outcome.reasons + notes
    with services.sessions() as db:
        artifacts = db.scalars(
            select(Artifact).where(Artifact.session_id == session_id).order_by(Artifact.created_at)
        ).all()
        artifact_list = [
            {"kind": a.kind.value, "key": a.key, "sha256": a.sha256, "size": a.size} for a in artifacts
        ]
        head = audit.head(db)
    manifest = {
        "session_id": session_id,
        "artifacts": artifact_list,
        "checks": [r.to_dict() for r in results],
        "verdict": {**outcome.to_dict(), "reasons": reasons},
        "audit_head": {"id": head.id, "row_hash": head.row_hash} if head else None,
        "created_at": utcnow().isoformat(),
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str).encode()
    signature = load_or_create_signing_key(services.settings.data_dir).sign(manifest_bytes)
    ref = store_artifact(
        services,
        session_id,
        ArtifactKind.OTHER,
        "application/json",
        {"what": "verdict_manifest", "ed25519_signature_b64": base64.b64encode(signature).decode()},
        data=manifest_bytes,
    )
    with services.sessions.begin() as db:
        for r in results:
            db.add(CheckResultRecord.from_check(session_id, r))
        verdict = Verdict(
            session_id=session_id,
            decision=outcome.decision,
            reasons=reasons,
            retake_offered=outcome.retake_offered,
            policy_version=outcome.policy_version,
            thresholds=outcome.thresholds,
            models=outcome.models,
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        )
        db.add(verdict)
        db.flush()
        audit.append(
            db,
            actor="system",
            action="verdict_written",
            subject_type="session",
            subject_id=session_id,
            details={
                "verdict_id": verdict.id,
                "decision": outcome.decision.value,
                "manifest_sha256": verdict.manifest_sha256,
                "manifest_artifact": ref.artifact_id,
            },
        )
        verdict_id = verdict.id
    services.metrics.verdicts.labels(outcome.decision.value).inc()
    return VerdictOutcome(
        outcome.decision,
        reasons,
        outcome.retake_offered,
        outcome.policy_version,
        outcome.thresholds,
        outcome.models,
    ), verdict_id


def announce(
    services: Services, session_id: str, person_id: str, kind: str, outcome: VerdictOutcome, verdict_id: str
) -> None:
    """Webhook events for a verdict (and a violation on FAIL); call on the event loop."""
    services.notifier.submit(
        verdict_event(
            session_id=session_id,
            person_id=person_id,
            kind=kind,
            decision=outcome.decision.value,
            reasons=outcome.reasons,
            verdict_id=verdict_id,
            retake_offered=outcome.retake_offered,
        )
    )
    if outcome.decision is Decision.FAIL:
        services.notifier.submit(
            violation_event(
                session_id=session_id,
                person_id=person_id,
                kind=kind,
                reason="; ".join(outcome.reasons),
                verdict_id=verdict_id,
                source="verdict",
            )
        )


def annotate_frames(services: Services, session_id: str, results: list[CheckResult]) -> None:
    """Give stored frames the face box and distance the face check saw, for the reviewer's overlay.

    Annotations live in the artifact row's meta; the stored evidence bytes are never changed.
    """
    face = next((r for r in results if r.kind is CheckKind.FACE and "frames" in r.details), None)
    if face is None:
        return
    per_frame = {int(f["index"]): f for f in face.details["frames"] if "index" in f}
    with services.sessions.begin() as db:
        rows = db.scalars(
            select(Artifact).where(Artifact.session_id == session_id, Artifact.kind == ArtifactKind.FRAME)
        ).all()
        for row in rows:
            info = per_frame.get(int(row.meta.get("frame_index", -1)))
            if not info or not info.get("box"):
                continue
            top, right, bottom, left = info["box"]
            w, h = float(row.meta["width"]), float(row.meta["height"])
            distance = info.get("distance")
            match = distance is not None and face.threshold is not None and distance <= face.threshold
            row.meta = {
                **row.meta,
                "score": distance,
                "display_w": 240,
                "boxes": [
                    {
                        "left_pct": round(100 * left / w, 2),
                        "top_pct": round(100 * top / h, 2),
                        "width_pct": round(100 * (right - left) / w, 2),
                        "height_pct": round(100 * (bottom - top) / h, 2),
                        "match": match,
                    }
                ],
            }


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
    picks = [capture.frames[int(f["index"])][1] for f in ranked[: cfg.frames_per_update]]
    if len(picks) < services.settings.face.enrol_min_images:
        return None
    got = await _run_engine(services, CheckKind.FACE, face_worker.enrol, picks, old)
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


async def finish_session(services: Services, capture: SessionCapture) -> dict[str, Any]:
    """The session sink: evidence, checks, verdict. Returns the outcome the check-in page shows."""
    await asyncio.to_thread(store_capture_evidence, services, capture)
    checks = await run_checkin_checks(services, capture)
    await asyncio.to_thread(annotate_frames, services, capture.session_id, checks.results)
    outcome, verdict_id = await asyncio.to_thread(
        write_verdict, services, capture.session_id, checks.results, checks.required
    )
    announce(services, capture.session_id, capture.person_id, capture.kind, outcome, verdict_id)
    await adapt_gallery(services, capture, checks.results, outcome)
    return {
        "decision": outcome.decision.value,
        "retake": outcome.retake_offered,
        "reasons": outcome.reasons,
        "session_id": capture.session_id,
    }
