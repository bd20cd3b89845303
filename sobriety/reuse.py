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
Each alignment is refined to sub-pixel accuracy by ECC, ~75% of a comparison's CPU; with
`refine_at_or_below` an alignment whose unrefined residual is already far above the same-moment range is
not refined (a refinement only corrects a sub-pixel misalignment; it cannot make a different moment alike).
Pure compute (OpenCV + numpy), no face engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from identity.geometry import FaceBox
from sobriety.occlusion import RGB

FINGERPRINT_WIDTH_PX = 320  # grey copy width; height keeps the aspect ratio
_BLUR_SIGMA_PX = 1.2  # at fingerprint scale: removes JPEG blocking and resampling noise, keeps motion
_ORB_FEATURES = 1000
_MIN_INLIERS = 12
_RANSAC_PX = 2.0
_MIN_OVERLAP = 0.5  # share of the new photo the aligned earlier photo must cover
_FACE_PAD = 0.15  # face box grown by this share of its size on each side
_RESIDUAL_PERCENTILE = 90.0
_ECC_ITERATIONS = 20
_CLIP_LOW, _CLIP_HIGH = 3, 252

Grey = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class ReuseFingerprint:
    """A grey copy of a photo (H, W uint8, `FINGERPRINT_WIDTH_PX` wide) and its face box in its pixels.

    `clipped` (same shape, uint8 0/255) marks pixels where any colour channel of the photo is clipped
    (near 0 or 255): there a brightness edit is not linear, so they are left out of the comparison.
    """

    grey: Grey
    face: tuple[int, int, int, int] | None  # left, top, right, bottom in `grey` pixels
    clipped: Grey | None = None

    def to_bytes(self) -> bytes:
        """Lossless PNG (grey in channel 0, clipped mask in channel 1) after a face-box header line."""
        clip = self.clipped if self.clipped is not None else np.zeros_like(self.grey)
        ok, png = cv2.imencode(".png", np.dstack([self.grey, clip, np.zeros_like(clip)]))
        if not ok:
            raise ValueError("cannot encode fingerprint")
        head = ",".join(str(v) for v in self.face) if self.face else ""
        return head.encode() + b"\n" + png.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReuseFingerprint | None:
        """Inverse of `to_bytes`; None when the bytes are not a fingerprint."""
        head, _, png = data.partition(b"\n")
        arr = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None or arr.ndim != 3:
            return None
        try:
            vals = [int(v) for v in head.decode().split(",")] if head else []
        except ValueError:
            return None
        face = (vals[0], vals[1], vals[2], vals[3]) if len(vals) == 4 else None
        return cls(np.ascontiguousarray(arr[..., 0]), face, np.ascontiguousarray(arr[..., 1]))


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
    clip = (
        np.any((rgb <= _CLIP_LOW) | (rgb >= _CLIP_HIGH), axis=2)
        if rgb.ndim == 3
        else np.zeros_like(grey, bool)
    )
    # A small pixel is clipped when any photo pixel under it is (max over the area it covers).
    k = max(1, int(np.ceil(1 / scale)))
    clip = cv2.dilate(clip.astype(np.uint8) * 255, np.ones((k, k), np.uint8))
    clip_small = cv2.resize(clip, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
    box = None
    if face is not None:
        box = (
            int(face.left * scale),
            int(face.top * scale),
            int(np.ceil(face.right * scale)),
            int(np.ceil(face.bottom * scale)),
        )
    # No clipped pixel (the usual case): no mask to carry between processes.
    mask = np.ascontiguousarray(clip_small, dtype=np.uint8) if clip_small.any() else None
    return ReuseFingerprint(np.ascontiguousarray(small, dtype=np.uint8), box, mask)


@dataclass(frozen=True, slots=True)
class ReuseComparison:
    """Outcome of `compare`: residual (grey levels, lower = more alike), how it was aligned, and overlap.

    `refined` is False when the winning alignment's residual is the unrefined one (see `compare`).
    """

    residual: float
    alignment: str  # "keypoints" or "fixed_camera"
    inliers: int
    overlap: float
    region: str  # "face" or "whole"
    refined: bool = True


def _keypoint_transform(a: Grey, b: Grey) -> tuple[npt.NDArray[np.float64] | None, int]:
    """2x3 similarity transform mapping b's pixels onto a's, from ORB matches (None if too few)."""
    orb = cv2.ORB.create(nfeatures=_ORB_FEATURES)
    ka, da = orb.detectAndCompute(a, None)
    kb, db = orb.detectAndCompute(b, None)
    if da is None or db is None or len(ka) < _MIN_INLIERS or len(kb) < _MIN_INLIERS:
        return None, 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(db, da)
    if len(matches) < _MIN_INLIERS:
        return None, 0
    src = np.array([kb[m.queryIdx].pt for m in matches], dtype=np.float32).reshape(-1, 1, 2)
    dst = np.array([ka[m.trainIdx].pt for m in matches], dtype=np.float32).reshape(-1, 1, 2)
    m, inl = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX, maxIters=2000, confidence=0.995
    )
    n = int(inl.sum()) if inl is not None else 0
    if m is None or n < _MIN_INLIERS:
        return None, n
    return np.asarray(m, dtype=np.float64), n


