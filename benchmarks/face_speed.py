"""Face cost per check-in session on real camera frames: our check-in face path vs naive face_recognition.

    .venv/bin/python benchmarks/face_speed.py [--fps 15] [--clips 8] [--session-s 18] [--synthetic]

Sessions: the 8 real clips in ../shared/data/video (GRID 360x288 and LivePortrait 480-512 px, one person
each), decoded with OpenCV, sampled at `--fps` (the check-in sampler keeps every frame up to 15/s inside
challenge windows, which cover almost all of a default check-in, and 5/s between them) and placed on a
640x480 canvas like a phone frame; a clip shorter than a check-in (`--session-s`, 18 s) is played forth
and back until it lasts that long. Each person is enrolled
from 3 frames of the first 20 % of their clip; the session is the rest of the clip. Every clip is judged
as a genuine session (its own person's template) and as an impostor session (the next clip's person).

- ours: the check-in's face path exactly as media_server/checkin/checks.py calls it in a worker:
  `identity.face.worker.analyse_frames(frames)` (detection and 68 landmarks on every frame for liveness,
  quality gate, embeddings of the chosen frames) then `identity.face.worker.verify_analyses(template,
  analyses)`; PASS / REVIEW / FAIL at the calibrated thresholds. Whatever that path becomes (e.g.
  embedding only the best few frames), this benchmark measures it unchanged.
- live (the shipped check-in path when the node runs live analysis, the default): the session's frames
  offered with their timestamps to `media_server.webrtc.live.LiveAnalyser` at the shipped media settings
  (chunks of `analysis_chunk_frames` through `identity.face.worker.analyse_live`: detection, 68 landmarks
  and quality on every frame, no embedding; the best held frames embedded by `embed_analyses`), then, as
  `media_server/checkin/checks.py` does at the end, the best `embed_best_frames` held frames embedded
  where missing and `verify_analyses`. The pool is replaced by direct calls in this process.
- naive: `face_recognition.face_encodings(frame)` on every frame (HOG upsample 1 on the full frame,
  5-point alignment, one encoding each); the session matches when the median euclidean distance of the
  frames with a face to the enrolled encoding (mean of the 3 enrolment encodings) is <= 0.6.

Cost: CPU seconds of this process per session (time.process_time: the engines run single-threaded here,
and CPU time is robust to other load on a shared machine), analysis of the session's frames; enrolment is
not counted. Decisions: match (PASS) / no match for both, compared session by session.
`--synthetic` adds the former synthetic still (astronaut) session for comparison with earlier figures.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VIDEO = REPO / ".." / "shared" / "data" / "video"
W, H = 640, 480


def clip_frames(path: Path, fps: float) -> list[np.ndarray]:
    """RGB frames of a clip sampled at ~`fps`, each centred on a 640x480 grey canvas (scaled to fit)."""
    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, round(native / fps))
    frames = []
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % step == 0:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            scale = min(W / rgb.shape[1], H / rgb.shape[0], 1.0)
            if scale < 1.0:
                rgb = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)))
            canvas = np.full((H, W, 3), 90, np.uint8)
            y0, x0 = (H - rgb.shape[0]) // 2, (W - rgb.shape[1]) // 2
            canvas[y0 : y0 + rgb.shape[0], x0 : x0 + rgb.shape[1]] = rgb
            frames.append(canvas)
        i += 1
    cap.release()
    return frames


def astronaut_session(n: int = 40) -> list[np.ndarray]:
    """The former synthetic session: the astronaut's head drifting a few pixels with sensor noise."""
    from skimage import data

    rng = np.random.default_rng(0)
    face = cv2.resize(data.astronaut()[0:320, 60:380], (440, 440), interpolation=cv2.INTER_LINEAR)
    frames = []
    for i in range(n):
        step = i // 3
        dx, dy = int(round(6 * np.sin(step / 2.0))), int(round(4 * np.cos(step / 3.0)))
        canvas = np.full((H, W, 3), 90, np.uint8)
        canvas[20 + dy : 460 + dy, 100 + dx : 540 + dx] = face
        noisy = canvas.astype(np.int16) + rng.normal(0, 2.0, canvas.shape).astype(np.int16)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


