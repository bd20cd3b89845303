"""Face pipeline speed: ours vs the naive face_recognition pipeline, side by side on the same frames.

Frames (640x480 RGB): a short selfie-like "video" of skimage's astronaut (public domain; face ~180 px)
moving a few pixels, with still stretches and sensor noise, followed by LFW dev images padded to 640x480 (other people).
The enrolled template is made from the original astronaut photo.

- naive: face_recognition.face_encodings(frame) on every frame (HOG with 1x upsampling on the full
  frame, 5-point alignment, one encoding), match when euclidean distance <= 0.6 (its default tolerance).
- ours: FaceEngine session path (HOG on a frame downscaled to detect_max_side_px, full resolution only
  when that finds nothing; 68 landmarks; encoding given the box; chips encoded in batches), match when
  cosine distance < the calibrated threshold at the configured target FMR. Measured without and with
  near-duplicate frame skipping.

Prints per-frame milliseconds of each and whether both reach the same match / no-match decision.
Run: .venv/bin/python benchmarks/face_speed.py [--frames 40] [--lfw 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from identity.face.config import FaceSettings  # noqa: E402
from identity.face.decode import DecodedImage, decode_image  # noqa: E402
from identity.face.engine import FaceEngine  # noqa: E402
from identity.face.matching import distance_to_template  # noqa: E402
from identity.face.results import FaceAnalysis  # noqa: E402

LFW = REPO / ".." / "shared" / "data" / "faces" / "lfw-dev"
W, H = 640, 480


def astronaut_video(n: int, seed: int = 0) -> list[np.ndarray]:
    """n 640x480 selfie-like frames: the astronaut's head (face ~180 px) drifting a few pixels, held
    still for 3 frames at a time, with sensor noise."""
    rng = np.random.default_rng(seed)
    head = data.astronaut()[0:320, 60:380]  # 320x320 around the face
    face = cv2.resize(head, (440, 440), interpolation=cv2.INTER_LINEAR)
    frames = []
    for i in range(n):
        step = i // 3  # still for 3 frames, then a small move: a person holding a phone
        dx = int(round(6 * np.sin(step / 2.0)))
        dy = int(round(4 * np.cos(step / 3.0)))
        canvas = np.full((H, W, 3), 90, np.uint8)
        x0, y0 = 100 + dx, 20 + dy
        canvas[y0 : y0 + 440, x0 : x0 + 440] = face
        noisy = canvas.astype(np.int16) + rng.normal(0, 2.0, canvas.shape).astype(np.int16)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


def lfw_frames(n: int) -> list[np.ndarray]:
    """n LFW images (one per person, sorted) padded to 640x480."""
    out = []
    for person in sorted(p for p in LFW.iterdir() if p.is_dir())[:n]:
        img = sorted(person.glob("*.jpg"))[0]
        decoded = decode_image(img.read_bytes(), FaceSettings())
        if not isinstance(decoded, DecodedImage):
            continue
        rgb = decoded.rgb
        canvas = np.full((H, W, 3), 90, np.uint8)
        y0, x0 = (H - rgb.shape[0]) // 2, (W - rgb.shape[1]) // 2
        canvas[y0 : y0 + rgb.shape[0], x0 : x0 + rgb.shape[1]] = rgb
        out.append(canvas)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="astronaut video frames")
    parser.add_argument("--lfw", type=int, default=10, help="padded LFW frames (other people)")
    args = parser.parse_args()

    import face_recognition  # the naive pipeline only

    frames = astronaut_video(args.frames) + lfw_frames(args.lfw)
    expected = [True] * args.frames + [False] * (len(frames) - args.frames)
    enrol_img = np.ascontiguousarray(data.astronaut())

    settings = FaceSettings()
    engine = FaceEngine(REPO / "var" / "models", settings)
    template, _ = engine.enrol([enrol_img])  # one photo is enough for a benchmark template
    if template is None:
        template = engine.enrol([enrol_img, enrol_img])[0]
    assert template is not None
    naive_template = face_recognition.face_encodings(enrol_img)[0]

    # Warm-up (first dlib calls allocate).
    face_recognition.face_encodings(frames[0])
    engine.analyse_many(frames[:1], session=True)

    t0 = time.perf_counter()
    naive: list[bool | None] = []
    for f in frames:
        encs = face_recognition.face_encodings(f)
        naive.append(None if not encs else bool(np.linalg.norm(encs[0] - naive_template) <= 0.6))
    naive_ms = (time.perf_counter() - t0) * 1e3 / len(frames)

    t0 = time.perf_counter()
    analyses = engine.analyse_many(frames, session=True)
    ours_ms = (time.perf_counter() - t0) * 1e3 / len(frames)
    thr = engine.thresholds.pass_below

    def decisions(items: list[FaceAnalysis]) -> list[bool | None]:
        return [
            None if a.embedding is None else distance_to_template(template.embeddings, a.embedding) < thr
            for a in items
        ]

    ours = decisions(analyses)

    t0 = time.perf_counter()
    skipped, dup_of = engine.analyse_frames(frames)
    skip_ms = (time.perf_counter() - t0) * 1e3 / len(frames)
    ours_skip = decisions(skipped)
    n_skipped = sum(d is not None for d in dup_of)

    def agree(a: list[bool | None], b: list[bool | None]) -> str:
        same = sum(x == y for x, y in zip(a, b, strict=True))
        right = sum(x == e for x, e in zip(a, expected, strict=True))
        return f"{same}/{len(a)} same decisions as naive, {right}/{len(a)} correct"

    detectors: dict[str, int] = {}
    for a in analyses:
        key = a.faces[0].detector if a.faces else "none"
        detectors[key] = detectors.get(key, 0) + 1
    print(
        f"frames: {len(frames)} at {W}x{H} ({args.frames} astronaut video, {len(frames) - args.frames} LFW padded)"
    )
    print(f"naive face_recognition per frame : {naive_ms:8.1f} ms   {agree(naive, naive)}")
    print(
        f"ours (no duplicate skipping)     : {ours_ms:8.1f} ms   {agree(ours, naive)}   "
        f"speed-up {naive_ms / ours_ms:.2f}x   detectors {detectors}"
    )
    print(
        f"ours (skip near-duplicates)      : {skip_ms:8.1f} ms   {agree(ours_skip, naive)}   "
        f"speed-up {naive_ms / skip_ms:.2f}x   ({n_skipped} frames reused)"
    )
    print(
        f"decision rules: naive euclidean <= 0.6; ours cosine < {thr:.4f} (target FMR {settings.target_fmr:g})"
    )
    gated = [(i, a.quality.code) for i, a in enumerate(analyses) if a.embedding is None]
    if gated:
        print(f"ours: frames without a decision (quality gate): {gated}")


if __name__ == "__main__":
    main()
