"""Face verification evaluation on a pairs CSV (img1,img2,same) and calibration-table production.

Protocol (what `kuzet eval face` prints):
- img1 is the enrolled side (encoded with `enrol_num_jitters`), img2 the probe (flip TTA, no jitter).
- An image where no face is found at all counts as a failure to enrol/acquire; its pairs get distance
  +inf (a genuine pair is then rejected, an impostor pair correctly rejected). Quality-gate rejections
  are counted and reported, but the largest face is still encoded so that the matcher is measured.
- TAR at FAR x: impostor distances sorted ascending, k = floor(x * n_impostor), threshold t = the
  (k+1)-th smallest impostor distance (the k-th highest impostor similarity, counting from 0), accept
  d < t. With 100 impostor pairs, FAR 1% accepts one impostor and FAR 0.1% accepts none: FAR 0.1%
  then equals the strictest threshold (t = the closest impostor), i.e. "TAR at FAR 0".
- Accuracy is 2-fold cross-validated: the accuracy-maximising threshold of one half is applied to the
  other half and the two results averaged, so no threshold is tuned on the pairs it is scored on.
- EER: the rate where FAR and FRR cross, linearly interpolated over the pooled score thresholds.
Identity labels for calibration are taken from the image's parent directory (LFW layout).
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.face.calibration import Calibration, build_calibration, load_calibration, threshold_at_fmr
from identity.face.config import FaceSettings
from identity.face.decode import DecodedImage, decode_image
from identity.face.results import Embedding

FARS = (0.01, 0.001)
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Pair:
    """One row of the pairs CSV: relative image paths and whether they show the same person."""

    img1: str
    img2: str
    same: bool


@dataclass(slots=True)
class ImageResult:
    """Embedding (or None) of one image in one role, its quality code and the time it took (ms)."""

    embedding: Embedding | None
    code: str
    ms: float


def read_pairs(path: Path, limit: int | None = None) -> list[Pair]:
    """Parse a CSV with columns img1,img2,same (same in {0,1,true,false}); optional balanced limit."""
    with path.open(newline="") as f:
        rows = [
            Pair(r["img1"].strip(), r["img2"].strip(), r["same"].strip().lower() in ("1", "true", "yes"))
            for r in csv.DictReader(f)
        ]
    if limit is not None:
        pos = [p for p in rows if p.same][: (limit + 1) // 2]
        neg = [p for p in rows if not p.same][: limit // 2]
        rows = pos + neg
    return rows


# ---------------------------------------------------------------------------- metrics
def tar_at_far(distances: FloatArray, same: npt.NDArray[np.bool_], far: float) -> tuple[float, float]:
    """(TAR, threshold) at a FAR, threshold at the k-th highest impostor score (see module docstring)."""
    imp = distances[~same]
    gen = distances[same]
    t = threshold_at_fmr(imp, far)
    return float(np.mean(gen < t)), t


def eer(distances: FloatArray, same: npt.NDArray[np.bool_]) -> float:
    """Equal error rate: FAR(t) = FRR(t), interpolated between the two closest thresholds."""
    finite = distances[np.isfinite(distances)]
    cands = np.unique(np.concatenate([finite, [np.inf]]))
    gen, imp = distances[same], distances[~same]
    far = np.array([np.mean(imp < t) for t in cands])
    frr = np.array([np.mean(gen >= t) for t in cands])
    diff = far - frr
    idx = int(np.argmax(diff >= 0))
    if idx == 0:
        return float((far[0] + frr[0]) / 2)
    a, b = diff[idx - 1], diff[idx]
    w = a / (a - b) if a != b else 0.5
    return float(
        (far[idx - 1] + w * (far[idx] - far[idx - 1]) + frr[idx - 1] + w * (frr[idx] - frr[idx - 1])) / 2
    )


def _best_threshold(distances: FloatArray, same: npt.NDArray[np.bool_]) -> float:
    finite = np.sort(distances[np.isfinite(distances)])
    if finite.size == 0:
        return 0.0
    mids = np.concatenate([[finite[0] - 1e-6], (finite[:-1] + finite[1:]) / 2, [finite[-1] + 1e-6]])
    acc = [np.mean((distances < t) == same) for t in mids]
    return float(mids[int(np.argmax(acc))])


def accuracy_2fold(distances: FloatArray, same: npt.NDArray[np.bool_]) -> tuple[float, list[float]]:
    """Cross-validated accuracy: fold = pair index parity within each class; returns (mean, thresholds)."""
    fold = np.zeros(distances.size, dtype=bool)
    for cls in (True, False):
        idx = np.flatnonzero(same == cls)
        fold[idx[1::2]] = True
    accs, ts = [], []
    for test in (fold, ~fold):
        t = _best_threshold(distances[~test], same[~test])
        accs.append(float(np.mean((distances[test] < t) == same[test])))
        ts.append(t)
    return float(np.mean(accs)), ts


def roc_points(distances: FloatArray, same: npt.NDArray[np.bool_]) -> dict[str, list[float]]:
    """ROC as lists: far, tar and the distance thresholds (accept d < t), for plotting."""
    finite = np.unique(distances[np.isfinite(distances)])
    cands = np.concatenate([finite, [np.inf]])
    gen, imp = distances[same], distances[~same]
    return {
        "far": [float(np.mean(imp < t)) for t in cands],
        "tar": [float(np.mean(gen < t)) for t in cands],
        "threshold": [float(t) if np.isfinite(t) else 9.0 for t in cands],
    }


def summarise(distances: FloatArray, same: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """All the printed metrics of one scored pair list."""
    acc, ts = accuracy_2fold(distances, same)
    out: dict[str, Any] = {
        "n_pairs": int(distances.size),
        "n_genuine": int(same.sum()),
        "n_impostor": int((~same).sum()),
        "accuracy_2fold": acc,
        "accuracy_2fold_thresholds": ts,
        "eer": eer(distances, same),
    }
    for far in FARS:
        tar, t = tar_at_far(distances, same, far)
        key = f"{far * 100:g}%"
        out[f"tar_at_far_{key}"] = tar
        out[f"threshold_at_far_{key}"] = t
        out[f"impostors_accepted_at_far_{key}"] = int(np.floor(far * (~same).sum() + 1e-9))
    return out


# ---------------------------------------------------------------------------- running
def _load(root: Path, rel: str, settings: FaceSettings) -> DecodedImage | None:
    path = root / rel
    try:
        data = path.read_bytes()
    except OSError:
        return None
    decoded = decode_image(data, settings)
    return decoded if isinstance(decoded, DecodedImage) else None


def embed_baseline(root: Path, paths: Sequence[str]) -> dict[str, ImageResult]:
    """Plain face_recognition: load_image_file + face_encodings (HOG, upsample 1, 5-point, no jitter)."""
    import face_recognition

    out: dict[str, ImageResult] = {}
    for rel in paths:
        t0 = time.perf_counter()
        try:
            img = face_recognition.load_image_file(str(root / rel))
            encs = face_recognition.face_encodings(img)
        except (OSError, ValueError):
            encs = []
        ms = (time.perf_counter() - t0) * 1e3
        out[rel] = ImageResult(
            np.asarray(encs[0], dtype=np.float32) if encs else None, "ok" if encs else "no_face", ms
        )
    return out


def _calibration_or_none(settings: FaceSettings) -> Calibration | None:
    try:
        return load_calibration(settings.calibration_path)
    except ValueError:
        return None


def placeholder_calibration() -> Calibration:
    """A stand-in calibration for engines whose thresholds are not used (encoding only)."""
    return Calibration(
        dataset="placeholder",
        n_genuine=0,
        n_impostor=0,
        date="",
        scoring={},
        model={},
        fmr_table=[(0.1, 0.1)],
        false_fail_table=[(0.1, 0.2)],
    )


def score_pairs(
    pairs: Sequence[Pair], dist: Callable[[str, str], float | None]
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Distances (inf where either image failed) and labels for the pairs."""
    d = np.array(
        [(lambda v: np.inf if v is None else v)(dist(p.img1, p.img2)) for p in pairs], dtype=np.float64
    )
    return d, np.array([p.same for p in pairs], dtype=bool)


