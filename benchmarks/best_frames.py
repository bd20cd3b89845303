"""How many best frames the face decision needs: live selection (K best by quality) vs 16 evenly spread.

Out-of-sample data: the 8 shared real clips of 8 people (../shared/data/video), letterboxed to 640x480
as a phone sends them. Each person is enrolled from 3 frames of the first third of their clip (the
enrolment path, flip TTA); the "session" is the rest of the clip. Every session is compared with its
own template (8 genuine trials) and with every other person's (56 impostor trials).

Strategies, on the same per-frame analyses (boxes, landmarks, quality; what live analysis computes):
- `even16`: the previous end-of-session path: up to face.session_max_encoded_frames (16) quality-passing
  frames evenly spread over time are encoded; the best face.session_top_k are fused.
- `bestK`: what a live session does: one held frame per interval (the best by quality; the interval is
  the clip length / 13, as a ~20 s check-in has ~13 intervals of media.held_frame_every_s = 1.5 s); the
  K best held frames are encoded and fused.

Printed per strategy: decisions (PASS / REVIEW / FAIL) of genuine and impostor trials, the largest
genuine and smallest impostor fused distance, decisions that differ from even16, and frames encoded.

    .venv/bin/python benchmarks/best_frames.py [--k 1 3 5 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
BUCKETS = 13


def _frames(path: Path) -> tuple[list[Any], float]:
    import av

    from media_server.simulator.client import letterbox

    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        for frame in container.decode(video=0):
            out.append(letterbox(frame.to_ndarray(format="rgb24"), 640, 480))
    return out, fps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 8])
    args = parser.parse_args()

    from dataclasses import replace

    from identity.checks import Outcome
    from identity.face.config import FaceSettings
    from identity.face.engine import FaceEngine
    from media_server.settings import Settings
    from media_server.webrtc.live import held_score

    settings = FaceSettings()
    engine = FaceEngine(Settings().models.dir, settings)
    clips = sorted(VIDEO_DIR.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no clips in {VIDEO_DIR}")
    people: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for path in clips:
        frames, fps = _frames(path)
        n = len(frames)
        third = n // 3
        enrol_frames = [frames[i] for i in np.linspace(0, third - 1, 3).astype(int)]
        template, results = engine.enrol(enrol_frames)
        if template is None:
            print(f"{path.stem}: enrolment failed ({results[-1].code}); skipped")
            continue
        session = frames[third:]
        analyses, _ = engine.analyse_frames(session, encode=False)
        times = [i / fps for i in range(len(session))]
        # even16: the old selection (quality-passing, evenly spread over time).
        passing = [i for i, a in enumerate(analyses) if a.quality.passed and a.primary_face is not None]
        even = sorted(
            {int(round(x)) for x in np.linspace(0, len(passing) - 1, settings.session_max_encoded_frames)}
        )
        even_idx = [passing[i] for i in even] if passing else []
        # live: best per interval, then the best K of those.
        interval = max(times[-1], 1e-3) / BUCKETS
        held: dict[int, tuple[float, int]] = {}
        for i, (t, a) in enumerate(zip(times, analyses, strict=True)):
            b, s = int(t // interval), held_score(a)
            if b not in held or s > held[b][0]:
                held[b] = (s, i)
        ranked = [i for s, i in sorted(held.values(), reverse=True) if analyses[i].quality.passed]
        needed = sorted(set(even_idx) | set(ranked[: max(args.k)]))
        embedded = engine.embed_analyses([session[i] for i in needed], [analyses[i] for i in needed])
        by_index = dict(zip(needed, embedded, strict=True))
        people[path.stem] = {
            "template": template,
            "analyses": analyses,
            "by_index": by_index,
            "even": even_idx,
            "ranked": ranked,
        }
    print(
        f"{len(people)} people analysed in {time.perf_counter() - t0:.1f} s; thresholds {engine.thresholds}"
    )

    def session_for(p: dict[str, Any], chosen: list[int]) -> list[Any]:
        base = [replace(a, embedding=None) for a in p["analyses"]]
        for i in chosen:
            base[i] = p["by_index"][i]
        return base

    strategies: dict[str, Any] = {"even16": lambda p: p["even"]}
    for k in args.k:
        strategies[f"best{k}"] = lambda p, k=k: p["ranked"][:k]
    reference: dict[tuple[str, str], str] = {}
    print(
        f"{'strategy':>9} {'encoded/sess':>12} {'genuine P/R/F':>14} {'impostor P/R/F':>15} "
        f"{'max genuine d':>13} {'min impostor d':>14} {'changed vs even16':>17}"
    )
    for name, choose in strategies.items():
        counts = {"g": [0, 0, 0], "i": [0, 0, 0]}
        gen_d: list[float] = []
        imp_d: list[float] = []
        changed = 0
        encoded = 0
        for probe, p in people.items():
            chosen = choose(p)
            encoded += len(chosen)
            analyses = session_for(p, chosen)
            for owner, q in people.items():
                r = engine.verify_analyses(q["template"], analyses)
                slot = 0 if r.outcome is Outcome.PASS else 2 if r.outcome is Outcome.FAIL else 1
                kind = "g" if owner == probe else "i"
                counts[kind][slot] += 1
                if r.score is not None:
                    (gen_d if kind == "g" else imp_d).append(r.score)
                key = (probe, owner)
                if name == "even16":
                    reference[key] = r.outcome.value
                elif reference.get(key) != r.outcome.value:
                    changed += 1
        g, i = counts["g"], counts["i"]
        print(
            f"{name:>9} {encoded / len(people):>12.1f} {'/'.join(map(str, g)):>14} {'/'.join(map(str, i)):>15} "
            f"{max(gen_d, default=float('nan')):>13.3f} {min(imp_d, default=float('nan')):>14.3f} {changed:>17}"
        )


if __name__ == "__main__":
    main()
