"""Re-sent photo or new moment? A pixel-level check behind the pHash look-up of breath-photo reuse.

A home station has a fixed camera, one room and one face, so two honest tests days apart give photos
whose pHashes are as close as a re-sent copy's (Hamming 2-8). What differs is the moment: a re-sent photo
(re-encoded, cropped a few %, scaled, brightness-shifted) is the same pixels up to a geometric and a
linear photometric transform plus compression noise, while a new moment has a person who moved, blinked,
breathed: after aligning the two photos, the face region differs well beyond compression noise.

`fingerprint(rgb, face_box)` keeps a small grey copy (`FINGERPRINT_WIDTH_PX` wide) and the face region.
`compare(new, earlier)` aligns the earlier photo onto the new one (ORB keypoints + RANSAC similarity
transform; the identity transform for a fixed camera is always tried as well), fits gain and offset,
and returns the residual on the new photo's face region: the 90th percentile of the absolute grey-level
difference after a light blur (`ReuseComparison.residual`, grey levels 0-255). Small = same moment.
Pure compute (OpenCV + numpy), no face engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from sobriety.occlusion import RGB, FaceBox

FINGERPRINT_WIDTH_PX = 320  # grey copy width; height keeps the aspect ratio
_BLUR_SIGMA_PX = 1.2  # at fingerprint scale: removes JPEG blocking and resampling noise, keeps motion
_ORB_FEATURES = 1000
_MIN_INLIERS = 12
_RANSAC_PX = 2.0
_MIN_OVERLAP = 0.5  # share of the new photo the aligned earlier photo must cover
_FACE_PAD = 0.15  # face box grown by this share of its size on each side
_RESIDUAL_PERCENTILE = 90.0

Grey = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class ReuseFingerprint:
    """A grey copy of a photo (H, W uint8, `FINGERPRINT_WIDTH_PX` wide) and its face box in its pixels."""

    grey: Grey
    face: tuple[int, int, int, int] | None  # left, top, right, bottom in `grey` pixels

    def to_bytes(self) -> bytes:
        """PNG bytes (lossless) with the face box in a text chunk-free header line: for storage."""
        ok, png = cv2.imencode(".png", self.grey)
        if not ok:
            raise ValueError("cannot encode fingerprint")
        head = ",".join(str(v) for v in self.face) if self.face else ""
        return head.encode() + b"\n" + png.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReuseFingerprint | None:
        """Inverse of `to_bytes`; None when the bytes are not a fingerprint."""
        head, _, png = data.partition(b"\n")
        grey = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            return None
        try:
            vals = [int(v) for v in head.decode().split(",")] if head else []
        except ValueError:
            return None
        face = (vals[0], vals[1], vals[2], vals[3]) if len(vals) == 4 else None
        return cls(np.ascontiguousarray(grey, dtype=np.uint8), face)


def fingerprint(rgb: RGB, face: FaceBox | None = None) -> ReuseFingerprint:
    """Fingerprint of an HxWx3 uint8 RGB photo; `face` in the photo's pixels (None: whole photo)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    h, w = grey.shape[:2]
    scale = FINGERPRINT_WIDTH_PX / w
    small = cv2.resize(
        grey,
        (FINGERPRINT_WIDTH_PX, max(1, int(round(h * scale)))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    box = None
    if face is not None:
        box = (
            int(face.left * scale),
            int(face.top * scale),
            int(np.ceil(face.right * scale)),
            int(np.ceil(face.bottom * scale)),
        )
    return ReuseFingerprint(np.ascontiguousarray(small, dtype=np.uint8), box)


@dataclass(frozen=True, slots=True)
class ReuseComparison:
    """Outcome of `compare`: residual (grey levels, lower = more alike), how it was aligned, and overlap."""

    residual: float
    alignment: str  # "keypoints" or "fixed_camera"
    inliers: int
    overlap: float
    region: str  # "face" or "whole"


def _keypoint_transform(a: Grey, b: Grey) -> tuple[npt.NDArray[np.float64] | None, int]:
    """2x3 similarity transform mapping b's pixels onto a's, from ORB matches (None if too few)."""
    orb = cv2.ORB_create(nfeatures=_ORB_FEATURES)
    ka, da = orb.detectAndCompute(a, None)
    kb, db = orb.detectAndCompute(b, None)
    if da is None or db is None or len(ka) < _MIN_INLIERS or len(kb) < _MIN_INLIERS:
        return None, 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(db, da)
    if len(matches) < _MIN_INLIERS:
        return None, 0
    src = np.float32([kb[m.queryIdx].pt for m in matches]).reshape(-1, 1, 2)
    dst = np.float32([ka[m.trainIdx].pt for m in matches]).reshape(-1, 1, 2)
    m, inl = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX, maxIters=2000, confidence=0.995
    )
    n = int(inl.sum()) if inl is not None else 0
    if m is None or n < _MIN_INLIERS:
        return None, n
    return np.asarray(m, dtype=np.float64), n


def _residual(
    a: Grey, b: Grey, m: npt.NDArray[np.float64], face: tuple[int, int, int, int] | None
) -> tuple[float, float, str]:
    h, w = a.shape
    warped = cv2.warpAffine(b, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cover = cv2.warpAffine(
        np.full(b.shape, 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0
    )
    valid = cv2.erode(cover, np.ones((5, 5), np.uint8)) > 0
    overlap = float(valid.mean())
    if overlap < _MIN_OVERLAP:
        return float("inf"), overlap, "whole"
    fa = cv2.GaussianBlur(a.astype(np.float32), (0, 0), _BLUR_SIGMA_PX)
    fb = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), _BLUR_SIGMA_PX)
    # Gain and offset (brightness/contrast edits, auto-exposure) fitted where neither image clips.
    fit = valid & (fa > 4) & (fa < 251) & (fb > 4) & (fb < 251)
    if fit.sum() < 100:
        fit = valid
    x, y = fb[fit].astype(np.float64), fa[fit].astype(np.float64)
    gain, offset = np.polyfit(x, y, 1) if x.std() > 1e-3 else (1.0, float(y.mean() - x.mean()))
    diff = np.abs(fa - (gain * fb + offset))
    region = valid
    name = "whole"
    if face is not None:
        left, top, right, bottom = face
        px, py = int((right - left) * _FACE_PAD), int((bottom - top) * _FACE_PAD)
        box = np.zeros_like(valid)
        box[max(0, top - py) : min(h, bottom + py), max(0, left - px) : min(w, right + px)] = True
        if (box & valid).sum() >= 100:
            region, name = box & valid, "face"
    return float(np.percentile(diff[region], _RESIDUAL_PERCENTILE)), overlap, name


def compare(new: ReuseFingerprint, earlier: ReuseFingerprint) -> ReuseComparison:
    """How alike the new photo and an earlier one are once aligned (see the module docstring)."""
    a, b = new.grey, earlier.grey
    candidates: list[tuple[str, npt.NDArray[np.float64], int]] = []
    m, inliers = _keypoint_transform(a, b)
    if m is not None:
        candidates.append(("keypoints", m, inliers))
    # Fixed camera: the earlier photo scaled to the new one's width, no shift.
    s = a.shape[1] / b.shape[1]
    candidates.append(("fixed_camera", np.array([[s, 0.0, 0.0], [0.0, s, 0.0]]), 0))
    best: ReuseComparison | None = None
    for name, mat, n in candidates:
        r, overlap, region = _residual(a, b, mat, new.face)
        if best is None or r < best.residual:
            best = ReuseComparison(r, name, n, overlap, region)
    assert best is not None
    return best
