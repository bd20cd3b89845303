"""PAD decisions and crop geometry: pure functions, no model imports (safe in the API process)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.geometry import FaceBox
from identity.pad.config import PadSettings

SCORE_UNIT = "fused MiniFASNet live probability (0..1)"


def context_crop(frame_w: int, frame_h: int, box: FaceBox, scale: float) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) region, right/bottom inclusive, that a MiniFASNet model sees.

    The face box is enlarged `scale` times around its centre (clamped so it fits the frame) and shifted
    back inside the frame, as in the upstream Silent-Face-Anti-Spoofing `CropImage`: the model was trained
    on this much context around the face, so a tight crop breaks it.
    """
    w, h = max(box.width, 1), max(box.height, 1)
    scale = min((frame_h - 1) / h, (frame_w - 1) / w, scale)
    new_w, new_h = w * scale, h * scale
    cx, cy = box.left + w / 2, box.top + h / 2
    left, top, right, bottom = cx - new_w / 2, cy - new_h / 2, cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > frame_w - 1:
        left -= right - frame_w + 1
        right = frame_w - 1
    if bottom > frame_h - 1:
        top -= bottom - frame_h + 1
        bottom = frame_h - 1
    return int(max(left, 0)), int(max(top, 0)), int(right), int(bottom)


def no_face(settings: PadSettings, stamp: ModelStamp | None, code: str = "no_face") -> CheckResult:
    """INCONCLUSIVE result for a frame where no (usable) face was found."""
    messages = {
        "no_face": "No face was found, so the anti-spoofing check could not tell.",
        "face_too_small": "The face is too small in the picture to check for spoofing; move closer.",
    }
    return CheckResult(
        kind=CheckKind.PAD,
        outcome=Outcome.INCONCLUSIVE,
        code=code,
        message=messages.get(code, "The anti-spoofing check could not tell."),
        threshold=settings.live_threshold,
        model=stamp,
        details={"score_unit": SCORE_UNIT},
    )


def decide(
    live_score: float, settings: PadSettings, stamp: ModelStamp | None, **details: object
) -> CheckResult:
    """Turn a fused live probability (0..1) into PASS / FAIL (presentation_attack) / INCONCLUSIVE."""
    thr, margin = settings.live_threshold, settings.inconclusive_margin
    info: dict[str, object] = {"score_unit": SCORE_UNIT, "inconclusive_margin": margin, **details}
    if live_score >= thr + margin:
        outcome, code, message = Outcome.PASS, "live", "The face looks like a live person."
    elif live_score < thr - margin:
        outcome, code = Outcome.FAIL, "presentation_attack"
        message = "The face looks like a photo, screen or mask rather than a live person."
    else:
        outcome, code = Outcome.INCONCLUSIVE, "pad_borderline"
        message = "The anti-spoofing check could not tell; a reviewer will look at it."
    return CheckResult(
        kind=CheckKind.PAD,
        outcome=outcome,
        code=code,
        message=message,
        score=float(live_score),
        threshold=thr,
        model=stamp,
        details=info,
    )


def decide_frames(results: Sequence[CheckResult], settings: PadSettings) -> CheckResult:
    """Combine per-frame PAD results of one session: the median live score of frames with a face decides.

    No scored frame at all -> INCONCLUSIVE (no_face); a TECHNICAL frame result is passed on when no
    frame could be scored.
    """
    scored = [r for r in results if r.score is not None]
    stamp = next((r.model for r in results if r.model is not None), None)
    if not scored:
        technical = next((r for r in results if r.outcome is Outcome.TECHNICAL), None)
        return technical if technical is not None else no_face(settings, stamp)
    scores = [float(r.score) for r in scored if r.score is not None]
    return decide(
        statistics.median(scores),
        settings,
        stamp,
        frames_scored=len(scores),
        frames_total=len(results),
        frame_scores=[round(s, 4) for s in scores],
    )
