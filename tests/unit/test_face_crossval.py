"""Identity-grouped cross-validation of the face thresholds, calibration margins and provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from identity.face.calibration import DEFAULT_PATH, Calibration, build_calibration, load_calibration
from identity.face.config import FaceSettings
from identity.face.crossval import (
    all_pairs,
    choose_margins,
    cross_validate,
    identity_folds,
    rates,
    wilson_upper,
)
from identity.face.evaluate import calibration_provenance, image_digests, provenance_lines
from media_server.cli import main

FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "faces"


def clustered(n_people: int, per_person: list[int], spread: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """Unit embeddings: one random centre per person, members scattered around it by `spread`."""
    rng = np.random.default_rng(seed)
    rows, names = [], []
    for p in range(n_people):
        centre = rng.normal(size=128)
        centre /= np.linalg.norm(centre)
        for _ in range(per_person[p % len(per_person)]):
            v = centre + spread * rng.normal(size=128) / np.sqrt(128)
            rows.append(v / np.linalg.norm(v))
            names.append(f"person{p:03d}")
    return np.array(rows, dtype=np.float32), names


def test_folds_never_split_an_identity_and_balance_genuine_pairs() -> None:
    _, names = clustered(90, [1, 2, 3, 5], 0.3, 1)
    folds = identity_folds(names, 5, seed=3)
    for person in set(names):
        assert len({int(folds[i]) for i, n in enumerate(names) if n == person}) == 1
    labels = np.array(names)
    pairs_per_fold = []
    for f in range(5):
        _, counts = np.unique(labels[folds == f], return_counts=True)
        pairs_per_fold.append(int((counts * (counts - 1) // 2).sum()))
    assert min(pairs_per_fold) > 0 and max(pairs_per_fold) - min(pairs_per_fold) <= 10


def test_cross_validation_reports_out_of_sample_rates() -> None:
    emb, names = clustered(80, [1, 2, 4], 0.35, 2)
    emb[5] = np.nan  # an image without a face is left out, not scored
    cv = cross_validate(emb, names, k=4, repeats=2)
    s = cv.summary()
    assert len(cv.folds) == 8 and s["n_images"] == emb.shape[0] - 1
    # Well separated people: no genuine FAIL; PASS sits at the tuning folds' FMR 0.1% point, so held-out
    # impostors pass at about that rate (not zero).
    assert s["false_fail"]["worst_fold"] == 0.0
    assert 0.0 <= s["pooled"]["false_pass"] <= 3 * cv.target_fmr
    total = s["pooled"]["n_genuine"] + s["pooled"]["n_impostor"]
    assert total == sum(f.rates.n_genuine + f.rates.n_impostor for f in cv.folds)
    for f in cv.folds:
        assert f.pass_below <= f.fail_above
        r = f.rates
        assert abs(r.genuine_pass + r.genuine_review + r.false_fail - 1.0) < 1e-9


def test_margins_move_thresholds_and_survive_json() -> None:
    gen = np.linspace(0.02, 0.09, 200)
    imp = np.linspace(0.06, 0.5, 5000)
    base = build_calibration(gen, imp, dataset="t", scoring={}, model={})
    cal = build_calibration(gen, imp, dataset="t", scoring={}, model={}, pass_margin=0.01, fail_margin=0.02)
    a, b = base.thresholds(1e-3, 0.01), cal.thresholds(1e-3, 0.01)
    assert abs((a.pass_below - b.pass_below) - 0.01) < 1e-12
    assert abs((b.fail_above - a.fail_above) - 0.02) < 1e-12
    again = Calibration.from_json(cal.to_json())
    assert again.thresholds(1e-3, 0.01) == b
    r = rates(np.array([0.01, 0.2, 0.07]), np.array([True, False, True]), b.pass_below, b.fail_above)
    assert r.false_pass == 0.0 and r.genuine_pass == 0.5


def test_shipped_calibration_is_cross_validated_and_meets_the_targets() -> None:
    cal = load_calibration()
    cv = cal.extra["cross_validation"]
    s = FaceSettings()
    assert cv["target_fmr"] == s.target_fmr and cv["target_false_fail_rate"] == s.target_false_fail_rate
    assert cv["false_fail"]["mean"] <= s.target_false_fail_rate
    assert cv["false_pass"]["mean"] <= s.target_fmr
    th = cal.thresholds(s.target_fmr, s.target_false_fail_rate)
    assert th.pass_below == cal.extra["thresholds_at_targets"]["pass_below"]
    assert th.fail_above == cal.extra["thresholds_at_targets"]["fail_above"]
    assert len(cal.extra["image_sha256_16"]) == cal.extra["n_images"]


def test_provenance_warns_on_overlap_and_says_when_images_are_other(tmp_path: Path) -> None:
    cal = load_calibration()
    person = next(p for p in sorted((FACES / "lfw-dev").iterdir()) if len(list(p.iterdir())) >= 2)
    rels = [f"lfw-dev/{person.name}/{f.name}" for f in sorted(person.iterdir())]
    c = calibration_provenance(cal, FACES, rels)
    assert c["overlap_images"] == len(rels)
    lines = provenance_lines(c)
    assert "cross-validated" not in lines[0] and "fold identity-grouped CV" in lines[0]
    assert lines[-1].startswith("WARNING") and "IN-SAMPLE" in lines[-1]
    # A new image (same person, edited so its bytes differ) was never part of the calibration.
    other = tmp_path / "new" / person.name
    other.mkdir(parents=True)
    data = (FACES / rels[0]).read_bytes() + b"\0"
    (other / "x.jpg").write_bytes(data)
    c2 = calibration_provenance(cal, tmp_path, [f"new/{person.name}/x.jpg"])
    assert c2["overlap_images"] == 0
    assert provenance_lines(c2)[-1].startswith("calibration made on other images")
    assert image_digests(tmp_path, ["missing.jpg"]) == []


def test_all_pairs_counts() -> None:
    emb, names = clustered(4, [3], 0.2, 5)
    p = all_pairs(emb, names)
    assert p.distance.size == 12 * 11 // 2 and int(p.same.sum()) == 4 * 3


def test_eval_face_cross_validate_command_on_a_small_set(tmp_path: Path) -> None:
    """The user's command end to end (real engine) on 3 people x 2 images, cache reused on re-run."""
    people = [p for p in sorted((FACES / "lfw-dev").iterdir()) if len(list(p.iterdir())) == 2][:3]
    root = tmp_path / "faces"
    for p in people:
        shutil.copytree(p, root / p.name)
    cache = tmp_path / "emb.npz"
    out = tmp_path / "cal.json"
    args = ["eval", "face", "--root", str(root), "--cross-validate", "--folds", "3", "--repeats", "1"]
    args += ["--cache", str(cache), "--write-calibration", str(out), "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.output[first.output.index("{") :])
    assert report["dataset"]["n_images"] == 6 and report["dataset"]["n_identities"] == 3
    assert set(report["variants"]) == {"flip_tta", "no_flip"}
    assert report["encoding"]["from_cache"] is False and cache.is_file()
    cal = Calibration.from_json(out.read_text())
    assert cal.n_genuine == 3 and cal.n_impostor == 12 and cal.extra["cross_validation"]["k"] == 3
    again = CliRunner().invoke(main, args)
    assert (
        again.exit_code == 0 and json.loads(again.output[again.output.index("{") :])["encoding"]["from_cache"]
    )
    assert DEFAULT_PATH.is_file()


def test_wilson_upper_bound_is_above_the_rate_and_shrinks_with_n() -> None:
    assert 0.0 < float(wilson_upper(0, 1000)) < 0.005
    assert float(wilson_upper(10, 10_000)) > 0.001
    assert float(wilson_upper(10, 100_000)) < float(wilson_upper(1, 10_000))


def test_ucb_rule_never_picks_a_smaller_pass_margin_than_the_point_estimate() -> None:
    """The PASS side must cover the spread of held-out folds, not only their average."""
    emb, names = clustered(120, [1, 2, 3], 0.45, 7)
    pairs = all_pairs(emb, names)
    members = np.ones(len(names), dtype=bool)
    kw = {"k": 4, "seed": 1, "target_fmr": 1e-3, "target_ffr": 0.01}
    pooled, _ = choose_margins(pairs, names, members, pass_rule="pooled", **kw)
    ucb, _ = choose_margins(pairs, names, members, pass_rule="ucb", **kw)
    assert ucb >= pooled
    cv = cross_validate(emb, names, k=4, repeats=1)
    s = cv.summary()
    assert s["pass_rule"] == "ucb" and len(s["per_fold"]) == 4
    assert s["pooled"]["false_pass_upper95"] >= s["pooled"]["false_pass"]
    assert sum(int(f["false_pass"].split("/")[1]) for f in s["per_fold"]) == s["pooled"]["n_impostor"]


def test_shipped_calibration_meets_the_targets_pooled_with_confidence() -> None:
    """Out of sample, pooled over every held-out fold, the 95% upper bounds meet both targets."""
    cv = load_calibration().extra["cross_validation"]
    assert cv["pass_rule"] == "ucb"
    assert cv["pooled"]["false_pass_upper95"] <= cv["target_fmr"]
    assert cv["pooled"]["false_fail_upper95"] <= cv["target_false_fail_rate"]
