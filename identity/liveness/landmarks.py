"""Geometric measures on 68-point (dlib / iBUG 300-W) face landmarks: head yaw, eye and mouth openness.

Pure numpy. Landmarks are a (68, 2) float array of (x, y) image pixels, x to the right and y down, in the
order dlib's shape predictor returns them. A frame without a face is represented by NaN values, and every
measure then returns NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

Landmarks68 = npt.NDArray[np.float64]

# A generic head in model units (y up, z towards the camera), indexed by 68-point landmark number: the
# usual six-point model for pose estimation (nose tip, chin, outer eye corners, mouth corners).
_MODEL_INDEX = np.array([30, 8, 36, 45, 48, 54])
_MODEL_3D = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.0, -330.0, -65.0],
        [-225.0, 170.0, -135.0],
        [225.0, 170.0, -135.0],
        [-150.0, -150.0, -125.0],
        [150.0, -150.0, -125.0],
    ]
)


def landmarks_from_face_recognition(face: Mapping[str, Sequence[Sequence[float]]]) -> Landmarks68:
    """The (68, 2) array behind one dict returned by face_recognition.face_landmarks (68-point model)."""
    pts = np.full((68, 2), np.nan)
    pts[0:17] = face["chin"]
    pts[17:22] = face["left_eyebrow"]
    pts[22:27] = face["right_eyebrow"]
    pts[27:31] = face["nose_bridge"]
    pts[31:36] = face["nose_tip"]
    pts[36:42] = face["left_eye"]
    pts[42:48] = face["right_eye"]
    top = np.asarray(face["top_lip"], dtype=np.float64)
    bottom = np.asarray(face["bottom_lip"], dtype=np.float64)
    pts[48:55] = top[0:7]
    pts[55:60] = bottom[1:6]
    pts[60:65] = top[[11, 10, 9, 8, 7]]
    pts[65:68] = bottom[[10, 9, 8]]
    return pts


def yaw_deg(pts: Landmarks68) -> float:
    """Head yaw in degrees from a weak-perspective fit of a generic 3D head to six landmarks.

    Positive = the face points towards image +x (the person's own left in an unmirrored camera image).
    Approximate in absolute terms (generic head); use it for changes relative to a baseline.
    """
    image = np.asarray(pts, dtype=np.float64)[_MODEL_INDEX] * np.array([1.0, -1.0])  # y up, like the model
    if not np.all(np.isfinite(image)):
        return float("nan")
    model = _MODEL_3D - _MODEL_3D.mean(axis=0)
    uv = image - image.mean(axis=0)
    # Least-squares affine camera A (2x3): uv ~ model @ A.T
    a_t, *_ = np.linalg.lstsq(model, uv, rcond=None)
    r1, r2 = a_t[:, 0], a_t[:, 1]
    n1 = np.linalg.norm(r1)
    if n1 < 1e-9:
        return float("nan")
    r1 = r1 / n1
    r2 = r2 - (r2 @ r1) * r1
    n2 = np.linalg.norm(r2)
    if n2 < 1e-9:
        return float("nan")
    r3 = np.cross(r1, r2 / n2)
    return float(np.degrees(np.arctan2(r1[2], r3[2])))


def _dist(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    return float(np.hypot(*(a - b)))


def eye_aspect_ratio(pts: Landmarks68) -> float:
    """Mean eye aspect ratio of both eyes (Soukupova & Cech 2016): ~0.25-0.35 open, < ~0.15 closed."""
    p = np.asarray(pts, dtype=np.float64)
    ears = []
    for s in (36, 42):
        e = p[s : s + 6]
        width = _dist(e[0], e[3])
        if not np.isfinite(width) or width < 1e-6:
            return float("nan")
        ears.append((_dist(e[1], e[5]) + _dist(e[2], e[4])) / (2.0 * width))
    return float(np.mean(ears))


def mouth_open_ratio(pts: Landmarks68) -> float:
    """Inner-lip gap (mean of landmarks 61-67, 62-66, 63-65) over mouth width (48-54); ~0 closed."""
    p = np.asarray(pts, dtype=np.float64)
    width = _dist(p[48], p[54])
    if not np.isfinite(width) or width < 1e-6:
        return float("nan")
    gap = np.mean([_dist(p[61], p[67]), _dist(p[62], p[66]), _dist(p[63], p[65])])
    return float(gap / width)
