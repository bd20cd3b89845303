"""Breath photos: pHash near duplicates on LFW, the reuse index, and per-test validation (fake face port)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.geometry import FaceBox
from sobriety.config import SobrietySettings
from sobriety.occlusion import occlude_mouth
from sobriety.photos import (
    BreathPhoto,
    FaceObservation,
    InMemoryPhotoIndex,
    hamming,
    phash,
    phash_from_hex,
    phash_hex,
    phash_set,
    set_distance,
    validate_breath_photos,
)

ROOT = Path(__file__).parents[2]
FACES = ROOT / ".." / "shared" / "data" / "faces"
S = SobrietySettings()
JUDGED = SobrietySettings(mouthpiece_in_verdict=True)  # the heuristic as a verdict check (off by default)
BOX = FaceBox(left=70, top=75, right=180, bottom=185)


def load(rel: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FACES / rel)), cv2.COLOR_BGR2RGB)


def pairs(same: bool) -> list[tuple[str, str]]:
    with (FACES / "lfw-dev-pairs.csv").open() as f:
        return [(r["img1"], r["img2"]) for r in csv.DictReader(f) if (r["same"] == "1") == same]


def jpeg(rgb: np.ndarray, q: int) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])[
        1
    ].tobytes()


def decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_phash_basics() -> None:
    rgb = load(pairs(True)[0][0])
    h = phash(rgb)
    assert 0 <= h < 1 << 64 and hamming(h, h) == 0
    assert hamming(0, (1 << 64) - 1) == 64
    s = phash_set(rgb)
    assert phash_from_hex(phash_hex(s)) == s and len(phash_hex(s)) == 16 * len(s)


def test_near_duplicates_match_and_other_photos_of_the_same_person_do_not() -> None:
    t = S.phash_max_hamming
    same = pairs(True)
    for a, _ in same[:15]:
        rgb = load(a)
        ref = phash_set(rgb)
        h, w = rgb.shape[:2]
        copies = {
            "jpeg_q50": decode(jpeg(rgb, 50)),
            "resize_0.5": cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
            "resize_1.6": cv2.resize(rgb, (w * 8 // 5, h * 8 // 5), interpolation=cv2.INTER_CUBIC),
            "crop_4%": rgb[10 : h - 10, 10 : w - 10],
            "crop_6%_left_top": rgb[15:, 15:],
            "crop_resize_jpeg": decode(jpeg(cv2.resize(rgb[10 : h - 10, 10 : w - 10], (160, 160)), 60)),
        }
        for name, copy in copies.items():
            d = set_distance(ref, phash_set(np.ascontiguousarray(copy)))
            assert d <= t, f"{a} {name}: distance {d} > {t}"
    # Different photos of one person (LFW same pairs) and of different people must not match.
    for a, b in same + pairs(False)[:30]:
        d = set_distance(phash_set(load(a)), phash_set(load(b)))
        assert d > t, f"{a} vs {b}: distance {d} <= {t}"


def test_index_finds_exact_and_near_reuse() -> None:
    idx = InMemoryPhotoIndex()
    rgb = load(pairs(True)[1][0])
    data = jpeg(rgb, 90)
    first = BreathPhoto.from_jpeg("a1", data)
    assert first is not None
    idx.add("a1", "test-1", phash_set(first.rgb), first.sha256)
    exact = idx.find(phash_set(first.rgb), first.sha256, S.phash_max_hamming)
    assert exact and exact[0].exact and exact[0].test_id == "test-1"
    again = BreathPhoto.from_jpeg("b1", jpeg(rgb, 60))
    assert again is not None and again.sha256 != first.sha256
    near = idx.find(
        again.phash if hasattr(again, "phash") else phash_set(again.rgb), again.sha256, S.phash_max_hamming
    )
    assert near and not near[0].exact
    other = load(pairs(False)[0][1])
    assert idx.find(phash_set(other), "x", S.phash_max_hamming) == []
    assert BreathPhoto.from_jpeg("bad", b"not an image") is None


@dataclass
class FakeFacePort:
    """Scripted face engine: each analyse() call returns the next face count, distance() the next distance."""

    face_counts: list[int]
    distances: list[float]
    pad: list[CheckResult] = field(default_factory=list)
    model: ModelStamp | None = ModelStamp("fake", "1", "0" * 64)

    def analyse(self, rgb: np.ndarray) -> list[FaceObservation]:
        n = self.face_counts.pop(0)
        return [FaceObservation(BOX)] * n

    def distance(
        self, gallery: Sequence[npt.NDArray[np.float64]], rgb: np.ndarray, face: FaceObservation
    ) -> float:
        assert len(gallery) == 1
        return self.distances.pop(0)

    def antispoof(self, rgb: np.ndarray, face: FaceObservation) -> CheckResult | None:
        return self.pad.pop(0) if self.pad else None


def breath_photos(rel: str, test: str, n: int = 3, occluded: bool = True) -> list[BreathPhoto]:
    rgb = load(rel)
    out = []
    for i in range(n):
        im = occlude_mouth(rgb, BOX, None, np.random.default_rng(i))[0] if occluded else rgb
        im = np.roll(im, i, axis=1)  # the person moves a little between shots: different bytes
        photo = BreathPhoto.from_jpeg(f"{test}-p{i}", jpeg(np.ascontiguousarray(im), 92))
        assert photo is not None
        out.append(photo)
    return out


GALLERY = [np.zeros(128)]


def by_kind(checks: list[CheckResult]) -> dict[CheckKind, CheckResult]:
    return {c.kind: c for c in checks}


def test_matching_occluded_photos_pass() -> None:
    port = FakeFacePort([1, 1, 1], [0.25, 0.30, 0.45])
    analyses, checks = validate_breath_photos(
        breath_photos(pairs(True)[4][0], "t1"), GALLERY, port, InMemoryPhotoIndex(), "t1", JUDGED
    )
    k = by_kind(checks)
    assert k[CheckKind.FACE].outcome is Outcome.PASS and k[CheckKind.FACE].details["matches"] >= 2
    assert k[CheckKind.FACE].model == port.model
    assert k[CheckKind.BREATH_PHOTO].code == "mouthpiece_visible"
    assert k[CheckKind.PHOTO_REUSE].outcome is Outcome.PASS
    assert CheckKind.PAD not in k  # no PAD model: no PAD claim
    assert len(analyses) == 3 and all(a.identity is not None for a in analyses)


def test_several_faces_no_face_and_mismatch() -> None:
    rel = pairs(True)[3][0]
    port = FakeFacePort([2, 0, 1], [0.42])
    _, checks = validate_breath_photos(breath_photos(rel, "t2"), GALLERY, port, InMemoryPhotoIndex(), "t2", S)
    face = by_kind(checks)[CheckKind.FACE]
    assert face.outcome is Outcome.INCONCLUSIVE
    assert {"several_faces", "no_face"} <= set(face.details["problems"])
    far = S.occluded_reject_distance + 0.1
    port = FakeFacePort([1, 1, 1], [far, far, far])
    _, checks = validate_breath_photos(breath_photos(rel, "t3"), GALLERY, port, InMemoryPhotoIndex(), "t3", S)
    assert by_kind(checks)[CheckKind.FACE].code == "different_person"
    assert by_kind(checks)[CheckKind.FACE].outcome is Outcome.FAIL
    between = (S.occluded_accept_distance + S.occluded_reject_distance) / 2
    port = FakeFacePort([1, 1, 1], [0.3, between, between])
    _, checks = validate_breath_photos(breath_photos(rel, "t4"), GALLERY, port, InMemoryPhotoIndex(), "t4", S)
    assert by_kind(checks)[CheckKind.FACE].code == "identity_unclear"


def test_bare_face_without_mouthpiece_goes_to_review_only_when_the_heuristic_is_judged() -> None:
    port = FakeFacePort([1, 1, 1], [0.3, 0.3, 0.3])
    rel = pairs(True)[4][0]
    _, checks = validate_breath_photos(
        breath_photos(rel, "t5", occluded=False), GALLERY, port, InMemoryPhotoIndex(), "t5", JUDGED
    )
    mp = by_kind(checks)[CheckKind.BREATH_PHOTO]
    # Same person and photo as the passing test above, without the mouthpiece: review, never FAIL.
    assert mp.outcome is Outcome.INCONCLUSIVE and mp.code == "mouthpiece_not_visible"
    assert mp.details["method"] == "heuristic" and mp.details["visible"] == 0
    # Default: report only. The reading is kept (per photo and in the summary) but decides nothing.
    port = FakeFacePort([1, 1, 1], [0.3, 0.3, 0.3])
    analyses, checks = validate_breath_photos(
        breath_photos(rel, "t5b", occluded=False), GALLERY, port, InMemoryPhotoIndex(), "t5b", S
    )
    mp = by_kind(checks)[CheckKind.BREATH_PHOTO]
    assert not S.mouthpiece_in_verdict
    assert mp.outcome is Outcome.PASS and mp.code == "photos_received"
    assert mp.details["in_verdict"] is False and mp.details["visible"] == 0
    assert all(a.mouthpiece is not None and a.mouthpiece.code == "mouthpiece_not_visible" for a in analyses)


def test_photo_reuse_across_tests() -> None:
    idx = InMemoryPhotoIndex()
    rel = pairs(True)[5][0]
    first = breath_photos(rel, "t6")
    _, checks = validate_breath_photos(first, GALLERY, FakeFacePort([1] * 3, [0.3] * 3), idx, "t6", S)
    assert by_kind(checks)[CheckKind.PHOTO_REUSE].outcome is Outcome.PASS  # same-test photos never match
    # The very same file again: FAIL.
    replay = [BreathPhoto("t7-p0", first[0].rgb, first[0].sha256), *breath_photos(pairs(True)[6][0], "t7", 2)]
    _, checks = validate_breath_photos(replay, GALLERY, FakeFacePort([1] * 3, [0.3] * 3), idx, "t7", S)
    reuse = by_kind(checks)[CheckKind.PHOTO_REUSE]
    assert reuse.outcome is Outcome.FAIL and reuse.details["exact"][0]["earlier_test_id"] == "t6"
    # A re-encoded copy: near duplicate -> review.
    copy = BreathPhoto.from_jpeg("t8-p0", jpeg(first[1].rgb, 55))
    assert copy is not None
    _, checks = validate_breath_photos([copy], GALLERY, FakeFacePort([1], [0.3]), idx, "t8", S)
    assert by_kind(checks)[CheckKind.PHOTO_REUSE].code == "photo_near_duplicate"


def test_pad_results_are_summarised() -> None:
    live = CheckResult(CheckKind.PAD, Outcome.PASS, "live", "live", score=0.9)
    attack = CheckResult(CheckKind.PAD, Outcome.FAIL, "attack", "attack", score=0.1)
    port = FakeFacePort([1] * 3, [0.3] * 3, pad=[live, attack, live])
    # A sharp LFW face (upper-face sharpness 32.8 at 150 px): every photo reaches the PAD step. (The
    # earlier pick, Angela_Bassett_0002, scores 9.9, at the blur gate, one of the ~2% it refuses.)
    _, checks = validate_breath_photos(
        breath_photos(pairs(True)[1][0], "t9"), GALLERY, port, InMemoryPhotoIndex(), "t9", S
    )
    assert by_kind(checks)[CheckKind.PAD].code == "pad_attack_suspected"
    assert by_kind(checks)[CheckKind.PAD].outcome is Outcome.INCONCLUSIVE


def test_engine_failure_is_technical() -> None:
    class Broken(FakeFacePort):
        def analyse(self, rgb: np.ndarray) -> list[FaceObservation]:
            raise RuntimeError("dlib crashed")

    _, checks = validate_breath_photos(
        breath_photos(pairs(True)[8][0], "t10"), GALLERY, Broken([], []), InMemoryPhotoIndex(), "t10", S
    )
    assert by_kind(checks)[CheckKind.FACE].outcome is Outcome.TECHNICAL


def test_settings_defaults_follow_the_measured_calibration() -> None:
    record = json.loads((ROOT / "sobriety" / "occlusion_calibration.json").read_text())
    policy = record["policy"]
    assert S.occluded_accept_distance == policy["occluded_accept_distance"]
    assert S.occluded_reject_distance == policy["occluded_reject_distance"]
    assert S.mouthpiece_min_fraction == policy["mouthpiece_min_fraction"]
    assert S.phash_max_hamming == policy["phash_max_hamming"]


def test_blur_gate_reads_the_face_not_the_camera_distance() -> None:
    """A real face upscaled 2.5x (a large, soft station face) is as sharp as at its own size; a blur is not."""
    from sobriety.photos import face_sharpness, photo_quality

    grey = cv2.cvtColor(load(pairs(True)[0][0]), cv2.COLOR_RGB2GRAY)
    face = np.ascontiguousarray(grey[BOX.top : BOX.bottom, BOX.left : BOX.right])
    big = cv2.resize(face, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    w = S.photo_sharpness_width_px
    small_v, big_v, blur_v = face_sharpness(face, w), face_sharpness(big, w), face_sharpness(blurred, w)
    assert abs(big_v - small_v) < 0.35 * small_v
    assert blur_v < S.photo_min_sharpness <= min(small_v, big_v)
    # Measured at the photo's own scale (the old gate), the big face read as several times blurrier.
    raw_small = float(cv2.Laplacian(face[: face.shape[0] // 2], cv2.CV_64F).var())
    raw_big = float(cv2.Laplacian(big[: big.shape[0] // 2], cv2.CV_64F).var())
    assert raw_big < 0.5 * raw_small
    rgb = cv2.resize(load(pairs(True)[0][0]), None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)
    scaled_box = FaceBox(left=175, top=188, right=450, bottom=463)
    obs = FaceObservation(scaled_box, np.zeros((68, 2)))
    assert photo_quality(rgb, obs, S).code == "quality_ok"
