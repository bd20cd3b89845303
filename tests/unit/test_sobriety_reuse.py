"""Re-sent breath photo vs a new moment at a fixed station camera (real video frames, no face engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from identity.checks import CheckKind, ModelStamp, Outcome
from identity.geometry import FaceBox
from sobriety.config import SobrietySettings
from sobriety.photos import (
    BreathPhoto,
    FaceObservation,
    InMemoryPhotoIndex,
    PhotoAnalysis,
    judge_breath_photos,
    validate_breath_photos,
)
from sobriety.reuse import ReuseFingerprint, compare, fingerprint

VIDEO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "video"
S = SobrietySettings()
BOX = FaceBox(210, 110, 430, 380)  # the face in lp_d3 frames on the 640x480 station canvas


def frames(clip: str, indices: list[int]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VIDEO / clip))
    out, i = {}, 0
    while len(out) < len(indices):
        ok, bgr = cap.read()
        if not ok:
            break
        if i in indices:
            canvas = np.full((480, 640, 3), 128, np.uint8)
            canvas[:, 80:560] = cv2.resize(bgr, (480, 480), interpolation=cv2.INTER_CUBIC)
            out[i] = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        i += 1
    cap.release()
    return [out[i] for i in indices]


def jpeg(rgb: np.ndarray, q: int = 90) -> bytes:
    return bytes(cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])[1])


def decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def resent(rgb: np.ndarray) -> dict[str, np.ndarray]:
    h, w = rgb.shape[:2]
    bright = np.clip(rgb.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    dark = np.clip(rgb.astype(np.int16) - 25, 0, 255).astype(np.uint8)
    return {
        "jpeg_q60": decode(jpeg(rgb, 60)),
        "crop_5%": np.ascontiguousarray(rgb[24 : h - 24, 32 : w - 32]),
        "crop_5%_right": np.ascontiguousarray(rgb[:, : w - 32]),
        "scale_0.8": cv2.resize(rgb, (512, 384), interpolation=cv2.INTER_AREA),
        "scale_1.25": cv2.resize(rgb, (800, 600), interpolation=cv2.INTER_CUBIC),
        "brightness_+25": decode(jpeg(bright)),
        "brightness_-25": decode(jpeg(dark)),
    }


@pytest.fixture(scope="module")
def station() -> list[np.ndarray]:
    # Frame 10, and 0.5 s and 1 s later (30 fps): the same person, camera and room.
    return [decode(jpeg(f)) for f in frames("lp_d3.mp4", [10, 25, 40])]


def test_resent_copies_are_the_same_moment_and_later_frames_are_not(station: list[np.ndarray]) -> None:
    first = fingerprint(station[0], BOX)
    t = S.reuse_same_moment_max_residual
    for name, copy in resent(station[0]).items():
        s = copy.shape[1] / 640
        box = FaceBox(int(BOX.left * s), int(BOX.top * s), int(BOX.right * s), int(BOX.bottom * s))
        c = compare(fingerprint(copy, box), first)
        assert c.residual <= t, f"{name}: residual {c.residual:.2f} > {t}"
    for later in station[1:]:
        c = compare(fingerprint(later, BOX), first)
        assert c.residual > t and c.region == "face"


def test_fingerprint_bytes_round_trip(station: list[np.ndarray]) -> None:
    fp = fingerprint(station[0], BOX)
    again = ReuseFingerprint.from_bytes(fp.to_bytes())
    assert again is not None and again.face == fp.face
    assert np.array_equal(again.grey, fp.grey) and again.clipped is not None
    assert np.array_equal(again.clipped > 0, fp.clipped > 0 if fp.clipped is not None else again.clipped > 0)
    bright = fingerprint(np.clip(station[0].astype(np.int16) + 120, 0, 255).astype(np.uint8), BOX)
    assert bright.clipped is not None and bright.clipped.any()
    assert ReuseFingerprint.from_bytes(b"1,2\nnot a png") is None


@dataclass
class StillPort:
    """A face port that always finds one face at BOX, matching the enrolled person."""

    model: ModelStamp | None = ModelStamp("fake", "1", "0" * 64)
    calls: list[int] = field(default_factory=list)

    def analyse(self, rgb: np.ndarray) -> list[FaceObservation]:
        s = rgb.shape[1] / 640
        return [
            FaceObservation(
                FaceBox(int(BOX.left * s), int(BOX.top * s), int(BOX.right * s), int(BOX.bottom * s))
            )
        ]

    def distance(self, gallery: object, rgb: np.ndarray, face: FaceObservation) -> float:
        return 0.2

    def antispoof(self, rgb: np.ndarray, face: FaceObservation) -> None:
        return None


def _test(prefix: str, images: list[np.ndarray]) -> tuple[list[BreathPhoto], dict[str, bytes]]:
    data = {f"{prefix}{i}": jpeg(im) for i, im in enumerate(images)}
    photos = [BreathPhoto.from_jpeg(k, v) for k, v in data.items()]
    assert all(p is not None for p in photos)
    return [p for p in photos if p is not None], data


def _reuse(checks: list) -> object:
    return next(c for c in checks if c.kind is CheckKind.PHOTO_REUSE)


def test_judge_passes_a_new_moment_and_catches_a_resent_photo(station: list[np.ndarray]) -> None:
    port, index, store = StillPort(), InMemoryPhotoIndex(), {}
    gallery = [np.zeros(128)]
    first, data = _test("a", [station[0]] * 1)
    _, checks = validate_breath_photos(first, gallery, port, index, "t1", S, earlier=store.get)
    store.update(data)
    assert _reuse(checks).code == "photos_new"

    # The next test, 0.5 s later: the pHash is as close as a copy's, the pixels say it is a new moment.
    later, data2 = _test("b", [station[1]])
    analyses, checks = validate_breath_photos(later, gallery, port, index, "t2", S, earlier=store.get)
    store.update(data2)
    r = _reuse(checks)
    assert r.outcome is Outcome.PASS and r.details["compared"], r.details
    assert all(row["residual"] > S.reuse_same_moment_max_residual for row in r.details["compared"])
    assert isinstance(analyses[0], PhotoAnalysis) and analyses[0].fingerprint is not None

    # The first photo re-sent cropped: caught, sent to review (not a FAIL: the bytes differ).
    crop, _ = _test("c", [resent(station[0])["crop_5%"]])
    _, checks = validate_breath_photos(crop, gallery, port, index, "t3", S, earlier=store.get)
    r = _reuse(checks)
    assert r.outcome is Outcome.INCONCLUSIVE and r.code == "photo_resent"

    # Byte-identical re-send: FAIL as before.
    same = BreathPhoto.from_jpeg("d0", data["a0"])
    assert same is not None
    _, checks = validate_breath_photos([same], gallery, port, index, "t4", S, earlier=store.get)
    assert _reuse(checks).outcome is Outcome.FAIL


def test_without_earlier_photos_a_near_duplicate_still_goes_to_review(station: list[np.ndarray]) -> None:
    port, index = StillPort(), InMemoryPhotoIndex()
    first, _ = _test("a", [station[0]])
    validate_breath_photos(first, [np.zeros(128)], port, index, "t1", S)
    again, _ = _test("b", [decode(jpeg(station[0], 60))])
    analyses = [a for a in validate_breath_photos(again, [np.zeros(128)], port, index, "t2", S)[0]]
    r = _reuse(judge_breath_photos(analyses, InMemoryPhotoIndex(list(index.rows[:1])), "t3", S))
    assert r.outcome is Outcome.INCONCLUSIVE and r.code == "photo_near_duplicate"
    # An earlier photo that cannot be read is not taken as proof of a new moment.
    r2 = _reuse(
        judge_breath_photos(analyses, InMemoryPhotoIndex(list(index.rows[:1])), "t4", S, lambda _: None)
    )
    assert r2.outcome is Outcome.INCONCLUSIVE


def test_a_second_judgement_reuses_the_pixel_comparisons(
    station: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service judges a test on a snapshot and, when a concurrent test added photos, again under its
    write lock: with the same `comparisons` memo the second judgement compares only what is new."""
    import sobriety.photos as photos

    port, index, store = StillPort(), InMemoryPhotoIndex(), {}
    first, data = _test("a", [station[0]])
    validate_breath_photos(first, [np.zeros(128)], port, index, "t1", S, earlier=store.get)
    store.update(data)
    later, _ = _test("b", [station[1]])
    analyses, _ = validate_breath_photos(later, [np.zeros(128)], port, InMemoryPhotoIndex(), "tx", S)

    calls: list[int] = []
    real = photos.compare

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(photos, "compare", counted)
    memo: dict[tuple[str, str], object] = {}
    once = _reuse(judge_breath_photos(analyses, index, "t2", S, store.get, memo))  # type: ignore[arg-type]
    assert len(calls) == 1 and len(memo) == 1
    store_reads: list[str] = []

    def earlier_read(photo_id: str) -> bytes | None:
        store_reads.append(photo_id)
        return store.get(photo_id)

    again = _reuse(
        judge_breath_photos(analyses, InMemoryPhotoIndex(list(index.rows[:1])), "t2", S, earlier_read, memo)  # type: ignore[arg-type]
    )
    assert len(calls) == 1, "the memoised comparison was not made again"
    assert store_reads == [], "nor was the earlier photo read again"
    assert (again.outcome, again.code, again.details["compared"]) == (
        once.outcome,
        once.code,
        once.details["compared"],
    )