def _euclidean(a: Embedding | None, b: Embedding | None) -> float | None:
    if a is None or b is None:
        return None
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))


def _cos(a: Embedding | None, b: Embedding | None) -> float | None:
    if a is None or b is None:
        return None
    return float(1.0 - float(np.dot(a.astype(np.float64), b.astype(np.float64))))


def evaluate(
    pairs_csv: Path,
    root: Path,
    settings: FaceSettings,
    models_dir: Path,
    *,
    baseline: bool = False,
    all_pairs: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the evaluation and return a JSON-able report (see the module docstring for the protocol)."""
    pairs = read_pairs(pairs_csv, limit)
    enrol_paths = sorted({p.img1 for p in pairs})
    probe_paths = sorted({p.img2 for p in pairs})
    every = sorted(set(enrol_paths) | set(probe_paths))
    need_both = all_pairs
    t0 = time.perf_counter()
    ours = _embed_all(root, every, enrol_paths, probe_paths, settings, models_dir, need_both)
    wall = time.perf_counter() - t0
    d, same = score_pairs(
        pairs, lambda a, b: _cos(ours[(a, "enrol")].embedding, ours[(b, "probe")].embedding)
    )
    failed = {rel for (rel, _), r in ours.items() if r.embedding is None}
    gate = Counter((ours.get((rel, "probe")) or ours[(rel, "enrol")]).code for rel in every)
    report: dict[str, Any] = {
        "dataset": {"pairs_csv": str(pairs_csv), "root": str(root), "n_images": len(every)},
        "protocol": "img1 enrolled (jittered), img2 probe; TAR@FAR threshold = (k+1)-th smallest impostor "
        "distance with k = floor(FAR * n_impostor), accept d < t; accuracy 2-fold cross-validated",
        "pipeline": {
            "score": "cosine distance of L2-normalised embeddings",
            "landmark_model": settings.landmark_model.value,
            "enrol_num_jitters": settings.enrol_num_jitters,
            "flip_tta": settings.flip_tta,
            "cnn_fallback": settings.cnn_fallback,
            "hog_upsample": settings.hog_upsample,
        },
        "metrics": summarise(d, same),
        "failure_to_enrol_rate": len(failed) / max(len(every), 1),
        "failed_images": sorted(failed),
        "gate_codes": dict(gate),
        "ms_per_image": {
            role: float(np.mean([r.ms for (_, ro), r in ours.items() if ro == role] or [0.0]))
            for role in ("enrol", "probe")
        },
        "wall_s": wall,
        "roc": roc_points(d, same),
        "scores": [
            {"img1": p.img1, "img2": p.img2, "same": p.same, "distance": float(x)}
            for p, x in zip(pairs, d, strict=True)
        ],
    }
    cal = _calibration_or_none(settings)
    if cal is None:
        report["calibration_missing"] = str(settings.calibration_path or "identity/face/calibration.json")
    if cal is not None:
        th = cal.thresholds(settings.target_fmr, settings.target_false_fail_rate)
        accept = d < th.pass_below
        report["calibrated"] = {
            **calibration_provenance(cal, root, every),
            "calibration_dataset": cal.dataset,
            "calibration_n_impostor": cal.n_impostor,
            "target_fmr": settings.target_fmr,
            "pass_below": th.pass_below,
            "fail_above": th.fail_above,
            "tar": float(np.mean(accept[same])),
            "far": float(np.mean(accept[~same])),
            "accuracy": float(np.mean(accept == same)),
            "decided_fail_genuine": int(np.sum(d[same] > th.fail_above)),
            "inconclusive": int(np.sum((d >= th.pass_below) & (d <= th.fail_above))),
        }
    if need_both:
        gd, idd = _all_pairs(every, ours)
        report["all_pairs"] = summarise(
            np.concatenate([gd, idd]), np.concatenate([np.ones(gd.size, bool), np.zeros(idd.size, bool)])
        )
    if baseline:
        t1 = time.perf_counter()
        base = embed_baseline(root, every)
        bd, _ = score_pairs(pairs, lambda a, b: _euclidean(base[a].embedding, base[b].embedding))
        report["baseline"] = {
            "pipeline": "face_recognition.face_encodings(load_image_file(path))[0], euclidean distance",
            "metrics": summarise(bd, same),
            "failure_to_enrol_rate": sum(r.embedding is None for r in base.values()) / max(len(base), 1),
            "ms_per_image": float(np.mean([r.ms for r in base.values()])),
            "wall_s": time.perf_counter() - t1,
            "roc": roc_points(bd, same),
        }
        if need_both:
            base_roles = {(rel, role): r for rel, r in base.items() for role in ("enrol", "probe")}
            bgd, bidd = _all_pairs(every, base_roles, _euclidean)
            report["baseline"]["all_pairs"] = summarise(
                np.concatenate([bgd, bidd]),
                np.concatenate([np.ones(bgd.size, bool), np.zeros(bidd.size, bool)]),
            )
    return report


def _embed_all(
    root: Path,
    every: Sequence[str],
    enrol_paths: Sequence[str],
    probe_paths: Sequence[str],
    settings: FaceSettings,
    models_dir: Path,
    need_both: bool,
) -> dict[tuple[str, str], ImageResult]:
    from identity.face.engine import FaceEngine

    engine = FaceEngine(
        models_dir, settings, calibration=_calibration_or_none(settings) or placeholder_calibration()
    )
    enrol_set, probe_set = set(enrol_paths), set(probe_paths)
    out: dict[tuple[str, str], ImageResult] = {}
    for rel in every:
        decoded = _load(root, rel, settings)
        for role, members in (("enrol", enrol_set), ("probe", probe_set)):
            if not need_both and rel not in members:
                continue
            jit = settings.enrol_num_jitters if role == "enrol" else 0
            other = "probe" if role == "enrol" else "enrol"
            if jit == 0 and settings.enrol_num_jitters == 0 and (rel, other) in out:
                # Without jitter both roles are encoded identically: reuse, keep the timing.
                out[(rel, role)] = out[(rel, other)]
                continue
            if decoded is None:
                out[(rel, role)] = ImageResult(None, "image_unreadable", 0.0)
                continue
            t0 = time.perf_counter()
            a = engine.analyse(decoded.rgb, num_jitters=jit, encode_rejected=True)
            out[(rel, role)] = ImageResult(a.embedding, a.quality.code, (time.perf_counter() - t0) * 1e3)
    return out


def _all_pairs(
    every: Sequence[str],
    ours: dict[tuple[str, str], ImageResult],
    dist: Callable[[Embedding | None, Embedding | None], float | None] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Genuine and impostor distances over all unordered image pairs (enrol side = first in sort order)."""
    ident = [Path(p).parent.name for p in every]
    gen: list[float] = []
    imp: list[float] = []
    for i in range(len(every)):
        a = ours[(every[i], "enrol")].embedding
        for j in range(i + 1, len(every)):
            b = ours[(every[j], "probe")].embedding
            d = (dist or _cos)(a, b)
            (gen if ident[i] == ident[j] else imp).append(np.inf if d is None else d)
    return np.array(gen, dtype=np.float64), np.array(imp, dtype=np.float64)


def format_report(report: dict[str, Any]) -> str:
    """Human-readable lines of a report."""
    m = report["metrics"]
    lines = [
        f"pairs: {m['n_pairs']} ({m['n_genuine']} genuine, {m['n_impostor']} impostor), "
        f"images: {report['dataset']['n_images']}",
        f"pipeline: {report['pipeline']}",
        "ours:",
        *_metric_lines(m),
        f"  failure-to-enrol rate: {report['failure_to_enrol_rate']:.4f}  gate codes: {report['gate_codes']}",
        f"  ms/image: enrol {report['ms_per_image']['enrol']:.1f}, "
        f"probe {report['ms_per_image']['probe']:.1f}  (wall {report['wall_s']:.1f} s)",
    ]
    if "calibration_missing" in report:
        lines.append(f"WARNING: no calibration file ({report['calibration_missing']}): no calibrated figures")
    if "calibrated" in report:
        c = report["calibrated"]
        lines += provenance_lines(c)
        lines.append(
            f"  at calibrated thresholds (target FMR {c['target_fmr']:g}: PASS d < {c['pass_below']:.4f}, "
            f"FAIL d > {c['fail_above']:.4f}): TAR {c['tar']:.3f}, FAR {c['far']:.3f}, "
            f"accuracy {c['accuracy']:.3f}, REVIEW {c['inconclusive']}, "
            f"genuine FAIL {c['decided_fail_genuine']}"
        )
    if "all_pairs" in report:
        a = report["all_pairs"]
        lines += [
            f"all pairs of these images ({a['n_genuine']} genuine, {a['n_impostor']} impostor):",
            *_metric_lines(a),
        ]
    if "baseline" in report:
        b = report["baseline"]
        lines += [
            "baseline (plain face_recognition):",
            *_metric_lines(b["metrics"]),
            f"  failure-to-enrol rate: {b['failure_to_enrol_rate']:.4f}",
            f"  ms/image: {b['ms_per_image']:.1f}  (wall {b['wall_s']:.1f} s)",
        ]
        if "all_pairs" in b:
            lines += ["  baseline on all pairs of these images:", *_metric_lines(b["all_pairs"])]
    return "\n".join(lines)


def _metric_lines(m: dict[str, Any]) -> list[str]:
    return [
        f"  accuracy (2-fold CV): {m['accuracy_2fold']:.4f}   EER: {m['eer']:.4f}",
        f"  TAR @ FAR 1%:   {m['tar_at_far_1%']:.4f}  (threshold d < {m['threshold_at_far_1%']:.4f}, "
        f"{m['impostors_accepted_at_far_1%']} impostor(s) accepted)",
        f"  TAR @ FAR 0.1%: {m['tar_at_far_0.1%']:.4f}  (threshold d < {m['threshold_at_far_0.1%']:.4f}, "
        f"{m['impostors_accepted_at_far_0.1%']} impostor(s) accepted)",
    ]


# ---------------------------------------------------------------------------- calibration provenance
DIGEST_HEX = 16  # first 64 bits of each image's SHA-256: enough to spot overlap, short enough to store


def image_digests(root: Path, rels: Sequence[str]) -> list[str]:
    """Sorted short SHA-256 digests (16 hex) of the image files (unreadable files are skipped)."""
    out = set()
    for rel in rels:
        try:
            out.add(hashlib.sha256((root / rel).read_bytes()).hexdigest()[:DIGEST_HEX])
        except OSError:
            continue
    return sorted(out)


def calibration_provenance(cal: Calibration, root: Path, rels: Sequence[str]) -> dict[str, Any]:
    """Where the calibration came from and how many of these images it was made on (by file content)."""
    cv = cal.extra.get("cross_validation", {})
    known = cal.extra.get("image_sha256_16")
    mine = image_digests(root, rels)
    overlap = None if not isinstance(known, list) else len(set(mine) & {str(x) for x in known})
    return {
        "provenance": {
            "dataset": cal.dataset,
            "date": cal.date,
            "n_identities": cal.extra.get("n_identities"),
            "n_images": cal.extra.get("n_images"),
            "n_genuine": cal.n_genuine,
            "n_impostor": cal.n_impostor,
            "cross_validated": bool(cv),
            "folds": cv.get("k"),
            "repeats": cv.get("repeats"),
            "pass_margin": cal.pass_margin,
            "fail_margin": cal.fail_margin,
            "cv_false_fail": cv.get("false_fail"),
            "cv_false_pass": cv.get("false_pass"),
            "cv_genuine_review": cv.get("genuine_review"),
        },
        "eval_images": len(mine),
        "overlap_images": overlap,
    }


def provenance_lines(c: dict[str, Any]) -> list[str]:
    """The calibration's provenance and the overlap warning, as printed by `kuzet eval face`."""
    p = c["provenance"]
    lines = [
        f"calibration: {p['dataset']}, made {p['date']}, {p['n_identities'] or '?'} identities, "
        f"{p['n_images'] or '?'} images, {p['n_genuine']} genuine / {p['n_impostor']} impostor pairs; "
        + (
            f"{p['folds']}-fold identity-grouped CV x{p['repeats']}, margins PASS -{p['pass_margin']:.4f} "
            f"FAIL +{p['fail_margin']:.4f}; CV out-of-sample false-FAIL mean "
            f"{p['cv_false_fail']['mean']:.2%} (worst fold {p['cv_false_fail']['worst_fold']:.2%}), "
            f"false-PASS mean {p['cv_false_pass']['mean']:.3%} "
            f"(worst fold {p['cv_false_pass']['worst_fold']:.3%})"
            if p["cross_validated"] and p["cv_false_fail"] and p["cv_false_pass"]
            else "NOT cross-validated"
        )
    ]
    n, o = c["eval_images"], c["overlap_images"]
    if o is None:
        lines.append(
            "WARNING: the calibration does not list its images: cannot tell whether this evaluation "
            "overlaps them; treat the calibrated figures as possibly in-sample."
        )
    elif o > 0:
        lines.append(
            f"WARNING: {o} of the {n} evaluation images were used to make the calibration: the figures at "
            "the calibrated thresholds below are IN-SAMPLE, not a generalisation estimate (see the "
            "cross-validated figures above, or evaluate on other images)."
        )
    else:
        lines.append(
            f"calibration made on other images: none of the {n} evaluation images were used to make it "
            "(figures at the calibrated thresholds are out-of-sample)."
        )
    return lines


# ---------------------------------------------------------------------------- cross-validated calibration
def calibrate(
    root: Path,
    settings: FaceSettings,
    models_dir: Path,
    *,
    folds: int = 5,
    repeats: int = 3,
    cache: Path | None = None,
    write_calibration: Path | None = None,
    compare_flip: bool = True,
) -> dict[str, Any]:
    """All-pairs, identity-grouped, nested cross-validation of the thresholds on every image under `root`.

    Reports out-of-sample false-FAIL, false-PASS and REVIEW rates (mean and worst fold) with and without
    flip TTA, the margins a calibration on all images gets, and optionally writes that calibration.
    """
    from identity.face.crossval import all_pairs as pairs_of
    from identity.face.crossval import cross_validate, final_margins
    from identity.face.dataset import encode_images, list_images

    rels = list_images(root)
    t0 = time.perf_counter()
    enc, cached = encode_images(root, rels, settings, models_dir, cache)
    wall = time.perf_counter() - t0
    fmr, ffr = settings.target_fmr, settings.target_false_fail_rate
    found = enc.found
    report: dict[str, Any] = {
        "dataset": {
            "root": str(root),
            "n_images": len(rels),
            "n_found": int(found.sum()),
            "n_identities": len(set(enc.identities)),
            "not_found": [p for p, ok in zip(rels, found, strict=True) if not ok],
        },
        "encoding": {
            "cache": str(cache) if cache else None,
            "from_cache": cached,
            "wall_s": wall,
            "detect_ms_per_image": float(np.mean(enc.detect_ms)),
            "encode_ms_per_chip": float(np.nanmean(enc.encode_ms)) if found.any() else None,
        },
        "protocol": f"all unordered pairs, identity = parent directory; {folds}-fold CV grouped by identity, "
        f"repeated {repeats}x; thresholds tuned on the other folds at target FMR {fmr:g} and false-FAIL "
        f"{ffr:g}, safety margins chosen by a nested identity-grouped CV inside the tuning folds; "
        "figures are on the held-out fold's within-fold pairs",
        "variants": {},
    }
    variants = (settings.flip_tta, not settings.flip_tta) if compare_flip else (settings.flip_tta,)
    for flip in variants:
        emb = enc.embeddings(flip)
        cv = cross_validate(emb, enc.identities, k=folds, repeats=repeats, target_fmr=fmr, target_ffr=ffr)
        pm, fm = final_margins(emb, enc.identities, k=folds, target_fmr=fmr, target_ffr=ffr)
        pairs = pairs_of(emb, enc.identities)
        gen, imp = pairs.distance[pairs.same], pairs.distance[~pairs.same]
        cal = build_calibration(gen, imp, dataset="", scoring={}, model={}, pass_margin=pm, fail_margin=fm)
        th = cal.thresholds(fmr, ffr)
        report["variants"]["flip_tta" if flip else "no_flip"] = {
            "flip_tta": flip,
            "cv": cv.summary(),
            "all_images": {
                "n_genuine": int(gen.size),
                "n_impostor": int(imp.size),
                "pass_margin": pm,
                "fail_margin": fm,
                "pass_below": th.pass_below,
                "fail_above": th.fail_above,
            },
            "encode_ms_per_image": (2 if flip else 1) * (report["encoding"]["encode_ms_per_chip"] or 0.0),
            "_emb": emb,
            "_gen": gen,
            "_imp": imp,
        }
        if flip:
            from identity.face.crossval import cross_validate_on_demand_flip

            # Probe side encoded once, mirrored only near the band, at this CV's own thresholds.
            report["on_demand_flip"] = cross_validate_on_demand_flip(
                enc.plain,
                enc.mirror,
                enc.identities,
                cv,
                shipped=(settings.flip_tta_pass_margin, settings.flip_tta_margin),
            )
    chosen = report["variants"]["flip_tta" if settings.flip_tta else "no_flip"]
    if write_calibration is not None:
        from identity.models import load_manifest

        entry = load_manifest()["dlib_resnet_face_v1"]
        a = chosen["all_images"]
        new = build_calibration(
            chosen["_gen"],
            chosen["_imp"],
            dataset=f"all images under {root.name}/ ({report['dataset']['n_found']} images with a face, "
            f"{report['dataset']['n_identities']} identities = parent directories; all unordered pairs)",
            scoring={
                "score": "cosine distance of L2-normalised embeddings",
                "landmark_model": settings.landmark_model.value,
                "enrol_num_jitters": settings.enrol_num_jitters,
                "flip_tta": settings.flip_tta,
                "cnn_fallback": settings.cnn_fallback,
                "hog_upsample": settings.hog_upsample,
            },
            model=entry.stamp().to_dict(),
            notes="Tables measured on all the images; PASS/FAIL safety margins chosen by identity-grouped "
            "cross-validation so that held-out identities meet the targets (extra.cross_validation holds "
            "the out-of-sample figures of the whole procedure, margins included). An evaluation on these "
            "images is in-sample: `kuzet eval face` warns when it overlaps extra.image_sha256_16.",
            pass_margin=a["pass_margin"],
            fail_margin=a["fail_margin"],
            extra={
                "n_images": report["dataset"]["n_found"],
                "n_identities": report["dataset"]["n_identities"],
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "targets": {"fmr": fmr, "false_fail_rate": ffr},
                "thresholds_at_targets": {"pass_below": a["pass_below"], "fail_above": a["fail_above"]},
                "cross_validation": chosen["cv"],
                "flip_tta_comparison": {
                    name: {"cv": v["cv"], "encode_ms_per_image": v["encode_ms_per_image"]}
                    for name, v in report["variants"].items()
                },
                "image_sha256_16": image_digests(root, [p for p, ok in zip(rels, found, strict=True) if ok]),
            },
        )
        write_calibration.write_text(new.to_json())
        report["calibration_written"] = str(write_calibration)
    for v in report["variants"].values():
        for key in ("_emb", "_gen", "_imp"):
            v.pop(key)
    return report


def format_calibration(report: dict[str, Any]) -> str:
    """Human-readable lines of a `calibrate` report."""
    d, e = report["dataset"], report["encoding"]
    lines = [
        f"images: {d['n_images']} ({d['n_found']} with a face), identities: {d['n_identities']}",
        f"encoding: {'from cache ' + str(e['cache']) if e['from_cache'] else 'computed'} in "
        f"{e['wall_s']:.1f} s; detect {e['detect_ms_per_image']:.0f} ms/image, encode "
        f"{(e['encode_ms_per_chip'] or 0):.0f} ms per chip (flip TTA = 2 chips)",
        f"protocol: {report['protocol']}",
    ]
    for name, v in report["variants"].items():
        cv, a = v["cv"], v["all_images"]
        po = cv["pooled"]
        lines += [
            f"{name} (encode ~{v['encode_ms_per_image']:.0f} ms/image): out-of-sample over "
            f"{cv['k'] * cv['repeats']} held-out folds ({cv['pooled']['n_genuine']} genuine, "
            f"{cv['pooled']['n_impostor']} impostor pair-tests), mean | worst fold:",
            f"  false-FAIL (genuine decided FAIL)   {cv['false_fail']['mean']:7.3%} | "
            f"{cv['false_fail']['worst_fold']:7.3%}   target <= {cv['target_false_fail_rate']:.1%}",
            f"  false-PASS (impostor decided PASS)  {cv['false_pass']['mean']:7.3%} | "
            f"{cv['false_pass']['worst_fold']:7.3%}   target <= {cv['target_fmr']:.1%}",
            f"  genuine REVIEW                      {cv['genuine_review']['mean']:7.3%} | "
            f"{cv['genuine_review']['worst_fold']:7.3%}",
            f"  impostor REVIEW                     {cv['impostor_review']['mean']:7.3%} | "
            f"{cv['impostor_review']['worst_fold']:7.3%}",
            f"  genuine PASS                        {cv['genuine_pass']['mean']:7.3%} | "
            f"{cv['genuine_pass']['worst_fold']:7.3%}",
            f"  pooled over all held-out folds: false-FAIL {po['false_fail_count']}/{po['n_genuine']} = "
            f"{po['false_fail']:.3%} (95% upper bound {po['false_fail_upper95']:.3%}), false-PASS "
            f"{po['false_pass_count']}/{po['n_impostor']} = {po['false_pass']:.3%} (95% upper bound "
            f"{po['false_pass_upper95']:.3%}), genuine REVIEW {po['genuine_review']:.2%}; PASS-side rule "
            f"'{cv['pass_rule']}'",
            "  per fold (repeat.fold: PASS d <, FAIL d >, false-PASS, false-FAIL, genuine REVIEW): "
            + "; ".join(
                f"{f['repeat']}.{f['fold']}: {f['pass_below']:.4f}, {f['fail_above']:.4f}, {f['false_pass']}, "
                f"{f['false_fail']}, {f['genuine_review']:.1%}"
                for f in cv["per_fold"]
            ),
            f"  all images ({a['n_genuine']} genuine, {a['n_impostor']} impostor pairs): margins PASS "
            f"-{a['pass_margin']:.4f} FAIL +{a['fail_margin']:.4f} -> PASS d < {a['pass_below']:.4f}, "
            f"FAIL d > {a['fail_above']:.4f}",
        ]
    od = report.get("on_demand_flip")
    if od:
        r = od["rates"]
        sym, shipped = od["symmetric"], od["shipped"]
        lines += [
            f"on-demand flip TTA (probe encoded once, mirror when within a margin of the band; per fold, on "
            f"its tuning folds: PASS side = {od['quantile']:g} quantile of (mirrored - one-pass), "
            f"{od['pass_margin']['min']:.4f}..{od['pass_margin']['max']:.4f}; FAIL side = {od['quantile']:g} "
            f"quantile of |one-pass - mirrored|, {od['margin']['min']:.4f}..{od['margin']['max']:.4f}), "
            f"{od['n_genuine']} genuine / {od['n_impostor']} impostor probe-tests:",
            f"  decisions differing from always mirroring: {od['decisions_differing_from_flip']}; mirror pass "
            f"for {od['mirror_pass_share_genuine']:.1%} of genuine, {od['mirror_pass_share_impostor']:.1%} "
            "of impostor probes",
            f"  |gap| margin on both sides (earlier rule): differing {sym['decisions_differing_from_flip']}; "
            f"mirror for {sym['mirror_pass_share_genuine']:.1%} / {sym['mirror_pass_share_impostor']:.1%}",
            f"  shipped margins (PASS -{shipped['pass_margin']:.4f}, FAIL +{shipped['margin']:.4f}): differing "
            f"{shipped['decisions_differing_from_flip']}; mirror for {shipped['mirror_pass_share_genuine']:.1%} "
            f"/ {shipped['mirror_pass_share_impostor']:.1%}",
        ]
        for name in ("flip", "on_demand", "no_flip"):
            x = r[name]
            lines.append(
                f"  probe {name:9s}: false-FAIL {x['false_fail']:.3%}  false-PASS {x['false_pass']:.3%}  "
                f"genuine REVIEW {x['genuine_review']:.2%}  impostor REVIEW {x['impostor_review']:.2%}"
            )
    if "calibration_written" in report:
        lines.append(f"calibration written to {report['calibration_written']}")
    return "\n".join(lines)
