"""Active-liveness checks on the real clips of ../shared/data/video, offline, at phone frame rates.

Measures what the shipped thresholds do on real faces (no WebRTC; `genuine_sessions.py` does the live
sessions): the labelled segments (media_server/simulator/labels.csv) are played by the simulator's
Performer as a compliant person would answer a prompt, the landmark series (dlib 68 points on every
native frame, cached in var/clip_series.npz) is sampled at each frame rate with several phases and
reaction delays, and the checks judge it.

Prints, per frame rate: blink PASS rate on blink answers and on look-only windows (false blink),
head-turn PASS rate for the prompted direction and for the opposite prompt, and lip/speech correlation
of own vs foreign audio on the GRID talking heads with the AV-sync outcome counts.

    .venv/bin/python benchmarks/liveness_clips.py [--fps 30 24 15 12 10 8] [--trials 12]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from identity.checks import Outcome  # noqa: E402
from identity.liveness.checks import TurnDirection, check_av_sync, check_blink, check_head_turn  # noqa: E402
from identity.liveness.config import LivenessSettings  # noqa: E402
from media_server.simulator.performer import (  # noqa: E402
    AUDIO_RATE_HZ,
    Action,
    Clip,
    Mode,
    Performer,
    load_clip,
    load_labels,
)

SHARED = Path(os.environ.get("KUZET_SHARED_DIR", ROOT.parent / "shared"))
VIDEO_DIR = SHARED / "data" / "video"
CACHE = ROOT / "var" / "clip_series.npz"
PROMPT_S = 2.0
ENERGY_BLOCK_S = 0.02


def landmark_series(clips: dict[str, Clip]) -> dict[str, np.ndarray]:
    """(n_frames, 3) yaw / EAR / mouth per clip, from dlib on every native frame (cached)."""
    if CACHE.exists():
        got = dict(np.load(CACHE))
        if all(name in got and len(got[name]) == len(c.frames) for name, c in clips.items()):
            return got
    from identity.face.config import FaceSettings
    from identity.face.engine import FaceEngine
    from identity.liveness.landmarks import eye_aspect_ratio, mouth_open_ratio, yaw_deg

    engine = FaceEngine(ROOT / "var" / "models", FaceSettings())
    out: dict[str, np.ndarray] = {}
    for name, clip in clips.items():
        rows = []
        for rgb in clip.frames:
            faces = engine.detect(rgb, thorough=False)
            if faces:
                pts = faces[0].landmarks.astype(np.float64)
                rows.append((yaw_deg(pts), eye_aspect_ratio(pts), mouth_open_ratio(pts)))
            else:
                rows.append((np.nan, np.nan, np.nan))
        out[name] = np.asarray(rows)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, **out)
    return out


def sampled(
    performer: Performer, series: np.ndarray, fps: float, phase_s: float, end_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Frame times and the (yaw, EAR, mouth) rows a camera at `fps` would deliver up to end_s."""
    ts = np.arange(phase_s, end_s, 1.0 / fps)
    rows = np.array([series[performer.frame_index(float(t))] for t in ts])
    return ts, rows


def run_step(
    clip: Clip,
    series: np.ndarray,
    answer: str | None,
    fps: float,
    rng: np.random.Generator,
    s: LivenessSettings,
) -> tuple[np.ndarray, np.ndarray, Performer]:
    performer = Performer(clip, Mode.GENUINE, rng, reaction_s=float(rng.uniform(0.4, 1.0)))
    if answer is not None:
        performer.on_prompt(PROMPT_S, answer)
    ts, rows = sampled(performer, series, fps, float(rng.uniform(0, 1.0 / fps)), PROMPT_S + s.motion_window_s)
    return ts, rows, performer


