"""Breath-photo blur gate: choose `photo_min_sharpness` by identity-grouped CV on LFW dev faces; prints figures.

    .venv/bin/python benchmarks/breath_sharpness.py [--sigma-blurred 1.5] [--folds 5] [--every 1]

The gate (sobriety.photos.face_sharpness) reads the Laplacian variance of the upper half of the face box
scaled to `photo_sharpness_width_px` wide. Two classes from the dev faces under ../shared/data/faces:
"sharp" (the image as published) and "too blurred" (the same image after a Gaussian blur of
`--sigma-blurred` px at LFW scale; the face engine's own gate sits between sigma 1 and 1.5 on its chip).
A refused photo sends a genuine test to review, so the threshold is the highest one that refuses at most
`--max-sharp-reject` (2%) of the sharp tuning faces; the balanced-accuracy midpoint is printed beside it.
Faces are detected on the unblurred image (dlib HOG through identity.face.engine) and the same box is
used for both. The threshold is chosen on the tuning folds (people never in both a tuning and a test fold); printed: each held-out fold's error rates, the pooled
out-of-sample rates, the threshold on all faces, and, for reference, the station photos' values (the
photos of benchmarks/breath_station.py, if its cache var/breath_station_cache.pkl exists).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from identity.face.crossval import identity_folds  # noqa: E402
from sobriety.config import SobrietySettings  # noqa: E402
from sobriety.photos import face_sharpness  # noqa: E402

FACES = ROOT / ".." / "shared" / "data" / "faces"


def best_threshold(sharp: np.ndarray, blurred: np.ndarray, max_sharp_reject: float | None = None) -> float:
    """The gate threshold (sharp >= t passes) chosen on tuning faces.

    With `max_sharp_reject`: the highest threshold refusing at most that share of the sharp faces (a
    refused photo sends a genuine test to review, so that side is capped); without: the midpoint
    between neighbouring values maximising balanced accuracy.
    """
    if max_sharp_reject is not None:
        return float(np.quantile(sharp, max_sharp_reject, method="lower"))
    values = np.unique(np.concatenate([sharp, blurred]))
    cands = (values[:-1] + values[1:]) / 2
    best, best_t = -1.0, float(cands[0])
    for t in cands:
        acc = 0.5 * float((sharp >= t).mean()) + 0.5 * float((blurred < t).mean())
        if acc > best:
            best, best_t = acc, float(t)
    return best_t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma-blurred", type=float, default=1.5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--every", type=int, default=1, help="use every n-th image (speed)")
    ap.add_argument(
        "--max-sharp-reject",
        type=float,
        default=0.02,
        help="cap on the share of sharp tuning faces the gate may refuse (0 < x < 1)",
    )
    args = ap.parse_args()
    settings = SobrietySettings()
    from identity.face.config import FaceSettings
    from identity.face.engine import FaceEngine

    engine = FaceEngine(ROOT / "var" / "models", FaceSettings())
    paths = sorted((FACES / "lfw-dev").glob("*/*.jpg"))[:: args.every]
    rows = []
    for path in paths:
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = engine.detect(rgb)
        if not faces:
            continue
        b = faces[0].box
        h, w = rgb.shape[:2]
        sl = (slice(max(0, b.top), min(h, b.bottom)), slice(max(0, b.left), min(w, b.right)))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        blur = cv2.GaussianBlur(grey, (0, 0), args.sigma_blurred)
        width = settings.photo_sharpness_width_px
        rows.append((path.parent.name, face_sharpness(grey[sl], width), face_sharpness(blur[sl], width)))
    names = [r[0] for r in rows]
    sharp = np.array([r[1] for r in rows])
    blurred = np.array([r[2] for r in rows])
    folds = identity_folds(names, args.folds, seed=0)
    print(
        f"{len(rows)} LFW faces ({len(set(names))} people); width {settings.photo_sharpness_width_px} px; "
        f"blurred = Gaussian sigma {args.sigma_blurred} px"
    )
    print(
        f"  sharp   p1 {np.percentile(sharp, 1):.1f} p5 {np.percentile(sharp, 5):.1f} median {np.median(sharp):.1f}"
    )
    print(
        f"  blurred median {np.median(blurred):.1f} p95 {np.percentile(blurred, 95):.1f} "
        f"p99 {np.percentile(blurred, 99):.1f}"
    )
    rejected_sharp = caught_blur = 0
    for f in range(args.folds):
        tune, test = folds != f, folds == f
        t = best_threshold(sharp[tune], blurred[tune], args.max_sharp_reject)
        rs = int((sharp[test] < t).sum())
        cb = int((blurred[test] < t).sum())
        rejected_sharp += rs
        caught_blur += cb
        print(
            f"  fold {f}: threshold {t:.2f}; held-out sharp rejected {rs}/{int(test.sum())}, "
            f"blurred caught {cb}/{int(test.sum())}"
        )
    n = len(rows)
    print(
        f"out of sample (pooled): sharp faces rejected {rejected_sharp}/{n} = {rejected_sharp / n:.1%}, "
        f"blurred faces caught {caught_blur}/{n} = {caught_blur / n:.1%}"
    )
    print(
        f"threshold on all faces: {best_threshold(sharp, blurred, args.max_sharp_reject):.2f} "
        f"(rule: {'at most ' + format(args.max_sharp_reject, '.0%') + ' of sharp faces refused' if args.max_sharp_reject else 'balanced accuracy'}; "
        f"balanced-accuracy threshold {best_threshold(sharp, blurred):.2f}) "
        f"(shipped photo_min_sharpness {settings.photo_min_sharpness:g})"
    )
    cache = ROOT / "var" / "breath_station_cache.pkl"
    if cache.is_file():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import breath_station

        class _Station(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> object:
                # breath_station.py pickles its Person as __main__.Person.
                if name == "Person":
                    return breath_station.Person
                return super().find_class(module, name)

        with cache.open("rb") as fh:
            people = _Station(fh).load()["people"]  # our own cache under var/ (breath_station.py)
        vals = []
        for person in people:
            for test in person.tests:
                for data in test:
                    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                    faces = engine.detect(rgb)
                    if faces:
                        b = faces[0].box
                        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[
                            max(0, b.top) : b.bottom, max(0, b.left) : b.right
                        ]
                        vals.append(face_sharpness(g, settings.photo_sharpness_width_px))
        v = np.array(vals)
        print(
            f"station photos (breath_station.py): n={v.size} min {v.min():.1f} p5 {np.percentile(v, 5):.1f} "
            f"median {np.median(v):.1f}; below the shipped gate: {int((v < settings.photo_min_sharpness).sum())}"
        )


if __name__ == "__main__":
    main()
