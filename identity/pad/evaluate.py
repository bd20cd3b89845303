"""PAD evaluation on labelled live/attack images and videos: APCER per attack type, BPCER (ISO/IEC 30107-3).

Labels come from `labels.csv` in the root (columns path,label,attack_type; label live|attack), or else
from file names: `true_*` and `image_T*` are live; `fake_*` and `image_F*` are attacks of type
"print_or_screen". Videos are sampled every `video_sample_every_s` seconds and judged on the median
live score of the frames where a face was found.
"""

from __future__ import annotations

import csv
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckResult, Outcome
from identity.pad.config import PadSettings

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".y4m"})
DEFAULT_ATTACK_TYPE = "print_or_screen"
_LIVE_NAME = re.compile(r"^(true_|image_t\d)", re.IGNORECASE)
_ATTACK_NAME = re.compile(r"^(fake_|image_f\d)", re.IGNORECASE)


class Label(StrEnum):
    """Ground truth of one presentation."""

    LIVE = "live"
    ATTACK = "attack"


@dataclass(frozen=True, slots=True)
class LabelledItem:
    """One labelled file."""

    path: Path
    label: Label
    attack_type: str = ""


@dataclass(slots=True)
class ItemScore:
    """What the engine made of one file."""

    path: str
    label: Label
    attack_type: str
    outcome: Outcome
    code: str
    score: float | None
    frames: int = 1


@dataclass(slots=True)
class PadReport:
    """Error rates at the configured threshold.

    Decision rates use the three-way outcome: APCER = attacks that PASS, BPCER = live presentations that
    FAIL; INCONCLUSIVE (review) counts are given separately. Binary rates ignore the review margin and
    compare the score with `live_threshold` alone; files with no face are left out of both.
    """

    threshold: float
    margin: float
    items: list[ItemScore] = field(default_factory=list)
    apcer: dict[str, float] = field(default_factory=dict)
    apcer_binary: dict[str, float] = field(default_factory=dict)
    attacks_inconclusive: dict[str, int] = field(default_factory=dict)
    attacks_total: dict[str, int] = field(default_factory=dict)
    bpcer: float = float("nan")
    bpcer_binary: float = float("nan")
    live_inconclusive: int = 0
    live_total: int = 0
    no_face: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        data = asdict(self)
        data["items"] = [
            {**asdict(i), "label": i.label.value, "outcome": i.outcome.value} for i in self.items
        ]
        return data


def labels_from_names(root: Path) -> list[LabelledItem]:
    """Label media files under root by their names; files matching neither pattern are skipped."""
    items: list[LabelledItem] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES):
        if _LIVE_NAME.match(path.name):
            items.append(LabelledItem(path, Label.LIVE))
        elif _ATTACK_NAME.match(path.name):
            items.append(LabelledItem(path, Label.ATTACK, DEFAULT_ATTACK_TYPE))
    return items


def labels_from_csv(root: Path, csv_path: Path) -> list[LabelledItem]:
    """Read `path,label,attack_type` rows (paths relative to root; header row required)."""
    items: list[LabelledItem] = []
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            label = Label(row["label"].strip().lower())
            attack_type = (row.get("attack_type") or "").strip()
            if label is Label.ATTACK and not attack_type:
                attack_type = DEFAULT_ATTACK_TYPE
            items.append(
                LabelledItem(root / row["path"].strip(), label, attack_type if label is Label.ATTACK else "")
            )
    return items


def load_labels(root: Path) -> list[LabelledItem]:
    """Labels from root/labels.csv when present, otherwise from file names."""
    csv_path = root / "labels.csv"
    return labels_from_csv(root, csv_path) if csv_path.is_file() else labels_from_names(root)


def read_frames_bgr(path: Path, settings: PadSettings) -> list[npt.NDArray[np.uint8]]:
    """Frames (H, W, 3) uint8 BGR of an image (one) or a video (sampled); empty if unreadable."""
    import cv2

    if path.suffix.lower() in IMAGE_SUFFIXES:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return [] if img is None else [img]
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        step = max(int(round(fps * settings.video_sample_every_s)), 1)
        frames: list[npt.NDArray[np.uint8]] = []
        index = 0
        while len(frames) < settings.video_max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(frame)
            index += 1
        return frames
    finally:
        cap.release()