def energy(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    block = int(AUDIO_RATE_HZ * ENERGY_BLOCK_S)
    n = audio.size // block
    e = np.sqrt((audio[: n * block].astype(np.float64).reshape(n, block) ** 2).mean(axis=1))
    return (np.arange(n) + 0.5) * ENERGY_BLOCK_S, e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", type=float, nargs="+", default=[30, 24, 15, 12, 10, 8, 6])
    ap.add_argument("--trials", type=int, default=12, help="phases/reaction delays per segment and rate")
    args = ap.parse_args()
    s = LivenessSettings()
    labels = load_labels()
    clips = {name: load_clip(VIDEO_DIR / f"{name}.mp4", segs) for name, segs in sorted(labels.items())}
    series = landmark_series(clips)
    print(f"clips: {len(clips)} from {VIDEO_DIR}; labelled segments: {sum(len(v) for v in labels.values())}")
    print(
        f"thresholds: blink_closed_ratio={s.blink_closed_ratio} blink_reopen_ratio={s.blink_reopen_ratio} "
        f"min_fps_blink={s.min_fps_blink} head_turn_min_deg={s.head_turn_min_deg} "
        f"head_turn_first_deg={s.head_turn_first_deg} av_pass_corr={s.av_pass_corr}"
    )
    rng = np.random.default_rng(14)
    print("\nfps   blink: pass on blink answers | pass with no blink (look only) | judged (not inconclusive)")
    for fps in args.fps:
        hit = n_hit = fa = n_fa = judged = 0
        for name, clip in clips.items():
            acts = clip.actions()
            for _ in range(args.trials):
                if Action.BLINK in acts:
                    ts, rows, _ = run_step(clip, series[name], "blink", fps, rng, s)
                    r = check_blink(rows[:, 1], ts, PROMPT_S, s)
                    n_hit += 1
                    hit += r.outcome is Outcome.PASS
                    judged += r.outcome is not Outcome.INCONCLUSIVE
                ts, rows, _ = run_step(clip, series[name], None, fps, rng, s)
                r = check_blink(rows[:, 1], ts, PROMPT_S, s)
                n_fa += 1
                fa += r.outcome is Outcome.PASS
        print(
            f"{fps:4.0f}  {hit:4d}/{n_hit} = {hit / n_hit:6.1%}        | {fa:4d}/{n_fa} = {fa / n_fa:6.1%}"
            f"                 | {judged / n_hit:6.1%}"
        )
    raw = s.model_copy(update={"min_fps_blink": 2.0})
    print("\nfps   blink detection without the frame-rate floor (min_fps_blink=2): pass on blink answers")
    for fps in args.fps:
        hit = n_hit = 0
        for name, clip in clips.items():
            if Action.BLINK not in clip.actions():
                continue
            for _ in range(args.trials):
                ts, rows, _ = run_step(clip, series[name], "blink", fps, rng, s)
                n_hit += 1
                hit += check_blink(rows[:, 1], ts, PROMPT_S, raw).outcome is Outcome.PASS
        print(f"{fps:4.0f}  {hit:4d}/{n_hit} = {hit / n_hit:6.1%}")
    print("\nfps   head turn: pass when prompted the way it turned | pass when prompted the other way")
    for fps in args.fps:
        ok = n_ok = wrong = n_wrong = 0
        for name, clip in clips.items():
            for action, direction in (
                (Action.TURN_LEFT, TurnDirection.LEFT),
                (Action.TURN_RIGHT, TurnDirection.RIGHT),
            ):
                if action not in clip.actions():
                    continue
                other = TurnDirection.RIGHT if direction is TurnDirection.LEFT else TurnDirection.LEFT
                for _ in range(args.trials):
                    ts, rows, _ = run_step(clip, series[name], action.value, fps, rng, s)
                    n_ok += 1
                    ok += check_head_turn(rows[:, 0], ts, PROMPT_S, direction, s).outcome is Outcome.PASS
                    n_wrong += 1
                    wrong += check_head_turn(rows[:, 0], ts, PROMPT_S, other, s).outcome is Outcome.PASS
        print(
            f"{fps:4.0f}  {ok:4d}/{n_ok} = {ok / n_ok:6.1%}                       | {wrong:4d}/{n_wrong} = {wrong / n_wrong:6.1%}"
        )
    grid = [c for c in clips.values() if c.audio.size and Action.SPEAK in c.actions()]
    print(f"\nAV sync on {len(grid)} GRID talking heads (speak segment, own vs each other clip's audio)")
    for fps in (25.0, 15.0):
        own_r, foreign_r = [], []
        own_out, foreign_out = [], []
        for clip in grid:
            seg = clip.segment(Action.SPEAK, rng)
            n = len(clip.frames)
            ts = np.arange(seg.start_s, seg.end_s, 1.0 / fps)
            mouth = series[clip.name][np.minimum((ts * clip.fps).astype(int), n - 1), 2]
            for other in grid:
                a_ts, e = energy(other.audio)
                keep = (a_ts >= seg.start_s) & (a_ts < seg.end_s)
                r = check_av_sync(mouth, ts, e[keep], a_ts[keep], s)
                (own_r if other is clip else foreign_r).append(r.score if r.score is not None else np.nan)
                (own_out if other is clip else foreign_out).append(r.outcome.value)

        def counts(xs: list[str]) -> str:
            return ", ".join(f"{k}={xs.count(k)}" for k in sorted(set(xs)))

        print(
            f"  {fps:.0f} fps: own r median {np.nanmedian(own_r):.2f} (min {np.nanmin(own_r):.2f}); "
            f"foreign r median {np.nanmedian(foreign_r):.2f} (max {np.nanmax(foreign_r):.2f}); "
            f"own: {counts(own_out)}; foreign: {counts(foreign_out)}"
        )
        own_sorted = np.sort(np.asarray(own_r))
        frac = float(np.mean(np.asarray(foreign_r) >= own_sorted[0])) if own_sorted.size else float("nan")
        print(
            f"           foreign pairs at or above the lowest own r: {frac:.0%} (n own={len(own_r)}, foreign={len(foreign_r)})"
        )


if __name__ == "__main__":
    main()
