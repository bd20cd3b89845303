"""Large photos with a small face (an officer's phone photo at enrolment): CPU and decisions, ours vs plain.

    .venv/bin/python benchmarks/face_large.py [--limit 40] [--side 3000] [--zoom 2]

The LFW dev pairs (../shared/data/faces/lfw-dev-pairs.csv) are 250 px photos; a phone photo is 12 MP
with the face a small part of it. Each probe (img2) is enlarged `--zoom` times (bicubic) and placed in the
middle of a grey `--side` x 3/4 `--side` canvas, so the face is ~1/12-1/8 of the long side: too small
for the fast 320 px pass. Enrolment (img1, as it is) is not timed. CPU time of this process per probe,
from the canvas pixels to a decision (`FaceEngine.verify_image` at the shipped settings):

- ours: the fast pass, then passes at twice the scale each (`face.detect_intermediate_scales`, default);
- ours, before: straight from the fast pass to the upsampled full-resolution pass;
- plain face_recognition: `face_encodings` (HOG upsample 1 on the full canvas), match at euclidean <= 0.6.

Decisions are compared pair by pair: ours vs ours-before, and both vs ours on the original 250 px probe
(what the same person's photo gets when it is not enlarged).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from identity.face.config import FaceSettings  # noqa: E402
from identity.face.decode import DecodedImage, decode_image  # noqa: E402
from identity.face.engine import FaceEngine  # noqa: E402
from identity.face.evaluate import read_pairs  # noqa: E402
from identity.face.results import Template  # noqa: E402

ROOT = REPO / ".." / "shared" / "data" / "faces"


def canvas_of(rgb: np.ndarray, side: int, zoom: float) -> np.ndarray:
    big = cv2.resize(rgb, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    h, w = (side * 3) // 4, side
    out = np.full((h, w, 3), 110, np.uint8)
    y0, x0 = (h - big.shape[0]) // 2, (w - big.shape[1]) // 2
    out[y0 : y0 + big.shape[0], x0 : x0 + big.shape[1]] = big
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40, help="pairs (balanced genuine / impostor)")
    ap.add_argument("--side", type=int, default=3000, help="canvas width in pixels (height 3/4 of it)")
    ap.add_argument("--zoom", type=float, default=2.0, help="enlargement of the 250 px probe")
    args = ap.parse_args()

    import face_recognition

    models = REPO / "var" / "models"
    ours = FaceEngine(models, FaceSettings())
    before = FaceEngine(models, FaceSettings(detect_intermediate_scales=False))
    pairs = read_pairs(ROOT / "lfw-dev-pairs.csv", args.limit)

    def rgb_of(rel: str) -> np.ndarray | None:
        decoded = decode_image((ROOT / rel).read_bytes(), ours.settings)
        return decoded.rgb if isinstance(decoded, DecodedImage) else None

    templates: dict[str, Template | None] = {}
    plain_enc: dict[str, Any] = {}
    for rel in {p.img1 for p in pairs}:
        rgb = rgb_of(rel)
        emb = ours.analyse(rgb, encode_rejected=True).embedding if rgb is not None else None
        templates[rel] = (
            Template(embeddings=emb[None, :], model=ours.stamp, created_at="") if emb is not None else None
        )
        encs = face_recognition.face_encodings(rgb) if rgb is not None else []
        plain_enc[rel] = encs[0] if encs else None

    probes = [(p, rgb_of(p.img2)) for p in pairs]
    usable = [(p, rgb) for p, rgb in probes if rgb is not None and templates[p.img1] is not None]
    small: list[str] = [ours.verify_image(templates[p.img1], rgb).outcome.value for p, rgb in usable]  # type: ignore[arg-type]
    canvases = [canvas_of(rgb, args.side, args.zoom) for _, rgb in usable]
    ours.verify_image(templates[usable[0][0].img1], canvases[0])  # type: ignore[arg-type]  # warm-up

    load0 = os.getloadavg()[0]
    results: dict[str, tuple[float, list[str]]] = {}
    for name, engine in (("ours", ours), ("ours, before", before)):
        t0 = time.process_time()
        got = [
            engine.verify_image(templates[p.img1], c).outcome.value  # type: ignore[arg-type]
            for (p, _), c in zip(usable, canvases, strict=True)
        ]
        results[name] = ((time.process_time() - t0) * 1e3 / len(usable), got)
    t0 = time.process_time()
    plain: list[str] = []
    for (p, _), c in zip(usable, canvases, strict=True):
        encs = face_recognition.face_encodings(c)
        ref = plain_enc[p.img1]
        if not encs or ref is None:
            plain.append("no face")
        else:
            plain.append("match" if float(np.linalg.norm(encs[0] - ref)) <= 0.6 else "no match")
    plain_ms = (time.process_time() - t0) * 1e3 / len(usable)

    h = (args.side * 3) // 4
    print(
        f"{len(usable)} LFW probes enlarged {args.zoom:g}x on a {args.side}x{h} canvas; CPU ms per probe (this "
        f"process); load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    same = [p.same for p, _ in usable]
    for name, (ms, got) in results.items():
        counts = Counter(("genuine " if s else "impostor ") + g for s, g in zip(same, got, strict=True))
        print(
            f"  {name:14s} {ms:8.1f} ms   {dict(sorted(counts.items()))}; same decision as on the 250 px probe: "
            f"{sum(a == b for a, b in zip(got, small, strict=True))}/{len(got)}"
        )
    counts = Counter(("genuine " if s else "impostor ") + g for s, g in zip(same, plain, strict=True))
    print(f"  {'plain':14s} {plain_ms:8.1f} ms   {dict(sorted(counts.items()))}")
    a, b = results["ours"][1], results["ours, before"][1]
    print(
        f"  ours vs ours-before: {sum(x == y for x, y in zip(a, b, strict=True))}/{len(a)} decisions the same; "
        f"{results['ours, before'][0] / results['ours'][0]:.1f}x less CPU; "
        f"{plain_ms / results['ours'][0]:.1f}x less than plain"
    )


if __name__ == "__main__":
    main()
