"""Single-image face path: ours vs plain face_recognition, per-probe time and decisions on the same pairs.

    .venv/bin/python benchmarks/face_single.py [--limit 200]

Pairs: ../shared/data/faces/lfw-dev-pairs.csv (img1 = enrolled, img2 = probe). Enrolment (not timed):
ours `FaceEngine.enrol`-style mirror-averaged embedding of img1; plain `face_recognition.face_encodings`.
Timed per probe as CPU time of this process (time.process_time: robust to other load on a shared machine;
dlib-bin runs one thread), from the file's bytes to a decision:
- plain: `face_recognition.load_image_file` + `face_encodings` (HOG upsample 1 on the full image, 5-point
  alignment, one encoding), match when euclidean <= 0.6 (its default tolerance);
- ours, on-demand flip (the default): `decode_image` + `FaceEngine.verify_image` (HOG on a downscaled copy
  with fallbacks, 68 landmarks, quality gate, one network pass, the mirror pass only near the band:
  `flip_tta_pass_margin` below it, `flip_tta_margin` above it);
- ours, on-demand flip with `flip_tta_margin` on both sides (the rule before `flip_tta_pass_margin`);
- ours, always mirror (`flip_tta_on_demand=False`, the earlier default).
- ours, `verify_image` as shipped: the same steps, but a face the quality gate rejects is not encoded (it is
  REVIEW whatever its distance), so this row has no distances to score the matcher by (no CV accuracy).
Each ours row says how many of its decisions differ from always mirroring, pair by pair.
Accuracy: 2-fold cross-validated accuracy on each pipeline's own distances (threshold chosen on one half,
scored on the other), plus the decisions at the shipped thresholds (PASS / REVIEW / FAIL; a face the
quality gate rejects is REVIEW, but it is still encoded so that both matchers are scored on every pair). The shipped
calibration was made on these LFW images, so its decisions here are in-sample; `kuzet eval face
--root ../shared/data/faces --cross-validate` gives the out-of-sample figures (on-demand vs always mirror).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from identity.checks import Outcome  # noqa: E402
from identity.face.config import FaceSettings  # noqa: E402
from identity.face.decode import DecodedImage, decode_image  # noqa: E402
from identity.face.engine import FaceEngine  # noqa: E402
from identity.face.evaluate import accuracy_2fold, read_pairs  # noqa: E402
from identity.face.matching import decide, distance_to_template  # noqa: E402
from identity.face.results import Template  # noqa: E402

ROOT = REPO / ".." / "shared" / "data" / "faces"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=200, help="pairs (balanced genuine / impostor)")
    args = ap.parse_args()

    import face_recognition

    pairs = read_pairs(ROOT / "lfw-dev-pairs.csv", args.limit)
    same = np.array([p.same for p in pairs])
    engines = {
        "ours (on-demand flip)": FaceEngine(REPO / "var" / "models", FaceSettings()),
        "ours (on-demand, 0.02 both)": FaceEngine(
            REPO / "var" / "models", FaceSettings(flip_tta_pass_margin=FaceSettings().flip_tta_margin)
        ),
        "ours (always mirror)": FaceEngine(REPO / "var" / "models", FaceSettings(flip_tta_on_demand=False)),
    }
    ref = next(iter(engines.values()))

    def rgb_of(rel: str) -> np.ndarray | None:
        decoded = decode_image((ROOT / rel).read_bytes(), ref.settings)
        return decoded.rgb if isinstance(decoded, DecodedImage) else None

    # Enrolled side, not timed.
    ours_enrolled: dict[str, Template | None] = {}
    plain_enrolled: dict[str, np.ndarray | None] = {}
    for rel in {p.img1 for p in pairs}:
        rgb = rgb_of(rel)
        emb = ref.analyse(rgb, encode_rejected=True).embedding if rgb is not None else None
        ours_enrolled[rel] = (
            Template(embeddings=emb[None, :], model=ref.stamp, created_at="") if emb is not None else None
        )
        encs = face_recognition.face_encodings(face_recognition.load_image_file(str(ROOT / rel)))
        plain_enrolled[rel] = encs[0] if encs else None
    # Warm-up (first dlib calls allocate).
    face_recognition.face_encodings(face_recognition.load_image_file(str(ROOT / pairs[0].img2)))
    for e in engines.values():
        e.analyse(rgb_of(pairs[0].img2))

    def probe_of(p: Any, engine: FaceEngine) -> tuple[Template, np.ndarray] | None:
        """The enrolled template and the decoded probe of a pair (timed: decoding is part of a probe)."""
        template = ours_enrolled[p.img1]
        decoded = decode_image((ROOT / p.img2).read_bytes(), engine.settings)
        if template is None or not isinstance(decoded, DecodedImage):
            return None
        return template, decoded.rgb

    load_start = os.getloadavg()[0]
    rows: dict[str, tuple[float, np.ndarray | None, Counter[str], int]] = {}
    labels: dict[str, list[str]] = {}
    t0 = time.process_time()
    d_plain = np.full(len(pairs), np.inf)
    plain_dec: Counter[str] = Counter()
    for k, p in enumerate(pairs):
        encs = face_recognition.face_encodings(face_recognition.load_image_file(str(ROOT / p.img2)))
        ref_enc = plain_enrolled[p.img1]
        if encs and ref_enc is not None:
            d_plain[k] = float(np.linalg.norm(encs[0] - ref_enc))
            match = d_plain[k] <= 0.6
            plain_dec[("genuine" if p.same else "impostor") + (" match" if match else " no-match")] += 1
        else:
            plain_dec[("genuine" if p.same else "impostor") + " no face"] += 1
    rows["plain face_recognition"] = ((time.process_time() - t0) * 1e3 / len(pairs), d_plain, plain_dec, 0)

    def encoded(engine: FaceEngine, template: Template, rgb: np.ndarray) -> tuple[str, float, bool]:
        """verify_image's steps, with a gate-rejected face still encoded so the matcher is measured on every
        pair (as plain face_recognition, which has no quality gate, is): label, distance, mirrored."""
        probe = engine.analyse_probe(rgb, encode_rejected=True)
        emb = probe.analysis.embedding
        label = "REVIEW" if not probe.analysis.quality.passed else ""
        d = np.inf
        if emb is not None:
            d = distance_to_template(template.embeddings, emb)
            if engine.needs_template_mirror(probe, d):
                engine.add_mirror(probe)
                d = distance_to_template(template.embeddings, probe.analysis.embedding)  # type: ignore[arg-type]
            outcome = decide(d, engine.thresholds, engine.stamp).outcome
            label = label or {Outcome.PASS: "PASS", Outcome.FAIL: "FAIL"}.get(outcome, "REVIEW")
        return label, d, probe.mirrored

    def shipped_path(engine: FaceEngine, template: Template, rgb: np.ndarray) -> tuple[str, float, bool]:
        result = engine.verify_image(template, rgb)
        label = {Outcome.PASS: "PASS", Outcome.FAIL: "FAIL"}.get(result.outcome, "REVIEW")
        return label, np.inf, bool(result.details.get("mirror_pass"))

    def run(
        name: str,
        engine: FaceEngine,
        judge: Callable[[FaceEngine, Template, np.ndarray], tuple[str, float, bool]],
    ) -> tuple[float, np.ndarray, Counter[str], int]:
        d = np.full(len(pairs), np.inf)
        dec: Counter[str] = Counter()
        mirrored = 0
        labels[name] = ["no face"] * len(pairs)
        t0 = time.process_time()
        for k, p in enumerate(pairs):
            got = probe_of(p, engine)
            if got is None:
                dec[("genuine" if p.same else "impostor") + " no face"] += 1
                continue
            label, d[k], m = judge(engine, *got)
            mirrored += m
            labels[name][k] = label
            dec[("genuine " if p.same else "impostor ") + label] += 1
        return (time.process_time() - t0) * 1e3 / len(pairs), d, dec, mirrored

    for name, engine in engines.items():
        rows[name] = run(name, engine, encoded)
    shipped = "ours verify_image (shipped)"
    ms, _, dec, mirrored = run(shipped, next(iter(engines.values())), shipped_path)
    rows[shipped] = (ms, None, dec, mirrored)

    load = os.getloadavg()
    print(
        f"{len(pairs)} LFW dev pairs ({int(same.sum())} genuine, {int((~same).sum())} impostor); CPU ms per "
        f"probe (this process, one thread), from file bytes to a decision; load average {load_start:.1f} "
        f"at the start, {load[0]:.1f} at the end, {os.cpu_count()} cores"
    )
    plain_ms = rows["plain face_recognition"][0]
    for name, (ms, dist, dec, mirrored) in rows.items():
        acc_text = f"{accuracy_2fold(dist, same)[0]:6.1%}" if dist is not None else "   n/a"
        extra = ""
        if name in labels:
            differ = sum(a != b for a, b in zip(labels[name], labels["ours (always mirror)"], strict=True))
            extra = f"  mirror pass {mirrored}/{len(pairs)}, {differ} decisions differ from always mirror"
        print(
            f"  {name:27s} {ms:7.1f} CPU ms/probe  ({plain_ms / ms:4.2f}x plain)  2-fold CV accuracy "
            f"{acc_text}{extra}"
        )
        print(f"  {'':27s} decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(dec.items())))
    print("  (ours: decisions at the shipped thresholds, in-sample on these images; plain: euclidean <= 0.6)")


if __name__ == "__main__":
    main()
