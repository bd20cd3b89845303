"""Breath-photo validation: quality, one face, identity under the mouthpiece, anti-spoofing, reuse.

Two steps so the heavy part can run in a worker process and the database part in the service:

* `analyse_breath_photos(photos, gallery, face, settings)` - pure compute (face engine, pHash, quality,
  mouthpiece heuristic); returns picklable `PhotoAnalysis` values.
* `judge_breath_photos(analyses, index, test_id, settings)` - looks each pHash up in the `PhotoIndex` of
  earlier tests, adds this test's photos to it and summarises everything into the `CheckResult`s that go
  to the verdict.

`validate_breath_photos` does both. Reuse: a byte-identical photo is FAIL; with `earlier` (a callable giving
an earlier photo's stored bytes by id) every pHash candidate is aligned and compared pixel by pixel
(`sobriety.reuse`): a re-sent copy (re-encoded, cropped, scaled, brightness-shifted) is INCONCLUSIVE
`photo_resent`, a new moment at the same fixed station camera PASSes; without `earlier` a pHash near
duplicate stays INCONCLUSIVE. The mouthpiece heuristic is report-only unless
`SobrietySettings.mouthpiece_in_verdict`. Ambiguity (no face, several faces, poor quality, identity between
the accept and reject distances, a near-duplicate photo, mouthpiece not visible) is INCONCLUSIVE, which
the verdict sends to review. FAIL is kept for clear evidence: the same photo file seen in an earlier test,
or every judged photo clearly another person.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.geometry import FaceBox
from sobriety.config import SobrietySettings
from sobriety.occlusion import RGB, Landmarks, mouthpiece_fraction
from sobriety.reuse import ReuseComparison, ReuseFingerprint, compare, fingerprint

_PHASH_SIDE = 32  # image is reduced to 32x32 before the DCT
_PHASH_BLOCK = 8  # the 8x8 lowest frequencies give 64 bits
_U64 = 1 << 64


def phash(rgb: RGB) -> int:
    """64-bit DCT perceptual hash of an HxWx3 uint8 RGB image (unsigned int, row-major, MSB first).

    Luma -> 32x32 (area resampling) -> 2-D DCT -> the 8x8 lowest-frequency block; each bit says whether a
    coefficient is above the block's median (DC excluded from the median, as in pHash).
    """
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(grey, (_PHASH_SIDE, _PHASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    block = cv2.dct(small)[:_PHASH_BLOCK, :_PHASH_BLOCK].flatten()
    median = float(np.median(block[1:]))
    value = 0
    for bit in block > median:
        value = (value << 1) | int(bit)
    return value


# A global pHash moves ~10 bits when 4% is cropped off each side, as far as two different LFW photos of one
# person. So each photo also gets hashes of crops (centred at two scales, and anchored at each corner):
# a cropped copy's global hash lines up with one of the original's crops, and vice versa.
PHASH_CROPS = (
    (1.0, 0.5, 0.5),
    (0.92, 0.5, 0.5),
    (0.84, 0.5, 0.5),
    (0.92, 0.0, 0.0),
    (0.92, 1.0, 0.0),
    (0.92, 0.0, 1.0),
    (0.92, 1.0, 1.0),
)  # (fraction of each side kept, horizontal anchor 0=left..1=right, vertical anchor 0=top..1=bottom)


def phash_set(rgb: RGB) -> tuple[int, ...]:
    """pHashes of the whole image (first) and of its crops in `PHASH_CROPS`."""
    h, w = rgb.shape[:2]
    out = []
    for s, ax, ay in PHASH_CROPS:
        ch, cw = int(round(h * s)), int(round(w * s))
        y0, x0 = int(round((h - ch) * ay)), int(round((w - cw) * ax))
        out.append(phash(np.ascontiguousarray(rgb[y0 : y0 + ch, x0 : x0 + cw])))
    return tuple(out)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


def set_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Distance of two `phash_set`s: the smallest Hamming distance of either whole-image hash to any hash
    of the other set (a crop of one photo against the other photo as sent; crop-to-crop is not compared,
    which would only add chances of a false match)."""
    return min(min(hamming(a[0], y) for y in b), min(hamming(x, b[0]) for x in a))


