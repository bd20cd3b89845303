"""Breath photos: face scores under a mouthpiece, pHash near duplicates, time per test; prints figures.

    .venv/bin/python benchmarks/breath_occlusion.py [--engine identity|dlib] [--write] [--runs 20] [--max-pairs 200]

Data: the 200 LFW View-2 pairs in ../shared/data/faces/lfw-dev-pairs.csv (100 same, 100 different).
Face engine (--engine): `identity` (default) is the service's engine through sobriety.face_port
(identity.face's detector cascade, 68 landmarks, aligned chip, flip-averaged L2-normalised ResNet
embedding; Euclidean distance between unit vectors), the one the breath-test API runs; `dlib` is
sobriety.face_dlib (face_recognition: HOG upsampled once, raw ResNet embedding, Euclidean distance). Gallery = unoccluded image; probe = the other image, unoccluded and with the synthetic
mouthpiece of sobriety.occlusion (detected again on the occluded image, as in production).
Genuine scores: the 100 listed same pairs. Impostor scores: every ordered pair of images of different
people among all images of the 200 pairs (tens of thousands), so FAR 0.1% is measurable.
A probe whose face is not found counts as a rejection in TAR (failure to acquire).

pHash: each image against re-encoded (JPEG q=50), resized (0.5x, 1.5x), slightly cropped (4% and 8% per
side) and combined copies (near duplicates, must match) and against every other photo of the same
person and a sample of other people (must not match).

With --write the derived policy goes to sobriety/occlusion_calibration.json (the defaults in
sobriety/config.py must then be updated to match; tests/unit/test_sobriety_photos.py checks they do).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from sobriety.config import SobrietySettings  # noqa: E402
from sobriety.face_dlib import DlibFacePort  # noqa: E402
from sobriety.face_port import EngineFacePort  # noqa: E402
from sobriety.occlusion import mouthpiece_fraction, occlude_mouth  # noqa: E402
from sobriety.photos import (  # noqa: E402
    PHASH_CROPS,
    BreathPhoto,
    FaceObservation,
    InMemoryPhotoIndex,
    analyse_breath_photos,
    hamming,
    judge_breath_photos,
    phash,
    phash_set,
    set_distance,
)
from sobriety.reading import (  # noqa: E402
    InMemoryDeviceRegistry,
    InMemoryNonceLedger,
    RegisteredDevice,
    admit_submission,
    validate_reading,
)
from sobriety.simulator import build_reading, public_key_b64, sign_reading  # noqa: E402

FACES = ROOT / ".." / "shared" / "data" / "faces"
CALIBRATION = ROOT / "sobriety" / "occlusion_calibration.json"


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def person_of(rel: str) -> str:
    return rel.split("/")[1]


def largest(faces: list[FaceObservation]) -> FaceObservation | None:
    return max(faces, key=lambda f: f.box.width * f.box.height) if faces else None


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Largest distance threshold (accept d <= t) whose impostor accept rate is <= far."""
    srt = np.sort(impostor)
    k = int(np.floor(far * len(srt)))  # at most k impostors may be accepted
    if k >= len(srt):
        return float(srt[-1])
    return float(np.nextafter(srt[k], -np.inf))


def tar(genuine: np.ndarray, n_genuine: int, t: float) -> float:
    """Genuine accept rate; `genuine` holds distances of acquired probes, n_genuine counts all pairs."""
    return float((genuine <= t).sum() / n_genuine)


def eer(genuine: np.ndarray, n_genuine: int, impostor: np.ndarray) -> tuple[float, float]:
    best = (1.0, 0.0)
    for t in np.linspace(0.2, 1.2, 1001):
        frr = 1.0 - tar(genuine, n_genuine, t)
        far = float((impostor <= t).mean())
        if abs(frr - far) < abs(best[0] - best[1]) or best == (1.0, 0.0):
            best = (frr, far)
            best_t = float(t)
    return (best[0] + best[1]) / 2, best_t


