"""Passive PAD (and active liveness for stills) on generated attacks built from real faces; prints figures.

    .venv/bin/python benchmarks/pad_generated.py [--n-lfw 40] [--seed 7] [--threshold T]

Live set: skimage's astronaut plus one LFW image per person from ../shared/data/faces/lfw-dev.
Attacks per live image (identity/pad/attacks.py): "still_photo" (the same image repeated as frames),
"screen_replay" and "print". Passive PAD judges a still exactly like its source image, so its APCER is
the live pass rate; the still-photo attack is meant to be caught by the active challenge, which this
script also runs on the repeated frames (dlib 68-point landmarks, identity/liveness).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from identity.checks import Outcome  # noqa: E402
from identity.pad.attacks import AttackType, print_attack, screen_replay  # noqa: E402
from identity.pad.config import PadSettings  # noqa: E402

LFW = ROOT / ".." / "shared" / "data" / "faces" / "lfw-dev"


def live_images(n_lfw: int) -> list[tuple[str, np.ndarray]]:
    from PIL import Image
    from skimage import data

    images: list[tuple[str, np.ndarray]] = [("astronaut", np.asarray(data.astronaut()))]
    for person in sorted(LFW.iterdir())[:n_lfw]:
        first = sorted(person.glob("*.jpg"))[0]
        images.append((first.name, np.asarray(Image.open(first).convert("RGB"))))
    return images


def rates(scores: list[float | None], outcomes: list[Outcome], threshold: float) -> str:
    judged = [s for s in scores if s is not None]
    if not judged:
        return "no face found in any"
    passed = sum(o is Outcome.PASS for o in outcomes) / len(judged)
    failed = sum(o is Outcome.FAIL for o in outcomes) / len(judged)
    review = sum(o is Outcome.INCONCLUSIVE and s is not None for o, s in zip(outcomes, scores, strict=True))
    binary_live = sum(s >= threshold for s in judged) / len(judged)
    return (
        f"n={len(judged):3d} (no face {len(scores) - len(judged)})  PASS {passed:6.1%}  FAIL {failed:6.1%}  "
        f"review {review:3d}  score>=thr {binary_live:6.1%}  median {statistics.median(judged):.3f}"
    )


def still_photo_liveness(images: list[tuple[str, np.ndarray]], seed: int) -> str:
    import face_recognition

    from identity.liveness.challenge import Observations, evaluate_challenge, make_challenge
    from identity.liveness.config import LivenessSettings
    from identity.liveness.landmarks import (
        eye_aspect_ratio,
        landmarks_from_face_recognition,
        mouth_open_ratio,
        yaw_deg,
    )

    settings = LivenessSettings()
    rng = np.random.default_rng(seed)
    fails = reviews = passes = 0
    for _, img in images:
        challenge = make_challenge(rng, settings)
        boxes = face_recognition.face_locations(img)
        largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]), default=None)
        found = face_recognition.face_landmarks(img, [largest]) if largest else []
        duration = challenge.total_s()
        # A still injected as video at 15 fps: every frame is the same image, so dlib finds the same
        # landmarks in each; they are computed once.
        ts = np.arange(0.0, duration, 1.0 / 15.0)
        if found:
            pts = landmarks_from_face_recognition(found[0])
            yaw, ear, mouth = yaw_deg(pts), eye_aspect_ratio(pts), mouth_open_ratio(pts)
        else:
            yaw = ear = mouth = float("nan")
        audio_ts = np.arange(0.0, duration, 0.02)
        # A played recording: speech-like energy bursts while the still's mouth never moves.
        energy = np.abs(np.sin(audio_ts * 2.1)) * (rng.random(audio_ts.size) > 0.3)
        obs = Observations(
            frame_ts=ts,
            yaw_deg=np.full(ts.size, yaw),
            ear=np.full(ts.size, ear),
            mouth_ratio=np.full(ts.size, mouth),
            audio_ts=audio_ts,
            audio_energy=energy,
            prompt_ts=challenge.planned_prompt_ts(),
        )
        outcomes = [r.outcome for r in evaluate_challenge(challenge, obs, settings)]
        if Outcome.FAIL in outcomes:
            fails += 1
        elif Outcome.INCONCLUSIVE in outcomes or Outcome.TECHNICAL in outcomes:
            reviews += 1
        else:
            passes += 1
    n = len(images)
    return f"n={n:3d}  challenge PASS {passes / n:6.1%}  FAIL {fails / n:6.1%}  review {reviews / n:6.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-lfw", type=int, default=40, help="LFW people to use (one image each).")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threshold", type=float, default=None, help="Override PadSettings.live_threshold.")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    args = parser.parse_args()

    from identity.pad.engine import PadEngine

    settings = PadSettings() if args.threshold is None else PadSettings(live_threshold=args.threshold)
    engine = PadEngine(args.models_dir, settings)
    rng = np.random.default_rng(args.seed)
    images = live_images(args.n_lfw)
    rows: dict[str, tuple[list[float | None], list[Outcome]]] = {
        k: ([], []) for k in ("live", AttackType.SCREEN_REPLAY, AttackType.PRINT)
    }
    for _, img in images:
        for kind, attack in (
            ("live", img),
            (AttackType.SCREEN_REPLAY, screen_replay(img, rng)),
            (AttackType.PRINT, print_attack(img, rng)),
        ):
            result = engine.score_frame_bgr(np.ascontiguousarray(attack[:, :, ::-1]))
            rows[kind][0].append(result.score)
            rows[kind][1].append(result.outcome)

    thr = settings.live_threshold
    print(f"passive PAD, live_threshold {thr:.3f}, review margin +-{settings.inconclusive_margin:.3f}")
    print(f"  live (bona fide)      {rates(*rows['live'], thr)}   <- BPCER = FAIL rate")
    for kind in (AttackType.SCREEN_REPLAY, AttackType.PRINT):
        print(f"  {kind.value:20}  {rates(*rows[kind], thr)}   <- APCER = PASS rate")
    still = AttackType.STILL_PHOTO.value
    print(f"  {still:20}  {rates(*rows['live'], thr)}   <- APCER = PASS rate (same pixels as live)")
    all_scores = sorted((s, k) for k, (scores, _) in rows.items() for s in scores if s is not None)
    live_scores = [s for s, k in all_scores if k == "live"]
    attack_scores = [s for s, k in all_scores if k != "live"]
    if live_scores and attack_scores:
        for target in (0.0, 0.05, 0.10):
            # Lowest threshold with APCER <= target (binary): just above the top attacks.
            k = int(np.floor(target * len(attack_scores)))
            t = sorted(attack_scores, reverse=True)[k] + 1e-6 if k < len(attack_scores) else 0.0
            bpcer = sum(s < t for s in live_scores) / len(live_scores)
            print(
                f"  threshold for binary APCER <= {target:4.0%} (screen+print): {t:.3f} -> BPCER {bpcer:.1%}"
            )
    print("active challenge on still-photo frames (should FAIL):")
    print(f"  {AttackType.STILL_PHOTO.value:20}  {still_photo_liveness(images, args.seed)}")


if __name__ == "__main__":
    main()