def score_item(
    frames_bgr: Sequence[npt.NDArray[np.uint8]],
    score_frame_bgr: Callable[[npt.NDArray[np.uint8]], CheckResult],
    combine: Callable[[Sequence[CheckResult]], CheckResult],
) -> tuple[CheckResult, int]:
    """One result for a file's frames: single frames directly, videos through `combine`."""
    results = [score_frame_bgr(f) for f in frames_bgr]
    if len(results) == 1:
        return results[0], 1
    return combine(results), len(results)


def compute_report(scores: Iterable[ItemScore], settings: PadSettings) -> PadReport:
    """APCER per attack type and BPCER from scored items (see PadReport for the definitions)."""
    report = PadReport(threshold=settings.live_threshold, margin=settings.inconclusive_margin)
    report.items = list(scores)
    judged = [i for i in report.items if i.score is not None]
    report.no_face = len(report.items) - len(judged)
    live = [i for i in judged if i.label is Label.LIVE]
    report.live_total = len(live)
    report.live_inconclusive = sum(i.outcome is Outcome.INCONCLUSIVE for i in live)
    if live:
        report.bpcer = sum(i.outcome is Outcome.FAIL for i in live) / len(live)
        report.bpcer_binary = sum((i.score or 0.0) < settings.live_threshold for i in live) / len(live)
    for kind in sorted({i.attack_type for i in judged if i.label is Label.ATTACK}):
        attacks = [i for i in judged if i.label is Label.ATTACK and i.attack_type == kind]
        report.attacks_total[kind] = len(attacks)
        report.attacks_inconclusive[kind] = sum(i.outcome is Outcome.INCONCLUSIVE for i in attacks)
        report.apcer[kind] = sum(i.outcome is Outcome.PASS for i in attacks) / len(attacks)
        report.apcer_binary[kind] = sum((i.score or 0.0) >= settings.live_threshold for i in attacks) / len(
            attacks
        )
    return report


def evaluate_dir(root: Path, models_dir: Path, settings: PadSettings) -> PadReport:
    """Run the PAD engine (dlib HOG face detection) over a labelled directory and report error rates."""
    from identity.pad.engine import PadEngine
    from identity.pad.scoring import decide_frames

    engine = PadEngine(models_dir, settings)
    scores: list[ItemScore] = []
    for item in load_labels(root):
        frames = read_frames_bgr(item.path, settings)
        if not frames:
            continue
        result, n = score_item(frames, engine.score_frame_bgr, lambda rs: decide_frames(rs, settings))
        scores.append(
            ItemScore(
                path=str(item.path.relative_to(root)) if item.path.is_relative_to(root) else str(item.path),
                label=item.label,
                attack_type=item.attack_type,
                outcome=result.outcome,
                code=result.code,
                score=result.score,
                frames=n,
            )
        )
    return compute_report(scores, settings)


def format_report(report: PadReport) -> str:
    """Human-readable table of the report."""
    lines = [f"{'file':40} {'label':6} {'type':18} {'score':>7}  outcome"]
    for i in report.items:
        score = "-" if i.score is None else f"{i.score:.3f}"
        lines.append(
            f"{i.path:40} {i.label.value:6} {i.attack_type:18} {score:>7}  {i.outcome.value} ({i.code})"
        )
    lines.append(
        f"threshold {report.threshold:.3f}, review margin +-{report.margin:.3f}, no face: {report.no_face}"
    )
    for kind, total in report.attacks_total.items():
        lines.append(
            f"APCER[{kind}] = {report.apcer[kind]:.1%} (binary {report.apcer_binary[kind]:.1%}), "
            f"{report.attacks_inconclusive[kind]}/{total} to review"
        )
    median_live = statistics.median(
        [i.score for i in report.items if i.label is Label.LIVE and i.score is not None] or [float("nan")]
    )
    lines.append(
        f"BPCER = {report.bpcer:.1%} (binary {report.bpcer_binary:.1%}), "
        f"{report.live_inconclusive}/{report.live_total} live to review, median live score {median_live:.3f}"
    )
    return "\n".join(lines)
