"""Passive PAD engine: two MiniFASNet models on context crops around the face, softmax outputs averaged.

Engine module: imports torch, OpenCV and (for standalone detection) dlib. Load it only inside worker
processes or command-line tools, never in the API process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.geometry import FaceBox
from identity.models import ModelEntry, ModelError, verified_path
from identity.pad.config import PadSettings
from identity.pad.net import INPUT_SIZE_PX, MiniFASNet, load_minifasnet
from identity.pad.scoring import context_crop, decide, no_face

# Manifest name -> context scale the model was trained with (part of the model, not a tunable threshold).
PAD_MODELS: tuple[tuple[str, float], ...] = (("minifasnet_v2_2.7", 2.7), ("minifasnet_v1se_4.0", 4.0))
LIVE_CLASS = 1

ImageU8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class _Loaded:
    net: MiniFASNet
    scale: float
    entry: ModelEntry


def combined_stamp(entries: list[ModelEntry]) -> ModelStamp:
    """One stamp for the fused pair: names, versions and sha256s joined with '+' in model order."""
    stamps = [e.stamp() for e in entries]
    return ModelStamp(
        name="+".join(s.name for s in stamps),
        version="+".join(s.version for s in stamps),
        weights_sha256="+".join(s.weights_sha256 for s in stamps),
    )


class PadEngine:
    """Scores frames for presentation attacks. Not thread-safe; one instance per worker process."""

    def __init__(
        self, models_dir: Path, settings: PadSettings, manifest: dict[str, ModelEntry] | None = None
    ) -> None:
        self.settings = settings
        self._models: list[_Loaded] = []
        for name, scale in PAD_MODELS:
            path, entry = verified_path(name, models_dir, manifest)
            self._models.append(_Loaded(load_minifasnet(path), scale, entry))
        self.stamp = combined_stamp([m.entry for m in self._models])
        self._detector: Any = None

    def live_probabilities_bgr(self, frame_bgr: ImageU8, box: FaceBox) -> list[float]:
        """Per-model live probability for a face; frame (H, W, 3) uint8 BGR, box in its pixels."""
        h, w = frame_bgr.shape[:2]
        crops = []
        for m in self._models:
            left, top, right, bottom = context_crop(w, h, box, m.scale)
            region = frame_bgr[top : bottom + 1, left : right + 1]
            crops.append(cv2.resize(region, (INPUT_SIZE_PX, INPUT_SIZE_PX)))
        probs: list[float] = []
        with torch.inference_mode():
            for m, crop in zip(self._models, crops, strict=True):
                # BGR, 0..255, not normalised: the upstream training transform skipped the /255.
                x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32))[None]
                probs.append(float(torch.softmax(m.net(x), dim=1)[0, LIVE_CLASS]))
        return probs

    def score_bgr(self, frame_bgr: ImageU8, box: FaceBox | None) -> CheckResult:
        """PAD result for one frame (H, W, 3) uint8 BGR and the face box the caller found (None: no face)."""
        if box is None:
            return no_face(self.settings, self.stamp)
        if box.width < self.settings.min_face_px:
            return no_face(self.settings, self.stamp, "face_too_small")
        try:
            probs = self.live_probabilities_bgr(frame_bgr, box)
        except (cv2.error, RuntimeError, ValueError) as exc:
            return CheckResult(
                kind=CheckKind.PAD,
                outcome=Outcome.TECHNICAL,
                code="pad_engine_error",
                message="The anti-spoofing check failed to run; please retake.",
                model=self.stamp,
                details={"error": f"{type(exc).__name__}: {exc}"},
            )
        fused = float(np.mean(probs))
        per_model = {m.entry.name: round(p, 4) for m, p in zip(self._models, probs, strict=True)}
        return decide(fused, self.settings, self.stamp, per_model=per_model, box=list(_box_tuple(box)))

    def detect_face_bgr(self, frame_bgr: ImageU8) -> FaceBox | None:
        """Largest face by dlib's HOG detector (standalone use), in full-frame pixels; None if none."""
        if self._detector is None:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
        h, w = frame_bgr.shape[:2]
        factor = min(1.0, self.settings.detect_max_side_px / max(h, w))
        small = frame_bgr if factor == 1.0 else cv2.resize(frame_bgr, None, fx=factor, fy=factor)
        rgb = np.ascontiguousarray(small[:, :, ::-1])
        rects = self._detector(rgb, self.settings.detect_upsample)
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return FaceBox(
            left=max(int(r.left() / factor), 0),
            top=max(int(r.top() / factor), 0),
            right=min(int(r.right() / factor), w),
            bottom=min(int(r.bottom() / factor), h),
        )

    def score_frame_bgr(self, frame_bgr: ImageU8) -> CheckResult:
        """Detect the face (dlib HOG) and score it; frame (H, W, 3) uint8 BGR."""
        return self.score_bgr(frame_bgr, self.detect_face_bgr(frame_bgr))


def _box_tuple(box: FaceBox) -> tuple[int, int, int, int]:
    return box.left, box.top, box.right, box.bottom


def load_engine(models_dir: Path, settings: PadSettings) -> PadEngine | CheckResult:
    """A PadEngine, or a TECHNICAL result explaining why the weights could not be loaded."""
    try:
        return PadEngine(models_dir, settings)
    except ModelError as exc:
        return CheckResult(
            kind=CheckKind.PAD,
            outcome=Outcome.TECHNICAL,
            code="pad_models_unavailable",
            message="The anti-spoofing models are not installed or failed verification.",
            details={"error": str(exc)},
        )