def phash_hex(values: Sequence[int]) -> str:
    """The stored form of a `phash_set`: 16 lowercase hex digits per hash, concatenated (112 chars)."""
    return "".join(f"{v % _U64:016x}" for v in values)


def phash_from_hex(text: str) -> tuple[int, ...]:
    """Inverse of `phash_hex`."""
    return tuple(int(text[i : i + 16], 16) for i in range(0, len(text), 16))


@dataclass(frozen=True, slots=True)
class PhotoMatch:
    """An earlier photo close to a new one: its id, test, pHash distance, and whether the bytes are equal."""

    photo_id: str
    test_id: str
    distance: int
    exact: bool


class PhotoIndex(Protocol):
    """Fingerprints of every breath photo ever received (the service keeps them in a table).

    A SQL implementation can keep `phash_hex(hashes)` (112 hex chars) per photo, scan the rows and compare
    with `set_distance` in Python (a few microseconds per row).
    """

    def find(self, hashes: tuple[int, ...], sha256: str, max_distance: int) -> list[PhotoMatch]:
        """Earlier photos within `max_distance` bits (`set_distance`) of `hashes`, or with the same sha256."""
        ...

    def add(self, photo_id: str, test_id: str, hashes: tuple[int, ...], sha256: str) -> None:
        """Record a photo of a test (`hashes` is its `phash_set`)."""
        ...