def report(name: str, genuine: np.ndarray, n_genuine: int, impostor: np.ndarray) -> dict[str, float]:
    t01, t1 = threshold_at_far(impostor, 1e-3), threshold_at_far(impostor, 1e-2)
    e, et = eer(genuine, n_genuine, impostor)
    row = {
        "tar_far_0.1%": tar(genuine, n_genuine, t01),
        "thr_far_0.1%": t01,
        "tar_far_1%": tar(genuine, n_genuine, t1),
        "thr_far_1%": t1,
        "eer": e,
        "thr_eer": et,
    }
    print(
        f"  {name:28s} TAR@FAR0.1% {row['tar_far_0.1%']:6.1%} (t={t01:.3f})  "
        f"TAR@FAR1% {row['tar_far_1%']:6.1%} "
        f"(t={t1:.3f})  EER {e:5.1%} (t={et:.3f})  genuine n={n_genuine} impostor n={len(impostor)}"
    )
    return row


def phash_study(paths: dict[str, np.ndarray]) -> dict[str, object]:
    def jpeg(im: np.ndarray, q: int) -> np.ndarray:
        out = np.asarray(
            cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)
        )
        return out

    def area(im: np.ndarray, f: float) -> np.ndarray:
        out: np.ndarray = cv2.resize(
            im, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
        )
        return out

    variants: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "jpeg_q50": lambda im: jpeg(im, 50),
        "resize_0.5": lambda im: area(im, 0.5),
        "resize_1.5": lambda im: area(im, 1.5),
        "crop_4%": lambda im: _crop(im, 0.04),
        "crop_8%": lambda im: _crop(im, 0.08),
        "crop_6%_left_top": lambda im: np.ascontiguousarray(
            im[int(0.06 * im.shape[0]) :, int(0.06 * im.shape[1]) :]
        ),
        "crop_5%_right": lambda im: np.ascontiguousarray(im[:, : im.shape[1] - int(0.05 * im.shape[1])]),
        "crop4_resize0.7_q60": lambda im: jpeg(area(_crop(im, 0.04), 0.7), 60),
    }
    single = {k: phash(v) for k, v in paths.items()}
    sets = {k: phash_set(v) for k, v in paths.items()}
    near1: dict[str, list[int]] = {name: [] for name in variants}
    nears: dict[str, list[int]] = {name: [] for name in variants}
    for k, im in paths.items():
        bgr = cv2.cvtColor(im, cv2.COLOR_RGB2BGR)
        for name, fn in variants.items():
            copy = cv2.cvtColor(fn(bgr), cv2.COLOR_BGR2RGB)
            near1[name].append(hamming(single[k], phash(copy)))
            nears[name].append(set_distance(sets[k], phash_set(copy)))
    keys = sorted(paths)
    same1: list[int] = []
    diff1: list[int] = []
    sames: list[int] = []
    diffs: list[int] = []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            is_same = person_of(a) == person_of(b)
            (same1 if is_same else diff1).append(hamming(single[a], single[b]))
            (sames if is_same else diffs).append(set_distance(sets[a], sets[b]))
    print(
        f"\npHash (64-bit DCT) on {len(keys)} LFW images: one global hash | whole vs crops "
        "(sobriety.photos.set_distance, "
        f"{len(PHASH_CROPS)} hashes per photo)"
    )
    for name in variants:
        a1, a2 = np.array(near1[name]), np.array(nears[name])
        print(
            f"  near-duplicate {name:20s} median {np.median(a1):4.1f} max {a1.max():3d} | "
            f"median {np.median(a2):4.1f} p95 {np.percentile(a2, 95):4.1f} max {a2.max():3d}"
        )
    for label, x1, x2 in (("different photo, same person", same1, sames), ("different person", diff1, diffs)):
        b1, b2 = np.array(x1), np.array(x2)
        print(
            f"  {label:35s} n={len(b2):5d} min {b1.min():3d} median {np.median(b1):4.1f} | min {b2.min():3d} "
            f"p0.1 {np.percentile(b2, 0.1):4.1f} p1 {np.percentile(b2, 1):4.1f} median {np.median(b2):4.1f}"
        )
    all_near = np.array([d for v in nears.values() for d in v])
    same_a, diff_a = np.array(sames), np.array(diffs)
    print("  crops-set threshold  near-dup recall  same-person FMR  other-person FMR")
    for t in range(2, 18, 2):
        print(
            f"  {t:19d}  {np.mean(all_near <= t):15.1%}  {np.mean(same_a <= t):15.2%}  "
            f"{np.mean(diff_a <= t):16.3%}"
        )
    # Policy: one bit below the smallest distance any different photo (same person or not) reached, so the
    # closest different photos seen are still a bit's margin away.
    chosen = int(min(same_a.min(), diff_a.min()) - 2)
    print(
        f"  chosen threshold {chosen}: near-dup recall {np.mean(all_near <= chosen):.1%} (per variant: "
        + ", ".join(f"{n} {np.mean(np.array(v) <= chosen):.0%}" for n, v in nears.items())
        + f"), same-person FMR {np.mean(same_a <= chosen):.2%}, "
        f"other-person FMR {np.mean(diff_a <= chosen):.3%}"
    )
    return {
        "phash_max_hamming": chosen,
        "crops": [list(c) for c in PHASH_CROPS],
        "near_dup_recall": float(np.mean(all_near <= chosen)),
        "near_dup_recall_per_variant": {n: float(np.mean(np.array(v) <= chosen)) for n, v in nears.items()},
        "same_person_min": int(same_a.min()),
        "other_person_min": int(diff_a.min()),
        "n_images": len(keys),
    }


