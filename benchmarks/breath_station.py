"""Breath photos at a home station: genuine consecutive tests, re-sent photos, the mouthpiece check.

    .venv/bin/python benchmarks/breath_station.py [--no-cache] [--json]

Station tests are built from the real videos in ../shared/data/video (8 people; catalog.csv): a fixed
camera, one room, one face. Each frame is placed on a 640x480 grey station canvas (aspect kept, centred,
as benchmarks/breath_occlusion.py composites), the synthetic mouthpiece of sobriety.occlusion is drawn on
it from the face's 68 landmarks with the same device per person (same colours, shape follows the face),
and it is saved as JPEG q=90. A test = 3 photos ~0.3 s apart; consecutive tests of a person start
>= 0.5 s after the previous one ends (real tests are hours apart: 0.5 s of stillness is the hard case).
Frame 0 (bare face) is the person's enrolment.

Printed:
1. Genuine consecutive station tests: each person's tests in order through the full photo validation
   (face engine through sobriety.face_port, reuse index with the earlier tests' photos and fingerprints);
   a test PASSes when every breath-photo check passes. Target >= 95%.
2. Re-sent photos: every photo of each person's first test re-sent in a later test as byte-identical,
   re-encoded (JPEG q 60/75), cropped 3/5% (centred and one-sided), scaled 0.8x/1.25x, brightness
   +/-25 and a combination; caught = the reuse check does not PASS. Target 100%.
3. The reuse residual distributions (new moment vs re-sent) and the margin between them.
4. The mouthpiece heuristic's accuracy on held-out occluders (see --help of breath_occlusion for LFW).

Photo analyses are cached in var/breath_station_cache.npz (gitignored) keyed by the video files and the
generator version; --no-cache recomputes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from identity.checks import Outcome  # noqa: E402
from identity.geometry import FaceBox  # noqa: E402
from sobriety.config import SobrietySettings  # noqa: E402
from sobriety.face_port import EngineFacePort  # noqa: E402
from sobriety.occlusion import occlude_mouth  # noqa: E402
from sobriety.photos import (  # noqa: E402
    BreathPhoto,
    FaceObservation,
    InMemoryPhotoIndex,
    PhotoAnalysis,
    analyse_breath_photos,
    judge_breath_photos,
)

VIDEO = ROOT / ".." / "shared" / "data" / "video"
CACHE = ROOT / "var" / "breath_station_cache.pkl"
ANALYSES = ROOT / "var" / "breath_station_analyses.pkl"
GENERATOR_VERSION = "3"
CANVAS_W, CANVAS_H = 640, 480
PHOTO_SPACING_S = 0.3
TEST_GAP_S = 0.5


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames of a video as RGB arrays, and its frame rate."""
    cap = cv2.VideoCapture(str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    cap.release()
    return frames, fps


def station_canvas(frame: np.ndarray) -> np.ndarray:
    """The frame scaled to the canvas height (aspect kept), centred on a 640x480 grey canvas."""
    h, w = frame.shape[:2]
    s = CANVAS_H / h
    nw = min(CANVAS_W, int(round(w * s)))
    canvas = np.full((CANVAS_H, CANVAS_W, 3), 128, dtype=np.uint8)
    x0 = (CANVAS_W - nw) // 2
    canvas[:, x0 : x0 + nw] = cv2.resize(frame, (nw, CANVAS_H), interpolation=cv2.INTER_CUBIC)
    return canvas


def jpeg(rgb: np.ndarray, q: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return bytes(buf.tobytes())


def decode(data: bytes) -> np.ndarray:
    return np.ascontiguousarray(
        cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    )


def test_starts(n_frames: int, fps: float) -> tuple[list[int], int]:
    """First frame of each test and the frame spacing of its 3 photos."""
    d = max(1, round(PHOTO_SPACING_S * fps))
    g = max(1, round(TEST_GAP_S * fps))
    starts, s = [], 2
    while s + 2 * d < n_frames:
        starts.append(s)
        s += 2 * d + g
    return starts, d


@dataclass
class Person:
    """One video's station: enrolment embedding and its tests (3 JPEGs each, with the frame numbers)."""

    name: str
    gallery: list[np.ndarray]
    tests: list[list[bytes]]
    frames: list[list[int]]
    bare: list[bytes]  # the same frames without the mouthpiece (held-out mouthpiece negatives)


def build_people(port: EngineFacePort, settings: SobrietySettings) -> list[Person]:
    with (VIDEO / "catalog.csv").open() as f:
        clips = [r["file"] for r in csv.DictReader(f)]
    people = []
    for clip in clips:
        frames, fps = read_frames(VIDEO / clip)
        enrol = station_canvas(frames[0])
        faces = port.analyse(enrol)
        if not faces:
            print(f"  {clip}: no face in frame 0, skipped")
            continue
        gallery = [port.embed(enrol, faces[0]).astype(np.float64)]
        # Same device every day: one seed per person fixes colours and proportions.
        seed = int(hashlib.sha256(clip.encode()).hexdigest()[:8], 16)
        starts, d = test_starts(len(frames), fps)
        tests, used, bare = [], [], []
        for s in starts:
            photos, idx = [], []
            for j in range(3):
                canvas = station_canvas(frames[s + j * d])
                found = port.analyse(canvas)
                if not found:
                    continue
                occ, _ = occlude_mouth(canvas, found[0].box, found[0].landmarks, np.random.default_rng(seed))
                photos.append(jpeg(occ, 90))
                bare.append(jpeg(canvas, 90))
                idx.append(s + j * d)
            tests.append(photos)
            used.append(idx)
        people.append(Person(clip.rsplit(".", 1)[0], gallery, tests, used, bare))
        print(f"  {clip}: {len(frames)} frames @ {fps:g} fps -> {len(tests)} tests")
    return people


# ------------------------------------------------------------------------------------- re-sent variants
def _crop(rgb: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[int(h * top) : h - int(h * bottom), int(w * left) : w - int(w * right)])


def _scale(rgb: np.ndarray, f: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(rgb, (int(w * f), int(h * f)), interpolation=interp))


def _bright(rgb: np.ndarray, delta: int) -> np.ndarray:
    return np.ascontiguousarray(np.clip(rgb.astype(np.int16) + delta, 0, 255).astype(np.uint8))


RESENT: dict[str, Callable[[bytes], bytes]] = {
    "byte_identical": lambda b: b,
    "jpeg_q60": lambda b: jpeg(decode(b), 60),
    "jpeg_q75": lambda b: jpeg(decode(b), 75),
    "crop_3%": lambda b: jpeg(_crop(decode(b), 0.03, 0.03, 0.03, 0.03), 90),
    "crop_5%": lambda b: jpeg(_crop(decode(b), 0.05, 0.05, 0.05, 0.05), 90),
    "crop_5%_left_top": lambda b: jpeg(_crop(decode(b), 0.05, 0.05, 0.0, 0.0), 90),
    "crop_5%_right": lambda b: jpeg(_crop(decode(b), 0.0, 0.0, 0.05, 0.0), 90),
    "scale_0.8": lambda b: jpeg(_scale(decode(b), 0.8), 90),
    "scale_1.25": lambda b: jpeg(_scale(decode(b), 1.25), 90),
    "brightness_+25": lambda b: jpeg(_bright(decode(b), 25), 90),
    "brightness_-25": lambda b: jpeg(_bright(decode(b), -25), 90),
    "crop4_scale0.7_bright15_q70": lambda b: jpeg(
        _bright(_scale(_crop(decode(b), 0.04, 0.02, 0.02, 0.04), 0.7), 15), 70
    ),
}


def _photos(prefix: str, jpegs: list[bytes]) -> list[BreathPhoto]:
    out = []
    for j, data in enumerate(jpegs):
        p = BreathPhoto.from_jpeg(f"{prefix}p{j}", data)
        assert p is not None
        out.append(p)
    return out


def _check(checks: list[Any], kind: str) -> Any:
    return next(c for c in checks if c.kind.value == kind)


class AnalysisCache:
    """Per-photo analyses keyed by person, JPEG SHA-256 and the analysis settings (judging is not cached)."""

    def __init__(self, path: Path | None, settings: SobrietySettings) -> None:
        self.path = path
        # Judging settings (reuse_*, phash_*) do not change an analysis: left out of the key.
        relevant = settings.model_dump(
            exclude={f for f in type(settings).model_fields if f.startswith(("reuse_", "phash_"))}
        )
        self.salt = hashlib.sha256(
            (GENERATOR_VERSION + json.dumps(relevant, sort_keys=True, default=str)).encode()
        ).hexdigest()[:16]
        self.rows: dict[str, PhotoAnalysis] = {}
        if path is not None and path.is_file():
            with path.open("rb") as f:
                self.rows = pickle.load(f)  # our own cache file under var/, written by save()

    def analyse(
        self, person: Person, photos: list[BreathPhoto], port: EngineFacePort, settings: SobrietySettings
    ) -> list[PhotoAnalysis]:
        out = []
        for p in photos:
            key = f"{self.salt}:{person.name}:{p.sha256}"
            if key not in self.rows:
                self.rows[key] = analyse_breath_photos([p], person.gallery, port, settings)[0]
            a = self.rows[key]
            # Same pixels, this submission's photo id.
            out.append(
                PhotoAnalysis(
                    p.photo_id, a.sha256, a.phash, a.checks, a.identity, a.mouthpiece, a.pad, a.fingerprint
                )
            )
        return out

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as f:
                pickle.dump(self.rows, f)


def run(
    people: list[Person], port: EngineFacePort, settings: SobrietySettings, cache: AnalysisCache
) -> dict[str, Any]:
    genuine: list[dict[str, Any]] = []
    resent: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    n_photos = 0
    for person in people:
        index = InMemoryPhotoIndex()
        store: dict[str, bytes] = {}
        for t, jpegs in enumerate(person.tests):
            test_id = f"{person.name}-t{t}"
            photos = _photos(test_id, jpegs)
            analyses = cache.analyse(person, photos, port, settings)
            n_photos += len(photos)
            checks = judge_breath_photos(analyses, index, test_id, settings, earlier=store.get)
            cache.save()
            store.update({p.photo_id: d for p, d in zip(photos, jpegs, strict=True)})
            failed = [f"{c.kind.value}:{c.code}" for c in checks if c.outcome is not Outcome.PASS]
            reuse = _check(checks, "photo_reuse")
            genuine.append(
                {
                    "person": person.name,
                    "test": t,
                    "frames": person.frames[t],
                    "pass": not failed,
                    "not_passed": failed,
                    "reuse_code": reuse.code,
                    "reuse_residuals": [
                        m["residual"]
                        for m in reuse.details.get("compared", [])
                        if m.get("residual") is not None
                    ],
                }
            )
        print(
            f"  {person.name}: {len(person.tests)} genuine tests judged ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        # Re-send the first test's photos, one variant at a time, as a new test after all genuine ones.
        first = person.tests[0]
        for name, make in RESENT.items():
            test_id = f"{person.name}-resent-{name}"
            jpegs = [make(b) for b in first]
            photos = _photos(test_id, jpegs)
            analyses = cache.analyse(person, photos, port, settings)
            n_photos += len(photos)
            # A scratch copy of the index: variants must not match each other.
            scratch = InMemoryPhotoIndex(list(index.rows))
            checks = judge_breath_photos(analyses, scratch, test_id, settings, earlier=store.get)
            reuse = _check(checks, "photo_reuse")
            resent.append(
                {
                    "person": person.name,
                    "variant": name,
                    "caught": reuse.outcome is not Outcome.PASS,
                    "outcome": reuse.outcome.value,
                    "code": reuse.code,
                    "test_passed": all(c.outcome is Outcome.PASS for c in checks),
                    "residuals": [
                        m["residual"]
                        for m in reuse.details.get("compared", [])
                        if m.get("residual") is not None
                    ],
                    # Per photo: the smallest residual to any earlier photo (the copy's source when found).
                    "photo_min_residuals": [
                        min(
                            (
                                m["residual"]
                                for m in reuse.details.get("compared", [])
                                if m["photo_id"] == p.photo_id and m.get("residual") is not None
                            ),
                            default=None,
                        )
                        for p in photos
                    ],
                }
            )
    cache.save()
    wall = time.perf_counter() - t0
    return {"genuine": genuine, "resent": resent, "wall_s": wall, "photos": n_photos}


def heldout_occluder(rgb: np.ndarray, face: Any, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Occluders NOT used to tune the heuristic (sobriety.occlusion.occlude_mouth is the tuning one).

    kinds: "handheld" (rotated device body with a white straw, no hand), "dark_tube" (black mouthpiece,
    coloured device), "shaded" (plastic with shading, sensor noise and motion blur), "skin_tone" (a beige
    mouthpiece close to the person's skin; expected to be missed), "hand_only" (a hand over the mouth,
    no device: a negative that must NOT count as a mouthpiece).
    """
    from sobriety.occlusion import mouth_geometry, mouth_region

    cx, cy, mw, _nose, chin = mouth_geometry(face.box, face.landmarks)
    region = mouth_region(face.box, face.landmarks, rgb.shape)
    layer = rgb.copy()
    cheek = rgb[int(face.box.top + 0.45 * face.box.height), int(face.box.left + 0.2 * face.box.width)]
    tone = np.asarray(cheek, dtype=np.float64)
    if kind == "handheld":
        body = tuple(int(v) for v in rng.integers(30, 220, 3))
        angle = float(rng.uniform(-25, 25))
        rect = ((cx + rng.uniform(-0.2, 0.2) * mw, cy + 0.9 * mw), (1.1 * mw, 1.8 * mw), angle)
        cv2.fillPoly(layer, [cv2.boxPoints(rect).astype(np.int32)], body)
        cv2.rectangle(
            layer,
            (int(cx - 0.12 * mw), int(cy - 0.1 * mw)),
            (int(cx + 0.12 * mw), int(cy + 0.6 * mw)),
            (245, 245, 245),
            -1,
        )
    elif kind == "dark_tube":
        body = tuple(int(v) for v in (rng.integers(0, 80), rng.integers(60, 160), rng.integers(120, 230)))
        cv2.rectangle(
            layer, (int(cx - 0.6 * mw), int(cy + 0.2 * mw)), (int(cx + 0.6 * mw), int(chin + mw)), body, -1
        )
        cv2.ellipse(layer, (int(cx), int(cy)), (int(0.45 * mw), int(0.28 * mw)), 0, 0, 360, (20, 20, 20), -1)
    elif kind == "shaded":
        h, w = rgb.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.integers(90, 200, 3).astype(np.float64)
        shade = 0.7 + 0.6 * np.clip((xx - (cx - mw)) / (2 * mw), 0, 1)
        piece = (base[None, None, :] * shade[..., None] + rng.normal(0, 6, (h, w, 3))).clip(0, 255)
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (int(cx), int(cy + 0.3 * mw)), (int(0.75 * mw), int(0.9 * mw)), 0, 0, 360, 1, -1)
        layer[mask > 0] = piece[mask > 0].astype(np.uint8)
        layer = cv2.blur(layer, (5, 1))
    elif kind == "skin_tone":
        col = tuple(int(v) for v in np.clip(tone * rng.uniform(1.0, 1.1), 0, 255))
        cv2.ellipse(layer, (int(cx), int(cy)), (int(0.5 * mw), int(0.3 * mw)), 0, 0, 360, col, -1)
    elif kind == "hand_only":
        col = tuple(int(v) for v in np.clip(tone * rng.uniform(0.85, 1.0), 0, 255))
        cv2.ellipse(layer, (int(cx), int(cy + 0.2 * mw)), (int(0.8 * mw), int(0.55 * mw)), 0, 0, 360, col, -1)
    else:
        raise ValueError(kind)
    out = rgb.copy()
    m = region.mask(rgb.shape)
    out[m] = layer[m]
    return out


HELDOUT_POSITIVE = ("handheld", "dark_tube", "shaded", "skin_tone")
HELDOUT_NEGATIVE = ("hand_only",)


def mouthpiece_study(
    people: list[Person],
    detect: Callable[[np.ndarray], Any],
    settings: SobrietySettings,
    cache: AnalysisCache,
) -> dict[str, Any]:
    """The heuristic per photo: the tuning occluder (station test photos), held-out occluders drawn on the
    first photo's frame of every test, and those frames bare. `detect` returns the largest face (box and
    68 landmarks) or None, as the breath flow sees it on the photo sent."""
    from sobriety.occlusion import mouthpiece_fraction

    t = settings.mouthpiece_min_fraction
    scores: dict[str, list[float]] = {"synthetic (tuning generator)": [], "bare face": []}
    for k in HELDOUT_POSITIVE + HELDOUT_NEGATIVE:
        scores[k] = []
    rng = np.random.default_rng(11)
    for person in people:
        for tid, jpegs in enumerate(person.tests):
            for p in _photos(f"{person.name}-t{tid}", jpegs):
                key = f"{cache.salt}:{person.name}:{p.sha256}"
                a = cache.rows.get(key)
                if a is not None and a.mouthpiece is not None and a.mouthpiece.score is not None:
                    scores["synthetic (tuning generator)"].append(float(a.mouthpiece.score))
        for data in person.bare[::3]:  # the first photo's frame of each test
            rgb = decode(data)
            f = detect(rgb)
            if f is None:
                continue
            scores["bare face"].append(
                mouthpiece_fraction(rgb, f.box, f.landmarks, settings.mouthpiece_skin_sigma)
            )
            for k in HELDOUT_POSITIVE + HELDOUT_NEGATIVE:
                occ = decode(jpeg(heldout_occluder(rgb, f, k, rng), 90))
                of = detect(occ)
                scores[k].append(
                    mouthpiece_fraction(occ, of.box, of.landmarks, settings.mouthpiece_skin_sigma)
                    if of is not None
                    else float("nan")
                )
    out: dict[str, Any] = {"threshold": t, "kinds": {}}
    for k, v in scores.items():
        arr = np.array(v, dtype=np.float64)
        positive = k not in ("bare face", *HELDOUT_NEGATIVE)
        called = np.isfinite(arr) & (arr >= t)
        correct = called if positive else ~called
        out["kinds"][k] = {
            "n": int(arr.size),
            "should_be": "visible" if positive else "not visible",
            "accuracy": float(correct.mean()) if arr.size else float("nan"),
            "median_fraction": float(np.nanmedian(arr)) if np.isfinite(arr).any() else float("nan"),
        }
    kinds = out["kinds"]
    pos = [kinds[k]["accuracy"] for k in HELDOUT_POSITIVE if k != "skin_tone"]
    neg = [kinds[k]["accuracy"] for k in ("bare face", *HELDOUT_NEGATIVE)]
    out["heldout_balanced_accuracy"] = float((np.mean(pos) + np.mean(neg)) / 2)
    return out


def load_or_build(use_cache: bool, port: EngineFacePort, settings: SobrietySettings) -> list[Person]:
    key = hashlib.sha256(
        (
            GENERATOR_VERSION + "".join(f"{p.name}:{p.stat().st_size}" for p in sorted(VIDEO.glob("*.mp4")))
        ).encode()
    ).hexdigest()
    if use_cache and CACHE.is_file():
        with CACHE.open("rb") as f:
            stored = pickle.load(f)  # our own cache file under var/, written below
        if stored.get("key") == key:
            return list(stored["people"])
    people = build_people(port, settings)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with CACHE.open("wb") as f:
        pickle.dump({"key": key, "people": people}, f)
    return people


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--json", action="store_true", help="print every test's result as JSON too")
    args = ap.parse_args()
    settings = SobrietySettings()
    from identity.face.config import FaceSettings
    from identity.face.engine import FaceEngine

    engine = FaceEngine(ROOT / "var" / "models", FaceSettings())
    port = EngineFacePort(engine)
    t0 = time.perf_counter()
    people = load_or_build(not args.no_cache, port, settings)
    print(f"station tests built in {time.perf_counter() - t0:.0f} s: {len(people)} people")
    cache = AnalysisCache(None if args.no_cache else ANALYSES, settings)
    res = run(people, port, settings, cache)
    gen, rs = res["genuine"], res["resent"]
    first_tests = [g for g in gen if g["test"] == 0]
    later = [g for g in gen if g["test"] > 0]
    print(
        f"\nGenuine station tests ({len(gen)}; {len(later)} with earlier tests of the same person at the station):"
    )
    print(f"  PASS (every breath-photo check)      {np.mean([g['pass'] for g in gen]):6.1%}   target >= 95%")
    print(f"  PASS, consecutive tests only         {np.mean([g['pass'] for g in later]):6.1%}")
    print(
        f"  reuse check PASS, consecutive tests  {np.mean([g['reuse_code'] == 'photos_new' for g in later]):6.1%}"
    )
    print(f"  first tests PASS                     {np.mean([g['pass'] for g in first_tests]):6.1%}")
    reasons: dict[str, int] = {}
    for g in gen:
        for r in g["not_passed"]:
            reasons[r] = reasons.get(r, 0) + 1
    print(f"  not-PASS reasons (tests): {reasons or 'none'}")
    for g in gen:
        if not g["pass"]:
            print(f"    {g['person']} test {g['test']} (frames {g['frames']}): {g['not_passed']}")
    print(
        f"\nRe-sent photos ({len(rs)} tests = {len(people)} people x {len(RESENT)} variants, 3 photos each):"
    )
    print(f"  caught (reuse check not PASS)        {np.mean([r['caught'] for r in rs]):6.1%}   target 100%")
    for name in RESENT:
        rows = [r for r in rs if r["variant"] == name]
        print(
            f"    {name:28s} caught {sum(r['caught'] for r in rows)}/{len(rows)}  "
            f"outcomes {sorted({r['outcome'] + ':' + r['code'] for r in rows})}"
        )
    new_res = np.array([min(g["reuse_residuals"]) for g in later if g["reuse_residuals"]])
    per_photo = [x for r in rs if r["variant"] != "byte_identical" for x in r["photo_min_residuals"]]
    re_res = np.array([x for x in per_photo if x is not None])
    thr = settings.reuse_same_moment_max_residual
    print(
        f"  edited re-sent photos caught one by one (residual <= {thr:g} to an earlier photo): "
        f"{int((re_res <= thr).sum())}/{len(per_photo)}"
    )
    if new_res.size and re_res.size:
        print(
            f"\nReuse residual (grey levels, p90 over the face after alignment; threshold "
            f"{settings.reuse_same_moment_max_residual:g}):\n"
            f"  new moment (closest earlier photo per test) min {new_res.min():.1f} p5 "
            f"{np.percentile(new_res, 5):.1f} median {np.median(new_res):.1f}  n={new_res.size}\n"
            f"  re-sent, edited (per photo, closest)        max {re_res.max():.1f} p95 "
            f"{np.percentile(re_res, 95):.1f} median {np.median(re_res):.1f}  n={re_res.size}"
        )

    def detect(rgb: np.ndarray) -> FaceObservation | None:
        """Largest face, box + 68 landmarks only: the heuristic needs no embedding."""
        faces = engine.detect(rgb)
        if not faces:
            return None
        b = faces[0].box
        return FaceObservation(
            FaceBox(b.left, b.top, b.right, b.bottom), np.asarray(faces[0].landmarks, dtype=np.float64)
        )

    mp = mouthpiece_study(people, detect, settings, cache)
    print(f"\nMouthpiece heuristic per photo on station photos (threshold {mp['threshold']}):")
    for k, v in mp["kinds"].items():
        print(
            f"  {k:30s} should be {v['should_be']:12s} correct {v['accuracy']:6.1%}  "
            f"median fraction {v['median_fraction']:.2f}  n={v['n']}"
        )
    print(
        f"  held-out balanced accuracy (device kinds vs bare/hand-only) {mp['heldout_balanced_accuracy']:.1%}"
    )
    print(f"\n{res['photos']} photos validated in {res['wall_s']:.0f} s")
    if args.json:
        print(json.dumps({**res, "mouthpiece": mp}, indent=1, default=str))


if __name__ == "__main__":
    main()
