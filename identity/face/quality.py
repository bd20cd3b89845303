"""Face quality measures and gates (light: numpy only).

Measures are taken on the 150x150 aligned face chip (so they do not depend on the camera resolution)
and on the 68 landmarks. Every gate failure is INCONCLUSIVE with a message a person can act on: poor
light on a cheap phone is a reason to retake, never a violation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face.config import FaceSettings
from identity.face.results import FaceObservation, FaceQuality

# iBUG 68-point indices.
_JAW_LEFT, _JAW_RIGHT, _NOSE_TIP = 0, 16, 30
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)

MESSAGES: dict[str, str] = {
    "no_face": "No face found. Face the camera in good light.",
    "several_faces": "More than one face is visible. Make sure only you are in the picture.",
    "face_too_small": "Your face is too small in the picture. Move closer to the camera.",
    "too_dark": "It is too dark. Turn on a light or face a window.",
    "too_bright": "There is too much light on your face. Move out of direct light.",
    "blurry": "The picture is blurry. Hold the camera still and clean the lens.",
    "not_frontal": "Look straight at the camera and keep your head level.",
    "quality_ok": "Face quality is good.",
}


def grey(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """ITU-R BT.601 luma of an RGB uint8 (H, W, 3) image, float64 (H, W) in 0..255."""
    arr = rgb.astype(np.float64)
    return 0.299 * arr[..., 0] + 0.587 * arr[..., 1] + 0.114 * arr[..., 2]


def laplacian_variance(g: npt.NDArray[np.float64]) -> float:
    """Variance of the 4-neighbour Laplacian of a grey (H, W) image (grey levels^2): a sharpness measure."""
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def measure(chip_rgb: npt.NDArray[np.uint8], face: FaceObservation) -> FaceQuality:
    """Quality measures of one face from its aligned chip (150, 150, 3) and its 68 landmarks."""
    g = grey(chip_rgb)
    h, w = g.shape
    # The inner part of the chip is skin and features; the padded rim is background.
    inner = g[h // 6 : h - h // 6, w // 6 : w - w // 6]
    pts = face.landmarks.astype(np.float64)
    jaw_w = abs(pts[_JAW_RIGHT, 0] - pts[_JAW_LEFT, 0])
    if jaw_w > 0:
        yaw = (
            abs(pts[_NOSE_TIP, 0] - pts[_JAW_LEFT, 0]) - abs(pts[_JAW_RIGHT, 0] - pts[_NOSE_TIP, 0])
        ) / jaw_w
    else:
        yaw = 1.0
    left_eye = pts[_LEFT_EYE].mean(axis=0)
    right_eye = pts[_RIGHT_EYE].mean(axis=0)
    roll = math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    return FaceQuality(
        face_px=int(min(face.box.width, face.box.height)),
        sharpness=laplacian_variance(inner),
        brightness=float(inner.mean()),
        saturated_fraction=float((inner >= 250).mean()),
        yaw=float(yaw),
        roll_deg=float(roll),
    )


def quality_result(
    code: str, model: ModelStamp, settings: FaceSettings, details: dict[str, object] | None = None
) -> CheckResult:
    """A FACE_QUALITY CheckResult for a gate code; every failure is INCONCLUSIVE (retake)."""
    return CheckResult(
        kind=CheckKind.FACE_QUALITY,
        outcome=Outcome.PASS if code == "quality_ok" else Outcome.INCONCLUSIVE,
        code=code,
        message=MESSAGES[code],
        model=model,
        details=dict(details or {}),
    )


def gate(
    faces: Sequence[FaceObservation], measures: FaceQuality | None, model: ModelStamp, settings: FaceSettings
) -> CheckResult:
    """Judge one image: exactly one face, size, exposure, sharpness, frontal pose, in that order.

    `faces` is sorted largest first; `measures` belongs to faces[0] (None when there is no face).
    """
    if not faces or measures is None:
        return quality_result("no_face", model, settings, {"faces": 0})
    main_w = faces[0].box.width
    others = [f for f in faces[1:] if f.box.width >= settings.other_face_min_ratio * main_w]
    details: dict[str, object] = {"faces": len(faces), **measures.to_dict()}
    if others:
        return quality_result("several_faces", model, settings, details)
    if measures.face_px < settings.min_face_px:
        details["min_face_px"] = settings.min_face_px
        return quality_result("face_too_small", model, settings, details)
    if measures.brightness < settings.min_brightness:
        details["min_brightness"] = settings.min_brightness
        return quality_result("too_dark", model, settings, details)
    if (
        measures.brightness > settings.max_brightness
        or measures.saturated_fraction > settings.max_saturated_fraction
    ):
        details["max_brightness"] = settings.max_brightness
        return quality_result("too_bright", model, settings, details)
    if measures.sharpness < settings.min_sharpness:
        details["min_sharpness"] = settings.min_sharpness
        return quality_result("blurry", model, settings, details)
    if abs(measures.yaw) > settings.max_yaw or abs(measures.roll_deg) > settings.max_roll_deg:
        details["max_yaw"] = settings.max_yaw
        details["max_roll_deg"] = settings.max_roll_deg
        return quality_result("not_frontal", model, settings, details)
    return quality_result("quality_ok", model, settings, details)
