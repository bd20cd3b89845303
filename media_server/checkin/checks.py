"""The checks of one check-in, run in the worker pool; every engine failure is a TECHNICAL result."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from identity.checks import CheckKind, CheckResult, Outcome
from identity.face import worker as face_worker
from identity.face.results import FaceAnalysis, template_from_bytes
from identity.liveness.challenge import Challenge, Observations, StepKind, evaluate_challenge
from identity.liveness.landmarks import eye_aspect_ratio, mouth_open_ratio, yaw_deg
from identity.pad import worker as pad_worker
from identity.pad.config import PadSettings
from identity.voice import worker as voice_worker
from identity.voice.audio import Pcm16k
from identity.voice.digits import prompt_window
from media_server.db.enums import ArtifactKind, Modality
from media_server.db.models import Artifact
from media_server.gallery import active_template
from media_server.jobs import run_engine, technical
from media_server.services import Services
from media_server.verdict import ADVISORY_DETAIL
from media_server.webrtc.capture import EndedReason, SessionCapture

log = logging.getLogger("kuzet.checkin")

PAD_FRAMES = 3
AUDIO_ENERGY_BLOCK_S = 0.02


def _not_enrolled(kind: CheckKind, what: str) -> CheckResult:
    return CheckResult(
        kind,
        Outcome.INCONCLUSIVE,
        "not_enrolled",
        f"No {what} enrolment for this person: an officer must enrol before this check can run.",
    )


def _ltrb(analysis: FaceAnalysis) -> tuple[int, int, int, int]:
    """The primary face box as (left, top, right, bottom), the order the PAD engine takes."""
    face = analysis.primary_face
    assert face is not None
    return face.box.left, face.box.top, face.box.right, face.box.bottom


def fuse_pad(results: list[CheckResult], settings: PadSettings) -> CheckResult:
    """Several frames' passive anti-spoofing results -> one session result.

    A majority of attack frames is an attack (FAIL). PASS needs the MEAN live score of the scored frames
    to reach the per-frame PASS level (live_threshold + inconclusive_margin) with no frame scored as an
    attack; anything else is REVIEW. Why the mean and not "every frame passes": single genuine frames dip
    just under the PASS level (0.85-0.89 on the real clips) and a 3-frame unanimity rule turned those
    dips into REVIEW; a mean at the PASS level still needs at least one frame at or above it, which no
    attack frame of the dev sets reached (identity/pad/config.py), so attacks gain nothing.
    """
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
    scores = [float(r.score) for r in results if r.score is not None]
    base = results[0]
    pass_level = settings.live_threshold + settings.inconclusive_margin
    details: dict[str, Any] = {
        "frames": [r.to_dict() for r in results],
        "fusion": "mean live score of the scored frames; PASS at the per-frame PASS level, no attack frame",
        "pass_level": pass_level,
    }
    mean = float(np.mean(scores)) if scores else None
    if len(fails) * 2 > len(results):
        return CheckResult(
            CheckKind.PAD,
            Outcome.FAIL,
            "presentation_attack",
            f"{len(fails)} of {len(results)} frames look like a photo or screen, not a live face.",
            score=float(np.median(scores)) if scores else None,
            threshold=base.threshold,
            model=base.model,
            details=details,
        )
    if mean is not None and mean >= pass_level and not fails and len(scores) == len(results):
        return CheckResult(
            CheckKind.PAD,
            Outcome.PASS,
            "live",
            f"The {len(scores)} scored frames look like a live face (mean live score {mean:.2f}).",
            score=mean,
            threshold=pass_level,
            model=base.model,
            details=details,
        )
    return CheckResult(
        CheckKind.PAD,
        Outcome.INCONCLUSIVE,
        "pad_mixed",
        "Anti-spoofing could not decide on these frames.",
        score=mean,
        threshold=pass_level,
        model=base.model,
        details=details,
    )


def observations(
    capture: SessionCapture,
    analyses: list[FaceAnalysis],
    challenge: Challenge,
    times_s: list[float] | None = None,
) -> Observations:
    """Per-frame yaw / eye / mouth measures, speech energy and prompt times on the session clock.

    `times_s[i]` is the session time of `analyses[i]` (default: the times of `capture.frames`)."""
    frame_ts: list[float] = []
    yaw: list[float] = []
    ear: list[float] = []
    mouth: list[float] = []
    if times_s is None:
        times_s = [t_s for t_s, _ in capture.frames]
    for t_s, analysis in zip(times_s, analyses, strict=True):
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


async def _spoken_digits(
    services: Services, capture: SessionCapture, challenge: Challenge, required: list[CheckKind]
) -> list[CheckResult]:
    """The digits each read-digits prompt asked for, recognised against the person's own digit templates.

    A person not enrolled for digits gets an advisory note (never a REVIEW of its own); a mismatch goes to
    review unless `voice.digits.mismatch_decides` (then it is a FAIL).
    """
    template = await asyncio.to_thread(active_template, services, capture.person_id, Modality.DIGITS)
    cfg = services.settings.voice.digits
    delivered = {
        int(ev["index"]): float(ev["t_s"])
        for ev in capture.events
        if ev.get("type") == "prompt" and ev.get("delivered", True) and "index" in ev and "t_s" in ev
    }
    out: list[CheckResult] = []
    for index, step in enumerate(challenge.steps):
        if step.kind is not StepKind.READ_DIGITS or not step.digits:
            continue
        if template is None:
            out.append(
                CheckResult(
                    CheckKind.SPOKEN_DIGITS,
                    Outcome.INCONCLUSIVE,
                    "not_enrolled",
                    "The person has no spoken-digit enrolment: the digits were not checked.",
                    details={"digits": step.digits, ADVISORY_DETAIL: True},
                )
            )
            continue
        if CheckKind.SPOKEN_DIGITS not in required:
            required.append(CheckKind.SPOKEN_DIGITS)
        pcm = prompt_window(
            Pcm16k(capture.audio_pcm16k),
            capture.audio_t0_s,
            delivered.get(index, float("nan")),
            step.window_s,
        )
        if pcm is None:
            out.append(
                technical(
                    CheckKind.SPOKEN_DIGITS, "no_audio", "No audio of the digits step reached the server."
                )
            )
            continue
        got = await run_engine(
            services,
            CheckKind.SPOKEN_DIGITS,
            voice_worker.spoken_digits_job,
            template,
            pcm,
            step.digits,
            cfg.model_dump(mode="json"),
        )
        result = got if isinstance(got, CheckResult) else CheckResult.from_dict(got)
        if result.outcome is Outcome.FAIL and not cfg.mismatch_decides:
            result = replace(
                result,
                outcome=Outcome.INCONCLUSIVE,
                message=f"{result.message} (sent to review: a misread digit is not a violation by itself)",
                details={**result.details, "check_outcome": "fail"},
            )
        out.append(result)
    return out


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
            technical(
                CheckKind.MEDIA,
                capture.ended_reason.value,
                "The session was interrupted before the end (network or device). Please take the check again.",
                stats=capture.stats,
            )
        )
    face_template = await asyncio.to_thread(active_template, services, capture.person_id, Modality.FACE)
    voice_template = await asyncio.to_thread(active_template, services, capture.person_id, Modality.VOICE)
    # Face (+ PAD) and voice are independent jobs: run them side by side on the pool.
    face_part, voice_part = await asyncio.gather(
        _face_checks(services, capture, face_template), _voice_checks(services, capture, voice_template)
    )
    face_results, analyses, times_s = face_part
    results.extend(face_results)
    if capture.challenge:
        challenge = Challenge.from_dict(capture.challenge)
        kinds = {s.kind.value for s in challenge.steps}
        if kinds & {"turn_left", "turn_right", "blink"}:
            required.append(CheckKind.LIVENESS)
        if "read_digits" in kinds and services.settings.liveness.av_sync_decides:
            required.append(CheckKind.AV_SYNC)
        if "read_digits" in kinds:
            results.extend(await _spoken_digits(services, capture, challenge, required))
        if analyses:
            results.extend(
                evaluate_challenge(
                    challenge,
                    observations(capture, analyses, challenge, times_s),
                    services.settings.liveness,
                )
            )
    if voice_template is not None:
        required.append(CheckKind.VOICE)
    results.extend(voice_part)
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


async def _voice_checks(
    services: Services, capture: SessionCapture, voice_template: bytes | None
) -> list[CheckResult]:
    if voice_template is None:
        return []
    if not capture.audio_pcm16k.size:
        return [technical(CheckKind.VOICE, "no_audio", "No audio reached the server: check the microphone.")]
    voice = await run_engine(
        services, CheckKind.VOICE, voice_worker.verify_job, voice_template, capture.audio_pcm16k
    )
    if isinstance(voice, CheckResult):
        return [voice]
    return [CheckResult.from_dict(d) for d in voice]


async def _face_checks(
    services: Services, capture: SessionCapture, face_template: bytes | None
) -> tuple[list[CheckResult], list[FaceAnalysis], list[float]]:
    """FACE and PAD results, the per-frame analyses (the liveness series) and their session times."""
    if capture.live is not None:
        return await _face_checks_live(services, capture, face_template)
    results: list[CheckResult] = []
    frames = [rgb for _, rgb in capture.frames]
    times_s = [t_s for t_s, _ in capture.frames]
    analyses: list[FaceAnalysis] = []
    if not frames:
        results.append(
            technical(CheckKind.MEDIA, "no_video", "No video reached the server: check the camera.")
        )
        return results, analyses, times_s
    got = await run_engine(services, CheckKind.FACE, face_worker.analyse_frames, frames)
    if isinstance(got, CheckResult):
        results.append(got)
        return results, analyses, times_s
    analyses = got
    if face_template is None:
        results.append(_not_enrolled(CheckKind.FACE, "face"))
    else:
        results.append(
            await run_engine(
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
        await run_engine(services, CheckKind.PAD, pad_worker.pad_score_rgb, frames[i], _ltrb(a))
        for i, a in with_face[:PAD_FRAMES]
    ]
    results.append(fuse_pad(pad_results, services.settings.pad))
    return results, analyses, times_s


async def _face_checks_live(
    services: Services, capture: SessionCapture, face_template: bytes | None
) -> tuple[list[CheckResult], list[FaceAnalysis], list[float]]:
    """The end of a live-analysed session: embed the best held frames, fuse, and PAD on the best three.

    Landmarks, boxes and quality of every sampled frame were computed while the session ran
    (`capture.live`); only the embedding of `media.embed_best_frames` frames is left to do here."""
    live = capture.live
    assert live is not None
    analyses = list(live.analyses)
    if not analyses:
        if live.stats.get("frames_analysis_failed"):
            result = technical(
                CheckKind.FACE,
                "engine_failure",
                "The face analysis failed while the session ran (a technical fault, not a violation): a "
                "reviewer decides and a retake is offered.",
                stats=live.stats,
            )
        else:
            result = technical(CheckKind.MEDIA, "no_video", "No video reached the server: check the camera.")
        return [result], analyses, list(live.frame_ts)
    held_rgb = {h.index: rgb for h, (_, rgb) in zip(live.held, capture.frames, strict=True)}

    async def face() -> CheckResult:
        if face_template is None:
            return _not_enrolled(CheckKind.FACE, "face")
        # Most of the best frames were embedded while the session ran; embed whatever is missing.
        best = [
            h
            for h in live.best_held(services.settings.media.embed_best_frames)
            if analyses[h.index].embedding is None
        ]
        if best:
            got = await run_engine(
                services,
                CheckKind.FACE,
                face_worker.embed_analyses,
                [held_rgb[h.index] for h in best],
                [analyses[h.index] for h in best],
            )
            if isinstance(got, CheckResult):
                return got
            for h, embedded in zip(best, got, strict=True):
                analyses[h.index] = embedded
        verified = await run_engine(
            services,
            CheckKind.FACE,
            face_worker.verify_analyses,
            template_from_bytes(face_template),
            analyses,
        )
        return verified

    async def pad() -> CheckResult:
        with_face = sorted(
            (h for h in live.held if analyses[h.index].primary_face is not None), key=lambda h: -h.score
        )[:PAD_FRAMES]
        pad_results = await asyncio.gather(
            *(
                run_engine(
                    services,
                    CheckKind.PAD,
                    pad_worker.pad_score_rgb,
                    held_rgb[h.index],
                    _ltrb(analyses[h.index]),
                )
                for h in with_face
            )
        )
        return fuse_pad(list(pad_results), services.settings.pad)

    face_result, pad_result = await asyncio.gather(face(), pad())
    return [face_result, pad_result], analyses, list(live.frame_ts)


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