def test_an_alignment_far_from_the_same_moment_is_not_refined_and_decisions_do_not_change(
    station: list[np.ndarray],
) -> None:
    """ECC refinement (most of a comparison's CPU) runs only for alignments within
    `reuse_refine_max_residual` before refinement: a re-sent copy is still found by a refined alignment
    (for a crop, the keypoints rather than the refined fixed camera); a different person keeps its
    unrefined residual; every decision (same moment or not) is the one the always-refining comparison
    makes."""
    t, bound = S.reuse_same_moment_max_residual, S.reuse_refine_max_residual
    first = fingerprint(station[0], BOX)
    other = fingerprint(decode(jpeg(frames("grid_bbaf2n.mp4", [10])[0])), BOX)  # another person and room
    pairs = {name: fingerprint(copy, None) for name, copy in resent(station[0]).items()}
    pairs |= {"0.5 s later": fingerprint(station[1], BOX), "1 s later": fingerprint(station[2], BOX)}
    pairs["another person"] = other
    for name, new in pairs.items():
        always = compare(new, first, t)
        cheap = compare(new, first, t, bound)
        assert (cheap.residual <= t) == (always.residual <= t), name
        if always.residual <= t:  # a copy: found by a refined alignment
            assert cheap.refined, name
        assert cheap.refined or cheap.residual > bound, name
    far = compare(other, first, t, bound)
    assert not far.refined and far.residual > bound


def test_judged_comparisons_say_whether_they_were_refined(station: list[np.ndarray]) -> None:
    port, index, store = StillPort(), InMemoryPhotoIndex(), {}
    first, data = _test("a", [station[0]])
    validate_breath_photos(first, [np.zeros(128)], port, index, "t1", S, earlier=store.get)
    store.update(data)
    crop, _ = _test("c", [resent(station[0])["crop_5%"]])
    _, checks = validate_breath_photos(crop, [np.zeros(128)], port, index, "t2", S, earlier=store.get)
    rows = _reuse(checks).details["compared"]
    assert rows and all(isinstance(row["refined"], bool) for row in rows)
    assert any(row["refined"] and row["residual"] <= S.reuse_same_moment_max_residual for row in rows)
