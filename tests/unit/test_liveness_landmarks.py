"""Landmark measures: yaw on a projected generic head and on real dlib landmarks; eye and mouth ratios."""

from __future__ import annotations

import numpy as np
import pytest

from identity.liveness.landmarks import (
    _MODEL_3D,
    _MODEL_INDEX,
    eye_aspect_ratio,
    landmarks_from_face_recognition,
    mouth_open_ratio,
    yaw_deg,
)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    rotation: np.ndarray = rz @ rx @ ry
    return rotation


def _projected(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    pts = np.full((68, 2), 0.0)
    cam = _MODEL_3D @ _rotation(yaw, pitch, roll).T
    pts[_MODEL_INDEX] = cam[:, :2] * 0.4 * np.array([1.0, -1.0]) + np.array([320.0, 240.0])  # image y down
    return pts


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll"), [(0, 0, 0), (25, 0, 0), (-30, 0, 0), (20, 10, 0), (-20, 0, 15)]
)
def test_yaw_recovers_known_rotation(yaw: float, pitch: float, roll: float) -> None:
    assert yaw_deg(_projected(yaw, pitch, roll)) == pytest.approx(yaw, abs=3.0)


def test_yaw_of_missing_face_is_nan() -> None:
    assert np.isnan(yaw_deg(np.full((68, 2), np.nan)))


def _eye(open_height: float) -> np.ndarray:
    # p1..p6 as in the 68-point model: corners at 0 and 3, upper lid 1-2, lower lid 5-4.
    return np.array(
        [[0, 0], [3, -open_height], [7, -open_height], [10, 0], [7, open_height], [3, open_height]], float
    )


def test_eye_aspect_ratio_of_open_and_closed_eyes() -> None:
    pts = np.zeros((68, 2))
    pts[36:42] = _eye(1.5)
    pts[42:48] = _eye(1.5) + [30, 0]
    assert eye_aspect_ratio(pts) == pytest.approx(0.3)
    pts[36:42] = _eye(0.25)
    pts[42:48] = _eye(0.25) + [30, 0]
    assert eye_aspect_ratio(pts) == pytest.approx(0.05)


def test_mouth_ratio_closed_and_open() -> None:
    pts = np.zeros((68, 2))
    pts[48], pts[54] = [0, 0], [40, 0]
    pts[61:64] = [[15, -1], [20, -1], [25, -1]]
    pts[65:68] = [[25, 1], [20, 1], [15, 1]]
    assert mouth_open_ratio(pts) == pytest.approx(2 / 40)
    pts[65:68] += [0, 10]
    assert mouth_open_ratio(pts) == pytest.approx(12 / 40)


@pytest.fixture(scope="module")
def astronaut_rgb() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _real_landmarks(image_rgb: np.ndarray) -> np.ndarray:
    import face_recognition

    image = np.ascontiguousarray(image_rgb)
    boxes = face_recognition.face_locations(image)
    assert boxes
    # The largest face (HOG also finds a small false face on the astronaut's mission patch).
    largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
    return landmarks_from_face_recognition(face_recognition.face_landmarks(image, [largest])[0])


def _squeeze_left_half(image_rgb: np.ndarray, cx: float, factor: float) -> np.ndarray:
    """Compress columns left of cx towards cx, as foreshortening does when the face turns to image left."""
    import cv2

    h, w = image_rgb.shape[:2]
    xs = np.arange(w, dtype=np.float32)
    src_x = np.where(xs < cx, cx - (cx - xs) / factor, xs).astype(np.float32)
    map_x = np.repeat(src_x[None, :], h, axis=0)
    map_y = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    return np.asarray(cv2.remap(image_rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def test_real_landmarks_yaw_sign_and_ratios(astronaut_rgb: np.ndarray) -> None:
    pts = _real_landmarks(astronaut_rgb)
    base = yaw_deg(pts)
    assert abs(base) < 30  # a near-frontal portrait
    assert 0.15 < eye_aspect_ratio(pts) < 0.45
    assert 0.0 <= mouth_open_ratio(pts) < 0.3

    mirrored = yaw_deg(_real_landmarks(astronaut_rgb[:, ::-1]))
    assert mirrored == pytest.approx(-base, abs=3.0)

    nose_x = float(pts[30, 0])
    squeezed = yaw_deg(_real_landmarks(_squeeze_left_half(astronaut_rgb, nose_x, 0.6)))
    assert squeezed < base - 5.0  # looks turned towards image left: yaw decreases


def test_landmark_dict_roundtrip_order() -> None:
    pts = np.arange(136, dtype=float).reshape(68, 2)
    p = [tuple(v) for v in pts]
    face = {
        "chin": p[0:17],
        "left_eyebrow": p[17:22],
        "right_eyebrow": p[22:27],
        "nose_bridge": p[27:31],
        "nose_tip": p[31:36],
        "left_eye": p[36:42],
        "right_eye": p[42:48],
        "top_lip": p[48:55] + [p[64], p[63], p[62], p[61], p[60]],
        "bottom_lip": p[54:60] + [p[48], p[60], p[67], p[66], p[65], p[64]],
    }
    np.testing.assert_array_equal(landmarks_from_face_recognition(face), pts)
