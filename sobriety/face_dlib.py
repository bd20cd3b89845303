"""A `FacePort` on dlib (face_recognition): HOG detector, 68-point landmarks, ResNet embeddings.

Engine module: dlib/face_recognition are imported when `DlibFacePort` is built, so build it only inside a
worker process (or a benchmark), never in the API process. Weights are checked against the models
manifest before use. Optional PAD uses `identity.pad` (MiniFASNet) when its weights are installed.
Until `identity.face` provides a worker-side port, the service can run breath-photo analysis with this.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from identity.checks import CheckResult, ModelStamp
from identity.geometry import FaceBox
from identity.models import verified_path
from sobriety.occlusion import RGB
from sobriety.photos import FaceObservation

ENCODER_MODEL = "dlib_resnet_face_v1"
LANDMARK_MODEL = "dlib_shape_predictor_68"


class DlibFacePort:
    """FacePort with dlib: HOG detection (`upsample` times), 68 landmarks, 128-d embeddings (Euclidean)."""

    def __init__(
        self, models_dir: Path, upsample: int = 1, num_jitters: int = 1, pad: Any | None = None
    ) -> None:
        _, enc_entry = verified_path(ENCODER_MODEL, models_dir)
        verified_path(LANDMARK_MODEL, models_dir)
        import face_recognition.api as fr  # heavy: loads every dlib model

        self._fr = fr
        self._upsample = upsample
        self._jitters = num_jitters
        self._stamp = enc_entry.stamp()
        self._pad = pad  # an identity.pad.engine.PadEngine, or None

    @property
    def model(self) -> ModelStamp | None:
        """Stamp of the embedding model."""
        return self._stamp

    def analyse(self, rgb: RGB) -> list[FaceObservation]:
        """Every face: box and 68 landmarks (pixels)."""
        out = []
        for rect in self._fr.face_detector(rgb, self._upsample):
            shape = self._fr.pose_predictor_68_point(rgb, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            h, w = rgb.shape[:2]
            box = FaceBox(
                max(0, rect.left()), max(0, rect.top()), min(w, rect.right()), min(h, rect.bottom())
            )
            out.append(FaceObservation(box, pts))
        return out

    def embed(self, rgb: RGB, face: FaceObservation) -> npt.NDArray[np.float64]:
        """128-d embedding of one observed face."""
        import dlib

        b = face.box
        rect = dlib.rectangle(b.left, b.top, b.right, b.bottom)
        if face.landmarks is not None:
            shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in face.landmarks])
        else:
            shape = self._fr.pose_predictor_68_point(rgb, rect)
        return np.array(
            self._fr.face_encoder.compute_face_descriptor(rgb, shape, self._jitters), dtype=np.float64
        )

    def distance(self, gallery: Sequence[npt.NDArray[np.float64]], rgb: RGB, face: FaceObservation) -> float:
        """Smallest Euclidean distance from this face's embedding to the gallery embeddings."""
        if not gallery:
            raise ValueError("empty gallery")
        e = self.embed(rgb, face)
        return float(min(np.linalg.norm(g - e) for g in gallery))

    def antispoof(self, rgb: RGB, face: FaceObservation) -> CheckResult | None:
        """MiniFASNet PAD when an engine was given, else None."""
        if self._pad is None:
            return None
        from identity.geometry import FaceBox as PadBox

        b = face.box
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        result: CheckResult = self._pad.score_bgr(bgr, PadBox(b.left, b.top, b.right, b.bottom))
        return result
