"""PAD decisions, crop geometry, labels and error-rate arithmetic (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from identity.checks import CheckKind, CheckResult, Outcome
from identity.geometry import FaceBox
from identity.pad.attacks import print_attack, screen_replay, still_photo_frames
from identity.pad.config import PadSettings
from identity.pad.evaluate import ItemScore, Label, compute_report, labels_from_names, load_labels
from identity.pad.scoring import context_crop, decide, decide_frames

PAD_DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "pad"
S = PadSettings()


def test_decision_bands() -> None:
    thr, m = S.live_threshold, S.inconclusive_margin
    live = decide(thr + m, S, None)
    attack = decide(thr - m - 0.01, S, None)
    border = decide(thr, S, None)
    assert (live.outcome, live.code) == (Outcome.PASS, "live")
    assert (attack.outcome, attack.code) == (Outcome.FAIL, "presentation_attack")
    assert attack.score == pytest.approx(thr - m - 0.01) and attack.threshold == thr
    assert attack.kind is CheckKind.PAD
    assert (border.outcome, border.code) == (Outcome.INCONCLUSIVE, "pad_borderline")
    no_margin = PadSettings(live_threshold=0.5, inconclusive_margin=0.0)
    assert decide(0.5, no_margin, None).outcome is Outcome.PASS
    assert decide(0.4999, no_margin, None).outcome is Outcome.FAIL


def test_settings_reject_a_margin_outside_0_1() -> None:
    with pytest.raises(ValidationError):
        PadSettings(live_threshold=0.9, inconclusive_margin=0.2)


def test_context_crop_centres_and_clamps() -> None:
    box = FaceBox(left=300, top=200, right=400, bottom=300)
    assert context_crop(1000, 1000, box, 2.7) == (215, 115, 485, 385)
    # Near the edge the region is shifted back inside the frame, keeping its size.
    left, top, right, bottom = context_crop(1000, 1000, FaceBox(0, 0, 100, 100), 2.7)
    assert (left, top) == (0, 0) and right - left == 270 and bottom - top == 270
    # Larger than the frame allows: the scale shrinks to fit.
    left, top, right, bottom = context_crop(300, 300, FaceBox(100, 100, 200, 200), 4.0)
    assert left >= 0 and top >= 0 and right <= 299 and bottom <= 299
    assert FaceBox.from_css((10, 50, 60, 5)) == FaceBox(left=5, top=10, right=50, bottom=60)


def test_frames_combine_by_median_and_no_face_is_inconclusive() -> None:
    frames = [decide(s, S, None) for s in (0.99, 0.97, 0.1)]
    combined = decide_frames(frames, S)
    assert combined.outcome is Outcome.PASS and combined.score == pytest.approx(0.97)
    assert combined.details["frames_scored"] == 3
    none = decide_frames([CheckResult(CheckKind.PAD, Outcome.INCONCLUSIVE, "no_face", "x")], S)
    assert (none.outcome, none.code) == (Outcome.INCONCLUSIVE, "no_face")


def test_labels_from_the_shared_pad_set() -> None:
    items = labels_from_names(PAD_DATA)
    names = {i.path.name: i for i in items}
    assert names["image_T1.jpg"].label is Label.LIVE and names["true_003.png"].label is Label.LIVE
    assert (
        names["image_F2.jpg"].label is Label.ATTACK and names["fake_001.jpg"].attack_type == "print_or_screen"
    )
    assert sum(i.label is Label.LIVE for i in items) == 4 and sum(i.label is Label.ATTACK for i in items) == 5


def test_labels_csv_wins_over_names(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text(
        "path,label,attack_type\na.jpg,live,\nb.mp4,attack,replay\nc.png,attack,\n"
    )
    items = load_labels(tmp_path)
    assert [(i.path.name, i.label, i.attack_type) for i in items] == [
        ("a.jpg", Label.LIVE, ""),
        ("b.mp4", Label.ATTACK, "replay"),
        ("c.png", Label.ATTACK, "print_or_screen"),
    ]


def test_apcer_per_type_and_bpcer() -> None:
    def item(label: Label, kind: str, score: float | None) -> ItemScore:
        result = decide(score, S, None) if score is not None else None
        outcome = result.outcome if result else Outcome.INCONCLUSIVE
        return ItemScore("x", label, kind, outcome, result.code if result else "no_face", score)

    report = compute_report(
        [
            item(Label.LIVE, "", 0.99),
            item(Label.LIVE, "", 0.01),
            item(Label.LIVE, "", 0.6),
            item(Label.LIVE, "", None),
            item(Label.ATTACK, "print", 0.95),
            item(Label.ATTACK, "print", 0.0),
            item(Label.ATTACK, "screen", 0.02),
        ],
        S,
    )
    assert report.no_face == 1 and report.live_total == 3
    assert report.bpcer == pytest.approx(1 / 3) and report.live_inconclusive == 1
    assert report.apcer == {"print": 0.5, "screen": 0.0}
    assert report.bpcer_binary == pytest.approx(1 / 3)
    assert report.to_dict()["items"][0]["label"] == "live"


def test_generated_attacks_change_the_image_but_keep_its_shape() -> None:
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[::2, ::2])
    rng = np.random.default_rng(0)
    for attack in (screen_replay(img, rng), print_attack(img, rng)):
        assert attack.shape == img.shape and attack.dtype == np.uint8
        assert np.abs(attack.astype(int) - img.astype(int)).mean() > 10
    stills = still_photo_frames(img, 3)
    assert len(stills) == 3 and all(np.array_equal(s, img) for s in stills)
    # Print reduces dynamic range.
    printed = print_attack(img, np.random.default_rng(1))
    assert np.percentile(printed, 99) - np.percentile(printed, 1) < np.percentile(img, 99) - np.percentile(
        img, 1
    )


def test_light_modules_do_not_import_heavy_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import identity.liveness.challenge, identity.liveness.landmarks, identity.pad.scoring, "
        "identity.pad.evaluate, identity.pad.worker; "
        "print(sorted(m for m in ('torch', 'dlib', 'face_recognition', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
