"""Identity-grouped cross-validation of the face PASS/FAIL thresholds (light: numpy only).

Why: thresholds read off the same images they are scored on look better than they are; on unseen LFW
pairs the first calibration FAILed 2.1-2.3% of genuine comparisons (target 1%). Here the images are split
into k folds BY IDENTITY (no person in both a tuning and a test fold), so a test fold is what a new
person looks like to the thresholds.

Thresholds on a tuning set (cosine distance d, PASS when d < pass_below, FAIL when d > fail_above):
- pass_below = threshold_at_fmr(tuning impostors, target_fmr) - pass_margin
- fail_above = the genuine distance exceeded by target_ffr of tuning genuine pairs + fail_margin
The margins (distance units) are the smallest on a grid that meet the targets out of sample in a CV
nested inside the tuning set (FAIL side: every inner fold; PASS side: the 95% upper confidence bound of the
inner folds' pooled false-PASS rate, rule "ucb"), so the outer figures are an honest estimate of the whole
procedure, margin choice included. The shipped calibration applies margins chosen the same way on all
dev images.

Why "ucb" on the PASS side: impostor look-alikes cluster (on LFW with dlib: a few East Asian identities
sit closer to each other than many genuine pairs), so a tuning set that lacks a cluster sets its PASS
threshold too loose for a test fold that holds it. A pooled point estimate at the target ("pooled", the
first rule) then lands at the target on average and above it in such folds; demanding the upper bound buys
the margin that covers that spread. "worst" (every inner fold meets it) is kept for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.face.calibration import threshold_at_fmr

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
MARGIN_GRID = tuple(round(0.0025 * i, 4) for i in range(0, 25))  # 0 .. 0.06 cosine distance


def wilson_upper(count: F64 | float, n: int, z: float = 1.645) -> F64:
    """One-sided upper confidence bound (Wilson score; z=1.645: 95%) of a rate seen count times in n."""
    c = np.asarray(count, dtype=np.float64)
    if n <= 0:
        return np.ones_like(c)
    p = c / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.asarray((centre + spread) / (1 + z * z / n), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class PairSet:
    """All unordered pairs of a set of images: indices (i < j), distance, and same-identity flag."""

    i: I64
    j: I64
    distance: F64
    same: npt.NDArray[np.bool_]


def all_pairs(embeddings: npt.NDArray[np.floating[Any]], identities: Sequence[str]) -> PairSet:
    """Cosine distances of every unordered pair of (n, 128) L2-normalised rows; NaN rows are skipped."""
    emb = np.asarray(embeddings, dtype=np.float64)
    ok = np.flatnonzero(np.all(np.isfinite(emb), axis=1))
    ii, jj = np.triu_indices(ok.size, k=1)
    i, j = ok[ii], ok[jj]
    d = 1.0 - np.einsum("ij,ij->i", emb[i], emb[j])
    labels = np.asarray(identities)
    return PairSet(i.astype(np.int64), j.astype(np.int64), d, labels[i] == labels[j])


def identity_folds(identities: Sequence[str], k: int, seed: int) -> I64:
    """Fold number (0..k-1) per image; all images of one identity share a fold.

    Identities are shuffled (seed) and then dealt largest first (most genuine pairs) to the fold with the
    fewest genuine pairs so far (ties: fewest images), which keeps genuine pairs balanced across folds.
    """
    labels = np.asarray(identities)
    names, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(names.size)
    order = order[np.argsort(-counts[order], kind="stable")]
    pairs_in = np.zeros(k, dtype=np.int64)
    images_in = np.zeros(k, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for idx in order:
        c = int(counts[idx])
        f = int(np.lexsort((images_in, pairs_in))[0])
        fold_of[str(names[idx])] = f
        pairs_in[f] += c * (c - 1) // 2
        images_in[f] += c
    return np.array([fold_of[str(x)] for x in labels], dtype=np.int64)


def false_fail_threshold(genuine: F64, rate: float) -> float:
    """Genuine distance exceeded by at most `rate` of genuine pairs (the largest when rate < 1/n)."""
    gen = np.sort(np.asarray(genuine, dtype=np.float64))
    idx = min(int(np.ceil((1.0 - rate) * gen.size)) - 1, gen.size - 1)
    return float(gen[max(idx, 0)])


@dataclass(frozen=True, slots=True)
class Rates:
    """Decision rates on one set of pairs at given thresholds."""

    n_genuine: int
    n_impostor: int
    false_fail: float  # genuine with d > fail_above
    false_pass: float  # impostor with d < pass_below
    genuine_review: float  # genuine between the thresholds
    impostor_review: float
    genuine_pass: float


def rates(distance: F64, same: npt.NDArray[np.bool_], pass_below: float, fail_above: float) -> Rates:
    """PASS/REVIEW/FAIL shares of genuine and impostor pairs at the thresholds."""
    g, m = distance[same], distance[~same]

    def share(x: npt.NDArray[np.bool_]) -> float:
        return float(x.mean()) if x.size else 0.0

    return Rates(
        n_genuine=int(g.size),
        n_impostor=int(m.size),
        false_fail=share(g > fail_above),
        false_pass=share(m < pass_below),
        genuine_review=share((g >= pass_below) & (g <= fail_above)),
        impostor_review=share((m >= pass_below) & (m <= fail_above)),
        genuine_pass=share(g < pass_below),
    )


def tune(
    distance: F64, same: npt.NDArray[np.bool_], target_fmr: float, target_ffr: float
) -> tuple[float, float]:
    """Raw (margin-free) (pass_below, fail_above) measured on tuning pairs."""
    return threshold_at_fmr(distance[~same], target_fmr), false_fail_threshold(distance[same], target_ffr)


def _within(pairs: PairSet, members: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return members[pairs.i] & members[pairs.j]


def choose_margins(
    pairs: PairSet,
    identities: Sequence[str],
    members: npt.NDArray[np.bool_],
    *,
    k: int,
    seed: int,
    target_fmr: float,
    target_ffr: float,
    pass_rule: str = "ucb",
) -> tuple[float, float]:
    """Smallest (pass_margin, fail_margin) on MARGIN_GRID meeting the targets out of sample.

    FAIL side: the false-FAIL target must hold in every inner fold (a FAIL is a violation; its margin is
    cheap: it only turns clear impostor FAILs into REVIEW). PASS side (`pass_rule`): "pooled" = the
    false-PASS rate over all inner test folds together meets the target; "ucb" = its one-sided 95% upper
    confidence bound does (wilson_upper); "worst" = every inner fold does.
    Only images with `members` True are used; inner folds are grouped by identity like the outer ones.
    A grid that never meets a target returns its largest margin.
    """
    labels = np.asarray(identities)
    inner = np.full(labels.size, -1, dtype=np.int64)
    inner[members] = identity_folds(labels[members].tolist(), k, seed)
    worst_fp = np.zeros(len(MARGIN_GRID))
    worst_ff = np.zeros(len(MARGIN_GRID))
    fp_count = np.zeros(len(MARGIN_GRID))
    n_imp = 0
    for f in range(k):
        test = _within(pairs, members & (inner == f))
        train = _within(pairs, members & (inner != f))
        if not pairs.same[train].any() or not (~pairs.same[train]).any():
            continue
        p, fa = tune(pairs.distance[train], pairs.same[train], target_fmr, target_ffr)
        d, s = pairs.distance[test], pairs.same[test]
        n_imp += int((~s).sum())
        for n, margin in enumerate(MARGIN_GRID):
            r = rates(d, s, p - margin, fa + margin)
            worst_fp[n] = max(worst_fp[n], r.false_pass)
            worst_ff[n] = max(worst_ff[n], r.false_fail)
            fp_count[n] += r.false_pass * r.n_impostor
    if pass_rule == "worst":
        pass_stat = worst_fp
    elif pass_rule == "ucb":
        pass_stat = wilson_upper(fp_count, n_imp)
    else:
        pass_stat = fp_count / max(n_imp, 1)
    ok_p = np.flatnonzero(pass_stat <= target_fmr)
    ok_f = np.flatnonzero(worst_ff <= target_ffr)
    return (
        MARGIN_GRID[int(ok_p[0]) if ok_p.size else -1],
        MARGIN_GRID[int(ok_f[0]) if ok_f.size else -1],
    )


@dataclass(frozen=True, slots=True)
class FoldResult:
    """One outer test fold: its thresholds (tuned on the other folds, margins nested) and its rates."""

    repeat: int
    fold: int
    pass_below: float
    fail_above: float
    pass_margin: float
    fail_margin: float
    rates: Rates


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Outer folds of a repeated, identity-grouped, nested cross-validation, and their summary."""

    k: int
    repeats: int
    target_fmr: float
    target_ffr: float
    pass_rule: str
    n_images: int
    n_identities: int
    folds: list[FoldResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Mean and worst fold of each out-of-sample rate, plus pooled counts."""
        out: dict[str, Any] = {
            "k": self.k,
            "repeats": self.repeats,
            "n_images": self.n_images,
            "n_identities": self.n_identities,
            "target_fmr": self.target_fmr,
            "target_false_fail_rate": self.target_ffr,
            "pass_rule": self.pass_rule,
        }
        worst = {"false_fail": max, "false_pass": max, "genuine_review": max, "impostor_review": max}
        worst["genuine_pass"] = min
        for name, pick in worst.items():
            vals = [getattr(f.rates, name) for f in self.folds]
            out[name] = {"mean": float(np.mean(vals)), "worst_fold": float(pick(vals))}
        gen = sum(f.rates.n_genuine for f in self.folds)
        imp = sum(f.rates.n_impostor for f in self.folds)
        ff_n = sum(round(f.rates.false_fail * f.rates.n_genuine) for f in self.folds)
        fp_n = sum(round(f.rates.false_pass * f.rates.n_impostor) for f in self.folds)
        out["pooled"] = {
            "n_genuine": gen,
            "n_impostor": imp,
            "false_fail_count": ff_n,
            "false_pass_count": fp_n,
            "false_fail": ff_n / max(gen, 1),
            "false_pass": fp_n / max(imp, 1),
            "false_fail_upper95": float(wilson_upper(ff_n, gen)),
            "false_pass_upper95": float(wilson_upper(fp_n, imp)),
            "genuine_review": sum(f.rates.genuine_review * f.rates.n_genuine for f in self.folds)
            / max(gen, 1),
        }
        out["per_fold"] = [
            {
                "repeat": f.repeat,
                "fold": f.fold,
                "pass_below": round(f.pass_below, 5),
                "fail_above": round(f.fail_above, 5),
                "false_pass": f"{round(f.rates.false_pass * f.rates.n_impostor)}/{f.rates.n_impostor}",
                "false_fail": f"{round(f.rates.false_fail * f.rates.n_genuine)}/{f.rates.n_genuine}",
                "genuine_review": round(f.rates.genuine_review, 4),
            }
            for f in self.folds
        ]
        out["margins_chosen"] = {
            "pass": sorted({f.pass_margin for f in self.folds}),
            "fail": sorted({f.fail_margin for f in self.folds}),
        }
        return out

    def to_dict(self) -> dict[str, Any]:
        """Summary plus every fold, JSON-able."""
        return {**self.summary(), "folds": [asdict(f) for f in self.folds]}


def cross_validate(
    embeddings: npt.NDArray[np.floating[Any]],
    identities: Sequence[str],
    *,
    k: int = 5,
    repeats: int = 3,
    target_fmr: float = 1e-3,
    target_ffr: float = 0.01,
    seed: int = 0,
    pass_rule: str = "ucb",
) -> CrossValidation:
    """Repeated k-fold CV grouped by identity; margins chosen by a nested CV inside each tuning set."""
    pairs = all_pairs(embeddings, identities)
    found = np.all(np.isfinite(np.asarray(embeddings, dtype=np.float64)), axis=1)
    labels = np.asarray(identities)
    cv = CrossValidation(
        k=k,
        repeats=repeats,
        target_fmr=target_fmr,
        target_ffr=target_ffr,
        pass_rule=pass_rule,
        n_images=int(found.sum()),
        n_identities=int(np.unique(labels[found]).size),
    )
    for rep in range(repeats):
        outer = identity_folds(labels.tolist(), k, seed + 1000 * rep)
        for f in range(k):
            train_members = found & (outer != f)
            test = _within(pairs, found & (outer == f))
            train = _within(pairs, train_members)
            pm, fm = choose_margins(
                pairs,
                labels.tolist(),
                train_members,
                k=k - 1,
                seed=seed + 1000 * rep + f + 1,
                target_fmr=target_fmr,
                target_ffr=target_ffr,
                pass_rule=pass_rule,
            )
            p, fa = tune(pairs.distance[train], pairs.same[train], target_fmr, target_ffr)
            pass_below, fail_above = p - pm, max(fa + fm, p - pm)
            r = rates(pairs.distance[test], pairs.same[test], pass_below, fail_above)
            cv.folds.append(FoldResult(rep, f, pass_below, fail_above, pm, fm, r))
    return cv


def final_margins(
    embeddings: npt.NDArray[np.floating[Any]],
    identities: Sequence[str],
    *,
    k: int = 5,
    target_fmr: float = 1e-3,
    target_ffr: float = 0.01,
    seed: int = 0,
    pass_rule: str = "ucb",
) -> tuple[float, float]:
    """Margins for a calibration made on all images: chosen by a k-fold identity CV over all of them."""
    pairs = all_pairs(embeddings, identities)
    found = np.all(np.isfinite(np.asarray(embeddings, dtype=np.float64)), axis=1)
    return choose_margins(
        pairs,
        identities,
        found,
        k=k,
        seed=seed,
        target_fmr=target_fmr,
        target_ffr=target_ffr,
        pass_rule=pass_rule,
    )


# ---------------------------------------------------------------------------- on-demand flip TTA
def flip_band_margin(refined: F64, single: F64, quantile: float = 0.999) -> float:
    """How far a one-pass distance can sit from its mirror-averaged value: the `quantile` of
    |single - refined| (cosine distance units) over a set of comparisons."""
    gap = np.abs(np.asarray(single, dtype=np.float64) - np.asarray(refined, dtype=np.float64))
    gap = gap[np.isfinite(gap)]
    return float(np.quantile(gap, quantile)) if gap.size else 0.0


def flip_pass_margin(refined: F64, single: F64, quantile: float = 0.999) -> float:
    """How far the mirror pass can RAISE a one-pass distance: the `quantile` of (refined - single), at
    least 0. Only a rise turns a PASS into a REVIEW, so this is all the PASS side of the band needs; the
    mirror mostly lowers distances (it averages noise away), so it is smaller than `flip_band_margin`."""
    rise = np.asarray(refined, dtype=np.float64) - np.asarray(single, dtype=np.float64)
    rise = rise[np.isfinite(rise)]
    return max(float(np.quantile(rise, quantile)), 0.0) if rise.size else 0.0


def on_demand_decisions(
    single: F64,
    refined: F64,
    pass_below: float,
    fail_above: float,
    margin: float,
    pass_margin: float | None = None,
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Distances decided on, and which comparisons needed the mirror pass.

    A probe is encoded once; only when its one-pass distance lies within [pass_below - pass_margin,
    fail_above + margin] (`pass_margin` None: `margin` on both sides) is the mirror encoded and the
    mirror-averaged distance used instead.
    """
    below = margin if pass_margin is None else pass_margin
    need = (single >= pass_below - below) & (single <= fail_above + margin)
    return np.where(need, refined, single), need


def _decide(d: F64, pass_below: float, fail_above: float) -> npt.NDArray[np.int8]:
    return np.where(d < pass_below, 0, np.where(d > fail_above, 2, 1)).astype(np.int8)


def cross_validate_on_demand_flip(
    plain: npt.NDArray[np.floating[Any]],
    mirror: npt.NDArray[np.floating[Any]],
    identities: Sequence[str],
    cv: CrossValidation,
    *,
    seed: int = 0,
    quantile: float = 0.999,
    shipped: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Out-of-sample rates of on-demand flip TTA at the thresholds of `cv` (a flip-TTA cross-validation).

    Enrolled side: mirror-averaged embeddings (enrolment keeps flip TTA). Probe side: one pass, plus the
    mirror only near the decision band. Every within-fold pair is tested both ways round. Per outer fold
    the FAIL-side margin is `flip_band_margin` and the PASS-side margin `flip_pass_margin`, both on the
    TUNING folds' comparisons near the band, so the held-out figures include the choice of margins.
    Returns pooled rates for full flip, on-demand flip and no flip on the probe side, the share of probes
    that needed the mirror, and the decisions that differ from full flip; under "symmetric" the same for
    `flip_band_margin` on both sides (the earlier rule), and under "shipped" for the fixed
    (pass_margin, margin) = `shipped` when given.
    """
    p = np.asarray(plain, dtype=np.float64)
    m = np.asarray(mirror, dtype=np.float64)
    both = p + m
    flip = both / np.maximum(np.linalg.norm(both, axis=1, keepdims=True), 1e-12)
    found = np.all(np.isfinite(flip), axis=1)
    labels = np.asarray(identities)
    pairs = all_pairs(flip, identities)
    # Both directions: (enrolled, probe) = (i, j) and (j, i).
    e_idx = np.concatenate([pairs.i, pairs.j])
    q_idx = np.concatenate([pairs.j, pairs.i])
    same = np.concatenate([pairs.same, pairs.same])
    d_flip = 1.0 - np.einsum("ij,ij->i", flip[e_idx], flip[q_idx])
    d_one = 1.0 - np.einsum("ij,ij->i", flip[e_idx], p[q_idx])
    counts = {
        name: {"false_fail": 0, "false_pass": 0, "genuine_review": 0, "impostor_review": 0}
        for name in ("flip", "on_demand", "no_flip")
    }
    n_gen = n_imp = n_refined = n_differ = n_total = n_refined_gen = 0
    margins: list[float] = []
    pass_margins: list[float] = []
    # (refined, refined genuine, differing) for the symmetric rule and the shipped margins.
    other = {"symmetric": [0, 0, 0], "shipped": [0, 0, 0]}
    fold_of_cv = {(f.repeat, f.fold): f for f in cv.folds}
    for rep in range(cv.repeats):
        outer = identity_folds(labels.tolist(), cv.k, seed + 1000 * rep)
        for f in range(cv.k):
            res = fold_of_cv[(rep, f)]
            member = found & (outer == f)
            train_member = found & (outer != f)
            test = member[e_idx] & member[q_idx]
            train = train_member[e_idx] & train_member[q_idx]
            # The margin matters only near the band: measure the gap on tuning comparisons there.
            near = train & (d_one > res.pass_below - 0.05) & (d_one < res.fail_above + 0.05)
            margin = flip_band_margin(d_flip[near], d_one[near], quantile)
            pass_margin = flip_pass_margin(d_flip[near], d_one[near], quantile)
            margins.append(margin)
            pass_margins.append(pass_margin)
            d_od, need = on_demand_decisions(
                d_one[test], d_flip[test], res.pass_below, res.fail_above, margin, pass_margin
            )
            s = same[test]
            full = _decide(d_flip[test], res.pass_below, res.fail_above)
            rules: dict[str, tuple[float, float] | None] = {
                "symmetric": (margin, margin),
                "shipped": shipped,
            }
            for name, rule in rules.items():
                if rule is None:
                    continue
                d_x, need_x = on_demand_decisions(
                    d_one[test], d_flip[test], res.pass_below, res.fail_above, rule[1], rule[0]
                )
                o = other[name]
                o[0] += int(need_x.sum())
                o[1] += int(need_x[s].sum())
                o[2] += int((_decide(d_x, res.pass_below, res.fail_above) != full).sum())
            n_gen += int(s.sum())
            n_imp += int((~s).sum())
            n_refined += int(need.sum())
            n_refined_gen += int(need[s].sum())
            n_total += int(test.sum())
            n_differ += int((_decide(d_od, res.pass_below, res.fail_above) != full).sum())
            for name, d in (("flip", d_flip[test]), ("on_demand", d_od), ("no_flip", d_one[test])):
                c = counts[name]
                c["false_fail"] += int((d[s] > res.fail_above).sum())
                c["false_pass"] += int((d[~s] < res.pass_below).sum())
                c["genuine_review"] += int(((d[s] >= res.pass_below) & (d[s] <= res.fail_above)).sum())
                c["impostor_review"] += int(((d[~s] >= res.pass_below) & (d[~s] <= res.fail_above)).sum())
    rates_out = {
        name: {
            "false_fail": c["false_fail"] / max(n_gen, 1),
            "false_pass": c["false_pass"] / max(n_imp, 1),
            "genuine_review": c["genuine_review"] / max(n_gen, 1),
            "impostor_review": c["impostor_review"] / max(n_imp, 1),
        }
        for name, c in counts.items()
    }

    def shares(refined: int, refined_gen: int, differ: int) -> dict[str, Any]:
        return {
            "mirror_pass_share": refined / max(n_total, 1),
            "mirror_pass_share_genuine": refined_gen / max(n_gen, 1),
            "mirror_pass_share_impostor": (refined - refined_gen) / max(n_imp, 1),
            "decisions_differing_from_flip": differ,
        }

    out: dict[str, Any] = {
        "n_genuine": n_gen,
        "n_impostor": n_imp,
        "quantile": quantile,
        "margin": {"min": float(np.min(margins)), "max": float(np.max(margins))},
        "pass_margin": {"min": float(np.min(pass_margins)), "max": float(np.max(pass_margins))},
        **shares(n_refined, n_refined_gen, n_differ),
        "rates": rates_out,
        "symmetric": shares(*other["symmetric"]),
    }
    if shipped is not None:
        out["shipped"] = {"pass_margin": shipped[0], "margin": shipped[1], **shares(*other["shipped"])}
    return out