def ping_pong(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    """At least n frames: the clip forth, back, forth... (no jump cut; a real person keeps moving)."""
    out = list(frames)
    back = frames[::-1]
    while len(out) < n and len(frames) > 1:
        out.extend(back[1:])
        back = back[::-1]
    return out


async def live_session(frames: list[np.ndarray], fps: float) -> list[Any]:
    """The live check-in face path on `frames` (timestamps at `fps`), as a session and checks.py run it."""
    from identity.face import worker as face_worker
    from media_server.settings import MediaSettings
    from media_server.webrtc.live import LiveAnalyser

    class InProcess:
        async def analyse(self, chunk: list[np.ndarray]) -> list[Any]:
            return face_worker.analyse_live(chunk)

        async def embed(self, chunk: list[np.ndarray], analyses: list[Any]) -> list[Any]:
            return face_worker.embed_analyses(chunk, analyses)

    m = MediaSettings()
    live = LiveAnalyser(
        InProcess(),
        chunk_frames=m.analysis_chunk_frames,
        max_pending=m.max_pending_frames,
        held_every_s=m.held_frame_every_s,
        max_held=m.max_held_frames,
        embed_best=m.embed_best_frames,
    )
    for i, rgb in enumerate(frames):
        if not live.offer(round(i / fps, 3), rgb):
            raise RuntimeError("live analysis queue full")  # cannot happen: each chunk runs at once below
        await asyncio.sleep(0)  # lets a full chunk's job (synchronous here) run before the next frame
    result = await live.finish()
    analyses = list(result.analyses)
    best = [h for h in result.best_held(m.embed_best_frames) if analyses[h.index].embedding is None]
    if best:
        embedded = face_worker.embed_analyses([h.rgb for h in best], [analyses[h.index] for h in best])
        for h, a in zip(best, embedded, strict=True):
            analyses[h.index] = a
    return analyses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=float, default=15.0, help="frames per second sampled from each clip")
    ap.add_argument("--clips", type=int, default=8, help="how many of the shared clips")
    ap.add_argument(
        "--session-s",
        type=float,
        default=18.0,
        help="a clip shorter than a check-in is played forth and back until the session lasts this long",
    )
    ap.add_argument("--synthetic", action="store_true", help="also the synthetic astronaut session")
    args = ap.parse_args()

    import face_recognition

    from identity.checks import Outcome
    from identity.face import worker as face_worker
    from identity.face.config import FaceSettings

    face_worker.init_worker(str((REPO / "var" / "models").resolve()), FaceSettings().model_dump(mode="json"))
    engine = face_worker.current_engine()

    with (VIDEO / "catalog.csv").open() as f:
        clips = [row["file"] for row in csv.DictReader(f)][: args.clips]
    sessions: list[tuple[str, list[np.ndarray], list[np.ndarray]]] = []
    for name in clips:
        frames = clip_frames(VIDEO / name, args.fps)
        head = max(3, len(frames) // 5)
        picks = [frames[int(i)] for i in np.linspace(0, head - 1, 3)]
        sessions.append((name, picks, ping_pong(frames[head:], int(args.session_s * args.fps))))
    if args.synthetic:
        from skimage import data

        still = np.ascontiguousarray(data.astronaut())
        sessions.append(("astronaut (synthetic)", [still, still], astronaut_session()))

    # Templates (not timed).
    ours_t: list[Any] = []
    naive_t: list[np.ndarray | None] = []
    for _, enrol, _ in sessions:
        template, results = engine.enrol(enrol)
        ours_t.append(template)
        encs = [e for img in enrol for e in face_recognition.face_encodings(img)[:1]]
        naive_t.append(np.mean(encs, axis=0) if encs else None)
    # Warm-up (first dlib calls allocate).
    face_recognition.face_encodings(sessions[0][2][0])
    face_worker.analyse_frames(sessions[0][2][:2])

    rows = []
    live_rows: list[tuple[float, int, str, str]] = []
    for k, (name, _, frames) in enumerate(sessions):
        other = (k + 1) % len(sessions)
        t0 = time.process_time()
        analyses = face_worker.analyse_frames(frames)
        ours_cpu = time.process_time() - t0
        t0 = time.process_time()
        encs = [face_recognition.face_encodings(f) for f in frames]
        naive_cpu = time.process_time() - t0

        def ours(ti: int, analyses: list[Any] = analyses) -> str:
            template = ours_t[ti]
            if template is None:
                return "no template"
            result = face_worker.verify_analyses(template, analyses)
            return {Outcome.PASS: "PASS", Outcome.FAIL: "FAIL"}.get(result.outcome, "REVIEW")

        def naive(ti: int, encs: list[Any] = encs) -> str:
            ref = naive_t[ti]
            d = [float(np.linalg.norm(e[0] - ref)) for e in encs if e] if ref is not None else []
            return "no face" if not d else ("match" if statistics.median(d) <= 0.6 else "no match")

        t0 = time.process_time()
        live_analyses = asyncio.run(live_session(frames, args.fps))
        live_cpu = time.process_time() - t0

        def live(ti: int, analyses: list[Any] = live_analyses) -> str:
            return ours(ti, analyses)

        n_encoded = sum(a.embedding is not None and a.reused_from is None for a in analyses)
        rows.append(
            (name, len(frames), n_encoded, ours_cpu, naive_cpu, ours(k), naive(k), ours(other), naive(other))
        )
        live_rows.append(
            (live_cpu, sum(a.embedding is not None for a in live_analyses), live(k), live(other))
        )

    load = os.getloadavg()[0]
    print(
        f"{len(rows)} sessions at {args.fps:g} frames/s on a {W}x{H} canvas; CPU s per session (this process, "
        f"one thread); load average {load:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"  {'session':24s} {'frames':>6s} {'encoded':>7s} {'ours s':>7s} {'naive s':>7s} {'x':>5s}   "
        "genuine ours/naive     impostor ours/naive"
    )
    same = 0
    for name, n, enc, o, nv, og, ng, oi, ni in rows:
        same += (og == "PASS") == (ng == "match")
        same += (oi == "PASS") == (ni == "match")
        print(
            f"  {name:24s} {n:6d} {enc:7d} {o:7.2f} {nv:7.2f} {nv / o:5.1f}   {og:>6s} / {ng:<9s}     "
            f"{oi:>6s} / {ni:<9s}"
        )
    ours_total = sum(r[3] for r in rows)
    naive_total = sum(r[4] for r in rows)
    frames_total = sum(r[1] for r in rows)
    print(
        f"  total: ours {ours_total:.1f} s ({ours_total / frames_total * 1000:.0f} ms/frame), naive "
        f"{naive_total:.1f} s ({naive_total / frames_total * 1000:.0f} ms/frame): {naive_total / ours_total:.1f}x "
        f"less CPU per session; same match / no-match decision in {same} of {2 * len(rows)} sessions"
    )
    live_total = sum(r[0] for r in live_rows)
    live_same = sum(
        ((lg == "PASS") == (r[6] == "match")) + ((li == "PASS") == (r[8] == "match"))
        for (_, _, lg, li), r in zip(live_rows, rows, strict=True)
    )
    print("  live path (shipped default), per session: CPU s, frames embedded, genuine / impostor decision")
    for (cpu, n_emb, lg, li), r in zip(live_rows, rows, strict=True):
        print(
            f"  {r[0]:24s} {cpu:7.2f} s {n_emb:3d} embedded  {r[4] / cpu:5.1f}x naive   {lg:>6s} / {li:<6s}"
        )
    print(
        f"  total: live {live_total:.1f} s ({live_total / frames_total * 1000:.0f} ms/frame): "
        f"{naive_total / live_total:.1f}x less CPU than naive; same match / no-match decision as naive in "
        f"{live_same} of {2 * len(rows)} sessions"
    )
    print(
        f"  ours: PASS < {engine.thresholds.pass_below:.4f} cosine (fused best frames), FAIL > "
        f"{engine.thresholds.fail_above:.4f}, REVIEW between; naive: median euclidean <= 0.6"
    )


if __name__ == "__main__":
    main()