def _refine(a: Grey, b: Grey, m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Sub-pixel refinement of a b->a affine transform by ECC on blurred copies (unchanged if it fails)."""
    warp = m.astype(np.float32)
    try:
        # ECC maps template coordinates (a) to input coordinates (b): refine the inverse, invert back.
        inv = cv2.invertAffineTransform(warp)
        _, inv = cv2.findTransformECC(
            a,
            b,
            inv,
            cv2.MOTION_AFFINE,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, _ECC_ITERATIONS, 1e-4),
            None,
            5,
        )
        return np.asarray(cv2.invertAffineTransform(inv), dtype=np.float64)
    except cv2.error:
        return m


def _residual(
    new: ReuseFingerprint, earlier: ReuseFingerprint, m: npt.NDArray[np.float64]
) -> tuple[float, float, str]:
    a, b, face = new.grey, earlier.grey, new.face
    h, w = a.shape
    warped = cv2.warpAffine(b, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cover = cv2.warpAffine(np.full(b.shape, 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    valid = cv2.erode(cover, np.ones((5, 5), np.uint8)) > 0
    overlap = float(valid.mean())
    if overlap < _MIN_OVERLAP:
        return float("inf"), overlap, "whole"
    # Pixels clipped in either photo (a brightness edit pushes shadows to 0 or highlights to 255) carry
    # no information about the moment: they are left out, with the blur's reach around them.
    clipped = (a <= _CLIP_LOW) | (a >= _CLIP_HIGH) | (warped <= _CLIP_LOW) | (warped >= _CLIP_HIGH)
    if new.clipped is not None:
        clipped |= new.clipped > 0
    if earlier.clipped is not None:
        clipped |= cv2.warpAffine(earlier.clipped, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    clipped = cv2.dilate(clipped.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    valid &= ~clipped
    if valid.sum() < 100:
        return float("inf"), overlap, "whole"
    fa = cv2.GaussianBlur(a.astype(np.float32), (0, 0), _BLUR_SIGMA_PX)
    fb = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), _BLUR_SIGMA_PX)
    # Gain and offset (brightness/contrast edits, auto-exposure) fitted on the usable pixels.
    # Least squares in closed form (centred): the line np.polyfit(x, y, 1) fits, at a third of its CPU.
    x, y = fb[valid].astype(np.float64), fa[valid].astype(np.float64)
    dx = x - x.mean()
    var = float(dx @ dx)
    if x.std() > 1e-3:
        gain = float(dx @ (y - y.mean())) / var
        offset = float(y.mean()) - gain * float(x.mean())
    else:
        gain, offset = 1.0, float(y.mean() - x.mean())
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


def compare(
    new: ReuseFingerprint,
    earlier: ReuseFingerprint,
    stop_at_or_below: float | None = None,
    refine_at_or_below: float | None = None,
) -> ReuseComparison:
    """How alike the new photo and an earlier one are once aligned (see the module docstring).

    Two alignments are tried, the smaller residual wins: the fixed camera (the earlier photo scaled to
    the new one's width) first, then ORB keypoints; with `stop_at_or_below` the keypoint step is skipped
    when the fixed-camera residual is already that small (the answer "same moment" cannot change). With
    `refine_at_or_below` an alignment is refined by ECC only when its unrefined residual is at or below
    that value; above it the unrefined residual stands (`refined=False`). None: every alignment is refined.
    """
    a, b = new.grey, earlier.grey
    s = a.shape[1] / b.shape[1]

    def judged(m: npt.NDArray[np.float64]) -> tuple[float, float, str, bool]:
        if refine_at_or_below is not None:
            r, overlap, region = _residual(new, earlier, m)
            if r > refine_at_or_below:
                return r, overlap, region, False
        return (*_residual(new, earlier, _refine(a, b, m)), True)

    r, overlap, region, refined = judged(np.array([[s, 0.0, 0.0], [0.0, s, 0.0]]))
    best = ReuseComparison(r, "fixed_camera", 0, overlap, region, refined)
    if stop_at_or_below is not None and r <= stop_at_or_below:
        return best
    m, inliers = _keypoint_transform(a, b)
    if m is not None:
        r, overlap, region, refined = judged(m)
        if r < best.residual:
            best = ReuseComparison(r, "keypoints", inliers, overlap, region, refined)
    return best