def _crop(im: np.ndarray, frac: float) -> np.ndarray:
    h, w = im.shape[:2]
    dy, dx = int(h * frac), int(w * frac)
    return np.ascontiguousarray(im[dy : h - dy, dx : w - dx])


def on_canvas(rgb: np.ndarray) -> np.ndarray:
    """A station-sized 640x480 photo: the face image scaled to 480x480, centred on grey."""
    canvas = np.full((480, 640, 3), 128, dtype=np.uint8)
    canvas[:, 80:560] = cv2.resize(rgb, (480, 480), interpolation=cv2.INTER_CUBIC)
    return canvas


def time_breath_test(
    port: DlibFacePort | EngineFacePort,
    images: dict[str, np.ndarray],
    faces: dict[str, FaceObservation | None],
    runs: int,
    settings: SobrietySettings,
) -> None:
    found = {k: f for k, f in faces.items() if f is not None}
    people: dict[str, list[str]] = {}
    for k in sorted(found):
        people.setdefault(person_of(k), []).append(k)
    multi = [v for v in people.values() if len(v) >= 2]
    key = Ed25519PrivateKey.generate()
    devices = InMemoryDeviceRegistry()
    devices.add(RegisteredDevice("SIM-1", public_key_b64(key)))
    ledger, index = InMemoryNonceLedger(), InMemoryPhotoIndex()
    rng = np.random.default_rng(1)
    times = []
    for run in range(runs):
        enrol, probe = multi[run % len(multi)][:2]
        gallery = [port.embed(images[enrol], found[enrol])]
        jpegs = []
        for j in range(3):
            occ, _ = occlude_mouth(images[probe], found[probe].box, found[probe].landmarks, rng)
            shifted = np.roll(on_canvas(occ), 3 * j, axis=1)  # the person moves a little between shots
            jpegs.append(
                cv2.imencode(
                    ".jpg", cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
                )[1].tobytes()
            )
        now = datetime.now(UTC)
        start = now - timedelta(seconds=6)
        reading = build_reading(
            serial="SIM-1",
            person_id="p1",
            brac=0.0,
            unit="g/210L",
            calibrated_on=date.today() - timedelta(days=10),
            blow_start=start,
            blow_end=start + timedelta(seconds=4),
            photo_times=[start + timedelta(seconds=1 + j) for j in range(3)],
            timestamp=now,
        )
        body, sig = sign_reading(reading, key)
        t0 = time.perf_counter()
        adm = admit_submission(body, sig, devices, ledger, now, settings)
        assert adm.reading is not None, adm.checks
        validate_reading(adm.reading, now, settings, photo_count=3)
        photos = [BreathPhoto.from_jpeg(f"r{run}p{j}", b) for j, b in enumerate(jpegs)]
        analyses = analyse_breath_photos([p for p in photos if p is not None], gallery, port, settings)
        judge_breath_photos(analyses, index, f"t{run}", settings)
        times.append(time.perf_counter() - t0)
    arr = np.array(times) * 1000
    print(
        f"\nTime to decide one breath test (signature + reading + 3 photos 640x480 JPEG: decode, HOG face, "
        f"68 landmarks, embedding, quality, mouthpiece, pHash, index), {runs} runs, "
        "one process:"
    )
    print(
        f"  p50 {np.percentile(arr, 50):.0f} ms   p95 {np.percentile(arr, 95):.0f} ms   "
        f"max {arr.max():.0f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="write sobriety/occlusion_calibration.json")
    ap.add_argument("--runs", type=int, default=20, help="breath tests timed")
    ap.add_argument("--max-pairs", type=int, default=200, help="use only the first N pairs (quick runs)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--engine", choices=["identity", "dlib"], default="identity", help="face engine behind the FacePort"
    )
    args = ap.parse_args()
    settings = SobrietySettings()

    with (FACES / "lfw-dev-pairs.csv").open() as f:
        pairs = [(r["img1"], r["img2"], r["same"] == "1") for r in csv.DictReader(f)][: args.max_pairs]
    rels = sorted({p for a, b, _ in pairs for p in (a, b)})
    images = {r: load_rgb(FACES / r) for r in rels}

    t0 = time.perf_counter()
    port: DlibFacePort | EngineFacePort
    if args.engine == "identity":
        from identity.face.config import FaceSettings
        from identity.face.engine import FaceEngine

        port = EngineFacePort(FaceEngine(ROOT / "var" / "models", FaceSettings()))
        timing_port: DlibFacePort | EngineFacePort = port
        detector = "identity.face cascade (HOG fast pass at 320 px, HOG upsample 1, CNN fallback)"
        distance = "euclidean between L2-normalised flip-averaged embeddings"
    else:
        port = DlibFacePort(ROOT / "var" / "models")
        # Station photos (640x480, face ~200 px) need no upsampling; LFW's 250x250 images did.
        timing_port = DlibFacePort(ROOT / "var" / "models", upsample=0)
        detector = "dlib HOG, upsample 1"
        distance = "euclidean"
    print(
        f"engine: {args.engine}: {detector} + 68 landmarks + {port.model.name if port.model else '?'}; "
        f"load {time.perf_counter() - t0:.1f} s; {len(pairs)} pairs, {len(rels)} images"
    )

    faces, occ_faces, emb, occ_emb = {}, {}, {}, {}
    frac_bare, frac_occ = [], []
    t0 = time.perf_counter()
    for r in rels:
        rng = np.random.default_rng(int(hashlib.sha256(f"{args.seed}:{r}".encode()).hexdigest()[:8], 16))
        face = largest(port.analyse(images[r]))
        faces[r] = face
        if face is None:
            continue
        emb[r] = port.embed(images[r], face)
        occ, _ = occlude_mouth(images[r], face.box, face.landmarks, rng)
        of = largest(port.analyse(occ))
        occ_faces[r] = of
        if of is not None:
            occ_emb[r] = port.embed(occ, of)
        frac_bare.append(
            mouthpiece_fraction(images[r], face.box, face.landmarks, settings.mouthpiece_skin_sigma)
        )
        if of is not None:
            frac_occ.append(mouthpiece_fraction(occ, of.box, of.landmarks, settings.mouthpiece_skin_sigma))
    n_face = sum(f is not None for f in faces.values())
    n_occ = sum(f is not None for f in occ_faces.values())
    print(
        f"faces found: unoccluded {n_face}/{len(rels)}, occluded {n_occ}/{n_face} "
        f"({time.perf_counter() - t0:.0f} s)"
    )

    same_pairs = [(a, b) for a, b, s in pairs if s]
    g_bare = np.array([np.linalg.norm(emb[a] - emb[b]) for a, b in same_pairs if a in emb and b in emb])
    g_occ = np.array(
        [np.linalg.norm(emb[a] - occ_emb[b]) for a, b in same_pairs if a in emb and b in occ_emb]
    )
    keys = sorted(emb)
    gal = np.stack([emb[k] for k in keys])
    pid = np.array([person_of(k) for k in keys])
    other = pid[:, None] != pid[None, :]
    d_bare = np.linalg.norm(gal[:, None, :] - gal[None, :, :], axis=2)
    i_bare = d_bare[other]
    okeys = [k for k in keys if k in occ_emb]
    probe = np.stack([occ_emb[k] for k in okeys])
    ppid = np.array([person_of(k) for k in okeys])
    d_occ = np.linalg.norm(gal[:, None, :] - probe[None, :, :], axis=2)
    i_occ = d_occ[pid[:, None] != ppid[None, :]]

    n_gen = len(same_pairs)
    print("\nFace verification, gallery unoccluded, probe = second image of the pair")
    bare = report("unoccluded probe", g_bare, n_gen, i_bare)
    occd = report("mouthpiece-occluded probe", g_occ, n_gen, i_occ)
    t_std = bare["thr_far_0.1%"]
    print(
        f"  occluded probe at the unoccluded FAR-0.1% threshold {t_std:.3f}: "
        f"TAR {tar(g_occ, n_gen, t_std):.1%}, "
        f"FAR {float((i_occ <= t_std).mean()):.3%}"
    )
    print(
        f"  genuine distance median: unoccluded {np.median(g_bare):.3f}, occluded {np.median(g_occ):.3f}; "
        f"impostor median: {np.median(i_bare):.3f} -> {np.median(i_occ):.3f}"
    )
    accept = round(float(np.floor(float(occd["thr_far_0.1%"]) * 100) / 100), 2)
    # A per-photo FAIL must be clear: above every genuine occluded distance measured, with a 0.05 margin.
    reject = round(float(np.ceil(max(float(g_occ.max()) + 0.05, accept + 0.05) * 100) / 100), 2)
    print(
        f"  policy: accept <= {accept:.2f} (FAR-0.1% on occluded probes, rounded down), "
        f"reject > {reject:.2f} (max occluded genuine {g_occ.max():.3f} + 0.05); TAR at accept "
        f"{tar(g_occ, n_gen, accept):.1%}, genuine above reject {int((g_occ > reject).sum())}/{len(g_occ)}, "
        f"impostors at or below reject {float((i_occ <= reject).mean()):.2%}"
    )

    fb, fo = np.array(frac_bare), np.array(frac_occ)
    fb, fo = fb[np.isfinite(fb)], fo[np.isfinite(fo)]
    print("\nMouthpiece visibility heuristic (fraction of lower-face pixels unlike cheek skin)")
    print(
        f"  bare faces      median {np.median(fb):.2f}  p90 {np.percentile(fb, 90):.2f}  "
        f"p95 {np.percentile(fb, 95):.2f}"
    )
    print(
        f"  synthetic piece median {np.median(fo):.2f}  p5 {np.percentile(fo, 5):.2f}  "
        f"p10 {np.percentile(fo, 10):.2f}"
    )
    best_t, best_err = 0.0, 2.0
    for t in np.linspace(0.05, 0.95, 91):
        err = float(np.mean(fb >= t) + np.mean(fo < t))
        if err < best_err:
            best_t, best_err = float(t), err
    best_t = round(best_t, 2)
    print(
        f"  threshold {best_t:.2f}: bare faces called 'visible' {np.mean(fb >= best_t):.1%}, occluded called "
        f"'not visible' {np.mean(fo < best_t):.1%} (synthetic occluder: optimistic)"
    )

    ph = phash_study(images)
    time_breath_test(timing_port, images, faces, args.runs, settings)

    if args.write:
        record = {
            "generated_by": "benchmarks/breath_occlusion.py",
            "date": date.today().isoformat(),
            "data": "LFW View-2 fold-1 dev pairs (../shared/data/faces/lfw-dev-pairs.csv)",
            "engine": {
                "port": args.engine,
                "detector": detector,
                "landmarks": "dlib 68",
                "embedding": port.model.to_dict() if port.model else None,
                "distance": distance,
            },
            "faces_found": {"unoccluded": n_face, "occluded": n_occ, "images": len(rels)},
            "unoccluded": bare,
            "occluded_probe": occd,
            "genuine_distance": {
                "unoccluded_median": float(np.median(g_bare)),
                "occluded_median": float(np.median(g_occ)),
                "occluded_max": float(g_occ.max()),
                "occluded_tar_at_unoccluded_far_0.1%_threshold": tar(g_occ, n_gen, t_std),
            },
            "mouthpiece_heuristic": {
                "bare_called_visible": float(np.mean(fb >= best_t)),
                "occluded_called_not_visible": float(np.mean(fo < best_t)),
            },
            "policy": {
                "occluded_accept_distance": accept,
                "occluded_reject_distance": reject,
                "mouthpiece_min_fraction": best_t,
                "phash_max_hamming": ph["phash_max_hamming"],
            },
            "phash": ph,
        }
        CALIBRATION.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {CALIBRATION.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