@dataclass
class InMemoryPhotoIndex:
    """PhotoIndex for tests and the benchmark: a linear scan."""

    rows: list[tuple[str, str, tuple[int, ...], str]] = field(default_factory=list)

    def find(self, hashes: tuple[int, ...], sha256: str, max_distance: int) -> list[PhotoMatch]:
        """Earlier photos within `max_distance` bits (`set_distance`) of `hashes`, or with the same sha256."""
        out = []
        for photo_id, test_id, h, digest in self.rows:
            d = set_distance(h, hashes)
            if d <= max_distance or digest == sha256:
                out.append(PhotoMatch(photo_id, test_id, d, digest == sha256))
        return sorted(out, key=lambda m: (not m.exact, m.distance))

    def add(self, photo_id: str, test_id: str, hashes: tuple[int, ...], sha256: str) -> None:
        """Record a photo of a test (`hashes` is its `phash_set`)."""
        self.rows.append((photo_id, test_id, hashes, sha256))


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One detected face: box in pixels, optional (68, 2) landmarks (x, y pixels, iBUG order)."""

    box: FaceBox
    landmarks: Landmarks | None = None
    score: float | None = None


class FacePort(Protocol):
    """What breath-photo validation needs from a face engine (the service plugs the face worker in)."""

    @property
    def model(self) -> ModelStamp | None:
        """Stamp of the embedding model that produces distances."""
        ...

    def analyse(self, rgb: RGB) -> list[FaceObservation]:
        """Every face in an HxWx3 uint8 RGB image."""
        ...

    def distance(self, gallery: Sequence[npt.NDArray[np.float64]], rgb: RGB, face: FaceObservation) -> float:
        """Smallest embedding distance (the engine's unit, dlib: Euclidean) from this face to the gallery."""
        ...

    def antispoof(self, rgb: RGB, face: FaceObservation) -> CheckResult | None:
        """A PAD check of this face, or None when no anti-spoofing model is available."""
        ...


@dataclass(frozen=True, slots=True)
class BreathPhoto:
    """One uploaded photo: id (artifact id), decoded HxWx3 uint8 RGB, sha256 of the file bytes."""

    photo_id: str
    rgb: RGB
    sha256: str

    @classmethod
    def from_jpeg(cls, photo_id: str, data: bytes) -> BreathPhoto | None:
        """Decode JPEG/PNG bytes; None when they are not an image."""
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if arr is None:
            return None
        rgb = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        return cls(photo_id, np.ascontiguousarray(rgb, dtype=np.uint8), hashlib.sha256(data).hexdigest())


@dataclass(frozen=True, slots=True)
class PhotoAnalysis:
    """Everything computed about one photo; `checks` are per-photo results in the order they were made."""

    photo_id: str
    sha256: str
    phash: tuple[int, ...]
    checks: list[CheckResult]
    identity: CheckResult | None = None
    mouthpiece: CheckResult | None = None
    pad: CheckResult | None = None
    fingerprint: ReuseFingerprint | None = None  # sobriety.reuse: tells a re-sent copy from a new moment


def _photo(outcome: Outcome, code: str, message: str, **details: Any) -> CheckResult:
    return CheckResult(CheckKind.BREATH_PHOTO, outcome, code, message, details=dict(details))


def face_sharpness(grey_face: npt.NDArray[np.uint8], width_px: int) -> float:
    """Laplacian variance (grey levels^2) of the upper half of a grey face crop scaled to width_px wide.

    The mouthpiece covers the lower face, so only the eyes and brows count. Scaling first makes the
    figure a property of the face, not of the camera distance: the same face detail gives the same value
    at 100 or 300 px.
    """
    h, w = grey_face.shape[:2]
    if h < 2 or w < 2:
        return 0.0
    scale = width_px / w
    size = (width_px, max(2, int(round(h * scale))))
    g = cv2.resize(grey_face, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    upper = g[: max(1, g.shape[0] // 2)]
    return float(cv2.Laplacian(upper, cv2.CV_64F).var())


def photo_quality(rgb: RGB, face: FaceObservation, settings: SobrietySettings) -> CheckResult:
    """Face size, brightness (mean luma 0-255 of the box) and sharpness (Laplacian variance, upper face)."""
    b = face.box
    h, w = rgb.shape[:2]
    side = min(b.width, b.height)
    if side < settings.photo_min_face_px:
        return CheckResult(
            CheckKind.FACE_QUALITY,
            Outcome.INCONCLUSIVE,
            "face_too_small",
            f"Face is {side} px; at least {settings.photo_min_face_px} px are needed.",
            score=float(side),
            threshold=float(settings.photo_min_face_px),
        )
    crop = rgb[max(0, b.top) : min(h, b.bottom), max(0, b.left) : min(w, b.right)]
    if crop.size == 0:
        return CheckResult(
            CheckKind.FACE_QUALITY, Outcome.INCONCLUSIVE, "face_off_image", "Face is off the image."
        )
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    luma = float(grey.mean())
    if luma < settings.photo_min_brightness:
        return CheckResult(
            CheckKind.FACE_QUALITY,
            Outcome.INCONCLUSIVE,
            "too_dark",
            "Face is too dark.",
            score=luma,
            threshold=settings.photo_min_brightness,
        )
    if luma > settings.photo_max_brightness:
        return CheckResult(
            CheckKind.FACE_QUALITY,
            Outcome.INCONCLUSIVE,
            "too_bright",
            "Face is overexposed.",
            score=luma,
            threshold=settings.photo_max_brightness,
        )
    sharp = face_sharpness(grey, settings.photo_sharpness_width_px)
    if sharp < settings.photo_min_sharpness:
        return CheckResult(
            CheckKind.FACE_QUALITY,
            Outcome.INCONCLUSIVE,
            "too_blurred",
            "Face is blurred.",
            score=sharp,
            threshold=settings.photo_min_sharpness,
        )
    return CheckResult(
        CheckKind.FACE_QUALITY,
        Outcome.PASS,
        "quality_ok",
        "Photo quality is sufficient.",
        score=sharp,
        details={"luma": luma, "face_px": side},
    )


def identity_check(distance: float, model: ModelStamp | None, settings: SobrietySettings) -> CheckResult:
    """Occluded-probe identity from an embedding distance: PASS <= accept < INCONCLUSIVE <= reject < FAIL."""
    details = {"score_unit": "embedding distance", "reject_distance": settings.occluded_reject_distance}
    if distance <= settings.occluded_accept_distance:
        return CheckResult(
            CheckKind.FACE,
            Outcome.PASS,
            "match",
            "Face matches the enrolled person.",
            score=distance,
            threshold=settings.occluded_accept_distance,
            model=model,
            details=details,
        )
    if distance > settings.occluded_reject_distance:
        return CheckResult(
            CheckKind.FACE,
            Outcome.FAIL,
            "mismatch",
            "Face does not match the enrolled person.",
            score=distance,
            threshold=settings.occluded_reject_distance,
            model=model,
            details=details,
        )
    return CheckResult(
        CheckKind.FACE,
        Outcome.INCONCLUSIVE,
        "uncertain_match",
        "Face match is uncertain with the mouthpiece covering the lower face.",
        score=distance,
        threshold=settings.occluded_accept_distance,
        model=model,
        details=details,
    )


def mouthpiece_check(rgb: RGB, face: FaceObservation, settings: SobrietySettings) -> CheckResult:
    """Heuristic device/mouthpiece visibility (see `sobriety.occlusion`): PASS or INCONCLUSIVE, never FAIL."""
    frac = mouthpiece_fraction(rgb, face.box, face.landmarks, settings.mouthpiece_skin_sigma)
    details = {"score_unit": "fraction of lower-face pixels unlike skin", "method": "heuristic"}
    if not np.isfinite(frac):
        return _photo(
            Outcome.INCONCLUSIVE,
            "mouthpiece_unknown",
            "Could not judge whether the mouthpiece is visible.",
            **details,
        )
    if frac >= settings.mouthpiece_min_fraction:
        return CheckResult(
            CheckKind.BREATH_PHOTO,
            Outcome.PASS,
            "mouthpiece_visible",
            "Something that is not skin covers the mouth (mouthpiece likely visible).",
            score=frac,
            threshold=settings.mouthpiece_min_fraction,
            details=details,
        )
    return CheckResult(
        CheckKind.BREATH_PHOTO,
        Outcome.INCONCLUSIVE,
        "mouthpiece_not_visible",
        "No mouthpiece is visible over the mouth.",
        score=frac,
        threshold=settings.mouthpiece_min_fraction,
        details=details,
    )


def analyse_breath_photo(
    photo: BreathPhoto, gallery: Sequence[npt.NDArray[np.float64]], face: FacePort, settings: SobrietySettings
) -> PhotoAnalysis:
    """All per-photo checks of one breath photo: exactly one face, quality, mouthpiece, identity, PAD."""
    value = phash_set(photo.rgb)
    checks: list[CheckResult] = []

    def done(obs: FaceObservation | None = None, **found: CheckResult | None) -> PhotoAnalysis:
        fp = fingerprint(photo.rgb, obs.box if obs is not None else None)
        return PhotoAnalysis(photo.photo_id, photo.sha256, value, checks, fingerprint=fp, **found)

    try:
        faces = face.analyse(photo.rgb)
    except Exception as exc:  # an engine failure is a technical outcome, not a crash of the test
        checks.append(_photo(Outcome.TECHNICAL, "engine_error", f"Face engine failed: {type(exc).__name__}"))
        return done()
    if not faces:
        checks.append(_photo(Outcome.INCONCLUSIVE, "no_face", "No face found in the photo."))
        return done()
    if len(faces) > 1:
        checks.append(
            _photo(
                Outcome.INCONCLUSIVE,
                "several_faces",
                f"{len(faces)} faces in the photo; exactly one person must take the test.",
                faces=len(faces),
            )
        )
        return done()
    obs = faces[0]
    checks.append(_photo(Outcome.PASS, "one_face", "Exactly one face."))
    quality = photo_quality(photo.rgb, obs, settings)
    checks.append(quality)
    if not quality.passed:
        return done(obs)
    mouthpiece = mouthpiece_check(photo.rgb, obs, settings)
    checks.append(mouthpiece)
    try:
        ident = identity_check(face.distance(gallery, photo.rgb, obs), face.model, settings)
        pad = face.antispoof(photo.rgb, obs)
    except Exception as exc:
        checks.append(_photo(Outcome.TECHNICAL, "engine_error", f"Face engine failed: {type(exc).__name__}"))
        return done(obs, mouthpiece=mouthpiece)
    checks.append(ident)
    if pad is not None:
        checks.append(pad)
    return done(obs, identity=ident, mouthpiece=mouthpiece, pad=pad)


def analyse_breath_photos(
    photos: Sequence[BreathPhoto],
    gallery: Sequence[npt.NDArray[np.float64]],
    face: FacePort,
    settings: SobrietySettings,
) -> list[PhotoAnalysis]:
    """`analyse_breath_photo` for each photo (the part to run in a worker process)."""
    return [analyse_breath_photo(p, gallery, face, settings) for p in photos]


EarlierPhoto = Callable[[str], bytes | None]
"""Bytes of an earlier breath photo by its photo (artifact) id, or None when it cannot be read."""


def _earlier_fingerprint(
    photo_id: str, earlier: EarlierPhoto, cache: dict[str, ReuseFingerprint | None]
) -> ReuseFingerprint | None:
    if photo_id not in cache:
        data = earlier(photo_id)
        old = BreathPhoto.from_jpeg(photo_id, data) if data else None
        cache[photo_id] = fingerprint(old.rgb) if old is not None else None
    return cache[photo_id]


def _reuse_check(
    analyses: Sequence[PhotoAnalysis],
    index: PhotoIndex,
    settings: SobrietySettings,
    earlier: EarlierPhoto | None = None,
    comparisons: dict[tuple[str, str], ReuseComparison] | None = None,
) -> CheckResult:
    """Exact copy -> FAIL; re-sent copy (same moment) -> INCONCLUSIVE; a new moment in the same room -> PASS.

    Without `earlier` (no access to earlier photos) every pHash near duplicate is INCONCLUSIVE. With it,
    pHash candidates (up to `reuse_candidate_max_hamming` bits, the closest `reuse_max_comparisons`) are
    aligned with the new photo and compared pixel by pixel (`sobriety.reuse.compare`): a residual at or
    below `reuse_same_moment_max_residual` is a re-sent photo; above it the photos are different moments.
    A pHash near duplicate whose earlier photo cannot be read stays INCONCLUSIVE. `comparisons` memoises
    the pixel comparisons by (photo id, earlier photo id), for a caller that judges the same photos twice.
    """
    exact: list[dict[str, Any]] = []
    near: list[dict[str, Any]] = []
    compared: list[dict[str, Any]] = []
    cache: dict[str, ReuseFingerprint | None] = {}
    radius = settings.phash_max_hamming
    if earlier is not None:
        radius = max(radius, settings.reuse_candidate_max_hamming)
    for a in analyses:
        matches = index.find(a.phash, a.sha256, radius)
        checked = 0
        resent_found = False
        for m in matches:
            row: dict[str, Any] = {
                "photo_id": a.photo_id,
                "earlier_photo_id": m.photo_id,
                "earlier_test_id": m.test_id,
                "distance": m.distance,
            }
            if m.exact:
                exact.append(row)
                continue
            if resent_found:
                continue  # this photo is already a copy: the check's outcome cannot change
            key = (a.photo_id, m.photo_id)
            cmp = None
            old = None
            if earlier is not None and a.fingerprint is not None and checked < settings.reuse_max_comparisons:
                checked += 1
                # A comparison already made (memoised) needs neither the earlier photo nor its fingerprint.
                cmp = comparisons.get(key) if comparisons is not None else None
                if cmp is None:
                    old = _earlier_fingerprint(m.photo_id, earlier, cache)
            if cmp is None:
                if old is None or a.fingerprint is None:
                    if m.distance <= settings.phash_max_hamming:
                        near.append({**row, "residual": None, "reason": "earlier photo not compared"})
                    continue
                cmp = compare(
                    a.fingerprint,
                    old,
                    settings.reuse_same_moment_max_residual,
                    settings.reuse_refine_max_residual,
                )
                if comparisons is not None:
                    comparisons[key] = cmp
            row.update(
                residual=round(cmp.residual, 3) if np.isfinite(cmp.residual) else None,
                alignment=cmp.alignment,
                inliers=cmp.inliers,
                region=cmp.region,
                refined=cmp.refined,
            )
            compared.append(row)
            if cmp.residual <= settings.reuse_same_moment_max_residual:
                near.append({**row, "reason": "same moment (re-sent photo)"})
                resent_found = True
    digests = [a.sha256 for a in analyses]
    twins = len(digests) - len(set(digests))
    details: dict[str, Any] = {
        "score_unit": "pHash Hamming distance (64 bits); residual: grey levels after alignment",
        "exact": exact,
        "near": near,
        "compared": compared,
        "same_moment_max_residual": settings.reuse_same_moment_max_residual,
    }
    if exact:
        return CheckResult(
            CheckKind.PHOTO_REUSE,
            Outcome.FAIL,
            "photo_reused",
            "A photo file identical to one from an earlier test was submitted.",
            threshold=float(settings.phash_max_hamming),
            details=details,
        )
    if near:
        resent = [r for r in near if r.get("residual") is not None]
        return CheckResult(
            CheckKind.PHOTO_REUSE,
            Outcome.INCONCLUSIVE,
            "photo_resent" if resent else "photo_near_duplicate",
            "A photo is a copy of one from an earlier test (same moment, edited or re-encoded)."
            if resent
            else "A photo is a near-duplicate of one from an earlier test.",
            score=float(min(r["distance"] for r in near)),
            threshold=float(settings.phash_max_hamming),
            details=details,
        )
    if twins:
        return CheckResult(
            CheckKind.PHOTO_REUSE,
            Outcome.INCONCLUSIVE,
            "identical_photos",
            "The same photo file appears more than once in this test.",
            details=details,
        )
    return CheckResult(
        CheckKind.PHOTO_REUSE,
        Outcome.PASS,
        "photos_new",
        "No photo was seen before."
        if not compared
        else "Photos resemble earlier ones (same room) but are new moments, not copies.",
        threshold=float(settings.phash_max_hamming),
        details=details,
    )


def _identity_summary(analyses: Sequence[PhotoAnalysis], settings: SobrietySettings) -> CheckResult:
    judged = [a.identity for a in analyses if a.identity is not None]
    matches = sum(1 for c in judged if c.outcome is Outcome.PASS)
    mismatches = sum(1 for c in judged if c.outcome is Outcome.FAIL)
    problems = [
        c.code for a in analyses for c in a.checks if not c.passed and c.kind is not CheckKind.PHOTO_REUSE
    ]
    model = judged[0].model if judged else None
    details = {
        "photos": len(analyses),
        "judged": len(judged),
        "matches": matches,
        "mismatches": mismatches,
        "distances": [c.score for c in judged],
        "problems": problems,
        "accept_distance": settings.occluded_accept_distance,
        "reject_distance": settings.occluded_reject_distance,
    }
    best = min((c.score for c in judged if c.score is not None), default=None)
    if matches >= settings.photo_min_matching and mismatches == 0:
        return CheckResult(
            CheckKind.FACE,
            Outcome.PASS,
            "identity_confirmed",
            f"{matches} of {len(analyses)} breath photos match the enrolled person.",
            score=best,
            threshold=settings.occluded_accept_distance,
            model=model,
            details=details,
        )
    if engine := [a for a in analyses if any(c.outcome is Outcome.TECHNICAL for c in a.checks)]:
        if len(engine) == len(analyses):
            return CheckResult(
                CheckKind.FACE,
                Outcome.TECHNICAL,
                "engine_error",
                "The face engine could not check the photos.",
                model=model,
                details=details,
            )
    if mismatches >= settings.photo_min_matching and matches == 0 and mismatches == len(judged):
        return CheckResult(
            CheckKind.FACE,
            Outcome.FAIL,
            "different_person",
            f"{mismatches} breath photos clearly show someone other than the enrolled person.",
            score=best,
            threshold=settings.occluded_reject_distance,
            model=model,
            details=details,
        )
    return CheckResult(
        CheckKind.FACE,
        Outcome.INCONCLUSIVE,
        "identity_unclear",
        f"Identity could not be confirmed: {matches} matching, {mismatches} not matching, "
        f"problems: {', '.join(sorted(set(problems))) or 'none'}.",
        score=best,
        threshold=settings.occluded_accept_distance,
        model=model,
        details=details,
    )


def _mouthpiece_summary(analyses: Sequence[PhotoAnalysis], settings: SobrietySettings) -> CheckResult:
    judged = [a.mouthpiece for a in analyses if a.mouthpiece is not None]
    visible = sum(1 for c in judged if c.passed)
    details = {
        "visible": visible,
        "judged": len(judged),
        "method": "heuristic",
        "fractions": [c.score for c in judged],
        "in_verdict": settings.mouthpiece_in_verdict,
    }
    if not settings.mouthpiece_in_verdict:
        # Report only (see SobrietySettings.mouthpiece_in_verdict): the photos were received and judged
        # by the other checks; the heuristic's reading goes to the evidence, not to the decision.
        return CheckResult(
            CheckKind.BREATH_PHOTO,
            Outcome.PASS,
            "photos_received",
            f"Breath photos received; mouthpiece visibility is reported, not judged (heuristic saw it in "
            f"{visible} of {len(judged)} photos).",
            details=details,
        )
    if judged and visible >= min(settings.photo_min_matching, len(judged)) and visible * 2 > len(judged):
        return CheckResult(
            CheckKind.BREATH_PHOTO,
            Outcome.PASS,
            "mouthpiece_visible",
            f"Mouthpiece visible in {visible} of {len(judged)} judged photos.",
            details=details,
        )
    return CheckResult(
        CheckKind.BREATH_PHOTO,
        Outcome.INCONCLUSIVE,
        "mouthpiece_not_visible",
        f"Mouthpiece visible in only {visible} of {len(judged)} judged photos.",
        details=details,
    )


def _pad_summary(analyses: Sequence[PhotoAnalysis], settings: SobrietySettings) -> CheckResult | None:
    results = [a.pad for a in analyses if a.pad is not None]
    if not results:
        if not settings.require_pad:
            return None  # no PAD model: nothing was judged, so no check is claimed
        return CheckResult(
            CheckKind.PAD,
            Outcome.INCONCLUSIVE,
            "pad_unavailable",
            "No anti-spoofing result for the breath photos; anti-spoofing is required.",
            details={"available": False},
        )
    attacks = [c for c in results if c.outcome is Outcome.FAIL]
    model = results[0].model
    if attacks:
        # A single-frame passive PAD is not proof: a suspected attack goes to review with the scores.
        return CheckResult(
            CheckKind.PAD,
            Outcome.INCONCLUSIVE,
            "pad_attack_suspected",
            f"Anti-spoofing flagged {len(attacks)} of {len(results)} photos.",
            model=model,
            details={"scores": [c.score for c in results]},
        )
    if any(not c.passed for c in results):
        return CheckResult(
            CheckKind.PAD,
            Outcome.INCONCLUSIVE,
            "pad_uncertain",
            "Anti-spoofing was uncertain.",
            model=model,
            details={"scores": [c.score for c in results]},
        )
    return CheckResult(
        CheckKind.PAD,
        Outcome.PASS,
        "pad_live",
        "Anti-spoofing found no attack.",
        model=model,
        details={"scores": [c.score for c in results]},
    )


def judge_breath_photos(
    analyses: Sequence[PhotoAnalysis],
    index: PhotoIndex,
    test_id: str,
    settings: SobrietySettings,
    earlier: EarlierPhoto | None = None,
    comparisons: dict[tuple[str, str], ReuseComparison] | None = None,
) -> list[CheckResult]:
    """Summarise per-photo analyses into verdict checks: identity, mouthpiece, PAD (when judged), reuse.

    Looks every photo up in `index` (earlier tests) before adding this test's photos to it, so photos of
    the same test never match each other. `earlier(photo_id)` returns an earlier photo's file bytes (the
    stored evidence): with it a new moment at a fixed station camera is told from a re-sent photo;
    without it every pHash near duplicate goes to review.
    """
    checks = [_identity_summary(analyses, settings), _mouthpiece_summary(analyses, settings)]
    pad = _pad_summary(analyses, settings)
    if pad is not None:
        checks.append(pad)
    checks.append(_reuse_check(analyses, index, settings, earlier, comparisons))
    for a in analyses:
        index.add(a.photo_id, test_id, a.phash, a.sha256)
    return checks


def validate_breath_photos(
    photos: Sequence[BreathPhoto],
    gallery: Sequence[npt.NDArray[np.float64]],
    face: FacePort,
    index: PhotoIndex,
    test_id: str,
    settings: SobrietySettings,
    earlier: EarlierPhoto | None = None,
) -> tuple[list[PhotoAnalysis], list[CheckResult]]:
    """Analyse and judge one test's photos: (per-photo analyses for evidence, summary verdict checks)."""
    analyses = analyse_breath_photos(photos, gallery, face, settings)
    return analyses, judge_breath_photos(analyses, index, test_id, settings, earlier)
