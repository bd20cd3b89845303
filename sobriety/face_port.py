"""A `FacePort` on `identity.face`'s engine, for breath-photo analysis inside a worker process.

The service's worker pool already holds one `identity.face.engine.FaceEngine` per process (built by
`identity.face.worker.init_worker`, weights sha256-verified); this adapter reuses it instead of loading
dlib a second time. Detection, 68 landmarks, chip alignment and the L2-normalised embedding are the
engine's (single-image settings: full fallbacks, flip TTA), so a breath photo is encoded exactly like an
enrolment photo and is comparable with the person's enrolled `Template`.

Distance unit: Euclidean distance between L2-normalised embeddings (0..2; equals sqrt(2 * cosine
distance)); `sobriety/occlusion_calibration.json` and the `occluded_*_distance` settings are measured in
it through this adapter (`benchmarks/breath_occlusion.py --engine identity`).

Light to import: the engine is passed in, never imported here at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from identity.checks import CheckResult, ModelStamp, Outcome
from identity.face.results import FaceAnalysis
from identity.face.results import FaceObservation as EngineFace
from identity.geometry import FaceBox
from sobriety.occlusion import RGB
from sobriety.photos import FaceObservation

if TYPE_CHECKING:
    from identity.face.engine import FaceEngine, Probe

# PAD result codes that mean "no anti-spoofing model in this process" rather than a judgement.
PAD_UNAVAILABLE_CODES = frozenset({"pad_worker_not_initialised", "pad_models_unavailable"})

PadScorer = Callable[[RGB, tuple[int, int, int, int]], CheckResult]


def _observation(face: EngineFace) -> FaceObservation:
    box = face.box
    landmarks = np.asarray(face.landmarks, dtype=np.float64)
    return FaceObservation(
        FaceBox(int(box.left), int(box.top), int(box.right), int(box.bottom)),
        landmarks if landmarks.shape == (68, 2) else None,
    )


class EngineFacePort:
    """FacePort on a FaceEngine: faces (box + 68 landmarks), unit embeddings, optional PAD scorer.

    `pad` scores one face: (RGB (H, W, 3) uint8, (left, top, right, bottom) px) -> PAD CheckResult, e.g.
    `identity.pad.worker.pad_score_rgb`; results whose code is in `PAD_UNAVAILABLE_CODES` count as "no
    PAD model" (None). Faces narrower than the face settings' `other_face_min_ratio` of the largest one
    are background faces and are not reported, as in the face engine's own quality gate.

    `band` = (accept, reject) Euclidean distances of the caller's decision: with the engine's on-demand
    flip TTA a photo is encoded once, and mirrored only when its distance is near that band (the
    engine's `flip_tta_margin`, in cosine distance). None: every photo is mirrored.
    """

    def __init__(
        self, engine: FaceEngine, pad: PadScorer | None = None, band: tuple[float, float] | None = None
    ) -> None:
        self._engine = engine
        self._pad = pad
        self._band = band
        # The last analysed image and its analysis: `distance` on the same image reuses its embedding.
        self._last: tuple[RGB, Probe] | None = None

    @property
    def model(self) -> ModelStamp | None:
        """Stamp of the embedding model (the engine's dlib ResNet entry)."""
        return self._engine.stamp

    def _probe(self, rgb: RGB) -> Probe:
        if self._last is not None and self._last[0] is rgb:
            return self._last[1]
        probe = self._engine.analyse_probe(rgb, encode_rejected=True)
        if self._band is None:
            self._engine.add_mirror(probe)
        self._last = (rgb, probe)
        return probe

    def _analysis(self, rgb: RGB) -> FaceAnalysis:
        return self._probe(rgb).analysis

    def analyse(self, rgb: RGB) -> list[FaceObservation]:
        """Every (non-background) face in an HxWx3 uint8 RGB image, largest first, with 68 landmarks."""
        faces = self._analysis(rgb).faces
        if not faces:
            return []
        main_w = faces[0].box.width
        keep = [f for f in faces if f.box.width >= self._engine.settings.other_face_min_ratio * main_w]
        return [_observation(f) for f in keep]

    def embed(self, rgb: RGB, face: FaceObservation) -> npt.NDArray[np.float32]:
        """L2-normalised (128,) float32 embedding of `face`, which must be the image's primary (largest) face."""
        analysis = self._analysis(rgb)
        primary = analysis.primary_face
        if (
            primary is not None
            and analysis.embedding is not None
            and (primary.box.left, primary.box.top, primary.box.right, primary.box.bottom)
            == (face.box.left, face.box.top, face.box.right, face.box.bottom)
        ):
            return analysis.embedding
        # Breath-photo checks ask only for a photo's single face, which is always the primary one.
        raise ValueError("only the primary face of the last analysed image has an embedding")

    def distance(self, gallery: Sequence[npt.NDArray[np.float64]], rgb: RGB, face: FaceObservation) -> float:
        """Smallest Euclidean distance (unit embeddings, 0..2) from this face to the gallery embeddings."""
        if len(gallery) == 0:
            raise ValueError("empty gallery")
        g = np.atleast_2d(np.asarray(gallery, dtype=np.float64))
        e = self.embed(rgb, face).astype(np.float64)
        d = float(np.min(np.linalg.norm(g - e[None, :], axis=1)))
        if self._band is not None:
            # Unit vectors: cosine distance = Euclidean^2 / 2, the unit of the engine's margin.
            probe = self._probe(rgb)
            lo, hi = self._band
            if self._engine.needs_mirror(probe, d * d / 2, lo * lo / 2, hi * hi / 2):
                self._engine.add_mirror(probe)
                e = self.embed(rgb, face).astype(np.float64)
                d = float(np.min(np.linalg.norm(g - e[None, :], axis=1)))
        return d

    @property
    def mirrored(self) -> bool:
        """Whether the last analysed photo's embedding is mirror-averaged."""
        return self._last is not None and self._last[1].mirrored

    def antispoof(self, rgb: RGB, face: FaceObservation) -> CheckResult | None:
        """The PAD scorer's result for this face; None when no scorer or no PAD model is available."""
        if self._pad is None:
            return None
        b = face.box
        result = self._pad(rgb, (b.left, b.top, b.right, b.bottom))
        if result.outcome is Outcome.TECHNICAL and result.code in PAD_UNAVAILABLE_CODES:
            return None
        return result
