"""The mouthpiece in breath photos: where it is, a synthetic one, and a visibility heuristic.

Geometry comes from the 68-point landmarks (iBUG 300-W order: 27-35 nose, 48-67 mouth, 8 chin) when a
face engine supplies them, else from the face box (the mouth sits in its lower third).

`mouthpiece_fraction` is a deliberately simple heuristic: the fraction of the lower-face pixels whose
colour is far from the person's own cheek colour. A mouthpiece, tube and device body are rarely skin
coloured, so an occluded lower face scores high and a bare one low. Its limits: skin-coloured or clear
mouthpieces and a hand covering the mouth look like skin (false "not visible" -> review); beards,
moustaches, strong make-up, masks and coloured light look like an object (false "visible"); cheek colour
is sampled from fixed box fractions, so a strongly turned head samples background. It says nothing about
whether the device is a real breathalyser. The threshold is measured on LFW with the synthetic
occlusion below, which is far more uniform than real devices: treat it as an upper bound on accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from identity.geometry import FaceBox

RGB = npt.NDArray[np.uint8]
Landmarks = npt.NDArray[np.float64]

# Face-box fractions used when no landmarks are known (dlib/HOG boxes: forehead-to-chin, ear-to-ear).
_NOSE_BOTTOM_FRAC = 0.62  # nose base, as a fraction of box height from the top
_MOUTH_CENTRE_FRAC = 0.80
_MOUTH_WIDTH_FRAC = 0.42
_CHEEK_ROWS = (0.42, 0.60)
_CHEEK_COLS = ((0.12, 0.32), (0.68, 0.88))
_STD_FLOOR = 4.0  # Lab units; a perfectly flat cheek patch must not make every pixel "non-skin"


@dataclass(frozen=True, slots=True)
class Region:
    """An axis-aligned pixel rectangle [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    def mask(self, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
        """Boolean HxW mask of this region for an image of `shape`."""
        m = np.zeros(shape[:2], dtype=bool)
        m[self.y0 : self.y1, self.x0 : self.x1] = True
        return m


def _clip(region: Region, shape: tuple[int, ...]) -> Region:
    h, w = shape[:2]
    return Region(max(0, region.x0), max(0, region.y0), min(w, region.x1), min(h, region.y1))


def mouth_geometry(face: FaceBox, landmarks: Landmarks | None) -> tuple[float, float, float, float, float]:
    """(mouth centre x, mouth centre y, mouth width, nose-base y, chin y) in pixels.

    `landmarks` is (68, 2) x,y in pixels (iBUG order) or None to use face-box proportions.
    """
    if landmarks is not None and landmarks.shape == (68, 2):
        mouth = landmarks[48:68]
        cx, cy = float(mouth[:, 0].mean()), float(mouth[:, 1].mean())
        width = float(np.linalg.norm(landmarks[54] - landmarks[48]))
        return cx, cy, max(width, 1.0), float(landmarks[33, 1]), float(landmarks[8, 1])
    cx = face.left + face.width / 2
    return (
        cx,
        face.top + _MOUTH_CENTRE_FRAC * face.height,
        _MOUTH_WIDTH_FRAC * face.width,
        face.top + _NOSE_BOTTOM_FRAC * face.height,
        float(face.bottom),
    )


def mouth_region(face: FaceBox, landmarks: Landmarks | None, shape: tuple[int, ...]) -> Region:
    """The lower-face rectangle a mouthpiece occupies: nose base to just below the chin, ~2 mouths wide."""
    cx, _cy, mw, nose_y, chin_y = mouth_geometry(face, landmarks)
    half = 1.1 * mw
    pad = 0.08 * (chin_y - nose_y)
    return _clip(
        Region(int(cx - half), int(nose_y + pad), int(cx + half) + 1, int(chin_y + 3 * pad) + 1), shape
    )


def lips_region(face: FaceBox, landmarks: Landmarks | None, shape: tuple[int, ...]) -> Region:
    """The inner lower face the visibility heuristic looks at: mouth +-0.75 mouth widths, nose to chin."""
    cx, _cy, mw, nose_y, chin_y = mouth_geometry(face, landmarks)
    pad = 0.08 * (chin_y - nose_y)
    half = 0.75 * mw
    return _clip(Region(int(cx - half), int(nose_y + pad), int(cx + half) + 1, int(chin_y - pad) + 1), shape)


def occlude_mouth(
    rgb: RGB, face: FaceBox, landmarks: Landmarks | None, rng: np.random.Generator
) -> tuple[RGB, Region]:
    """Draw a synthetic breathalyser mouthpiece, device body and holding hand over the mouth.

    `rgb` is HxWx3 uint8; returns a new image and the region drawn in (nothing outside it changes).
    Colours and proportions are drawn from `rng` (device light or dark plastic, hand from cheek colour).
    """
    region = mouth_region(face, landmarks, rgb.shape)
    cx, cy, mw, _nose_y, chin_y = mouth_geometry(face, landmarks)
    layer = rgb.copy()

    # Device body below the mouthpiece, in front of the chin.
    dark = rng.random() < 0.5
    body = tuple(int(v) for v in (rng.integers(25, 80, 3) if dark else rng.integers(170, 235, 3)))
    bw = mw * rng.uniform(1.1, 1.5)
    top = cy + 0.15 * mw
    cv2.rectangle(layer, (int(cx - bw / 2), int(top)), (int(cx + bw / 2), int(chin_y + mw)), body, -1)

    # The mouthpiece: a light tube seen end-on, covering the lips.
    tube = tuple(int(v) for v in rng.integers(200, 256, 3))
    axes = (max(1, int(mw * rng.uniform(0.38, 0.5))), max(1, int(mw * rng.uniform(0.22, 0.3))))
    cv2.ellipse(layer, (int(cx), int(cy)), axes, 0, 0, 360, tube, -1)
    hole = tuple(int(v * 0.35) for v in tube)
    cv2.ellipse(layer, (int(cx), int(cy)), (max(1, axes[0] // 2), max(1, axes[1] // 2)), 0, 0, 360, hole, -1)

    # A hand holding the device on one side: skin tone taken from the cheeks, slightly darker.
    cheek = _cheek_pixels(rgb, face)
    tone = cheek.reshape(-1, 3).mean(axis=0) if cheek.size else np.array([180.0, 140.0, 120.0])
    hand = tuple(int(v) for v in np.clip(tone * rng.uniform(0.8, 0.95), 0, 255))
    side = 1 if rng.random() < 0.5 else -1
    hx = int(cx + side * bw * 0.55)
    cv2.ellipse(
        layer, (hx, int(chin_y)), (max(1, int(mw * 0.35)), max(1, int(mw * 0.55))), 0, 0, 360, hand, -1
    )

    out = rgb.copy()
    m = region.mask(rgb.shape)
    out[m] = layer[m]
    return out, region


def _cheek_pixels(rgb: RGB, face: FaceBox) -> RGB:
    h, w = rgb.shape[:2]
    y0 = max(0, int(face.top + _CHEEK_ROWS[0] * face.height))
    y1 = min(h, int(face.top + _CHEEK_ROWS[1] * face.height))
    patches = []
    for a, b in _CHEEK_COLS:
        x0 = max(0, int(face.left + a * face.width))
        x1 = min(w, int(face.left + b * face.width))
        if x1 > x0 and y1 > y0:
            patches.append(rgb[y0:y1, x0:x1].reshape(-1, 3))
    if not patches:
        return np.zeros((0, 3), dtype=np.uint8)
    return np.concatenate(patches)


def mouthpiece_fraction(rgb: RGB, face: FaceBox, landmarks: Landmarks | None, skin_sigma: float) -> float:
    """Fraction (0..1) of lower-face pixels whose Lab colour is > `skin_sigma` std from the cheek colour.

    High means something that is not skin covers the mouth (a mouthpiece). NaN when the face is too
    small or off-image to sample cheeks and mouth.
    """
    cheek = _cheek_pixels(rgb, face)
    region = lips_region(face, landmarks, rgb.shape)
    if cheek.shape[0] < 16 or region.x1 - region.x0 < 4 or region.y1 - region.y0 < 4:
        return float("nan")
    lab_cheek = cv2.cvtColor(cheek.reshape(1, -1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    mu = lab_cheek.mean(axis=0)
    sd = np.maximum(lab_cheek.std(axis=0), _STD_FLOOR)
    patch = rgb[region.y0 : region.y1, region.x0 : region.x1]
    lab = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    z = np.abs(lab - mu) / sd
    return float((z.max(axis=1) > skin_sigma).mean())
