"""The face engine: dlib detection, 68 landmarks, quality gates, 128-d encoding, enrolment, verification.

Heavy: imports dlib and OpenCV. Build it only inside worker processes (identity.face.worker) or in
command-line tools, never in the API process or on the event loop. Weights are loaded through
identity.models.verified_path, so a file that does not match the manifest's sha256 is never loaded.
This uses dlib directly (the same models and steps face_recognition wraps) so that it never imports
face_recognition, which loads unverified weights at import and flips Pillow's LOAD_TRUNCATED_IMAGES.

Speed: detection runs on a frame downscaled to `detect_max_side_px` (full resolution only as a
fallback); encoding is given the box (no second detection); chips are encoded in batches; in a frame
sequence, near-duplicate frames reuse the previous identity analysis (their landmarks are refitted).
A probe judged against a template (`analyse_probe`) gets its mirror pass only when its distance is
near the decision band (`flip_tta_on_demand`, `flip_tta_pass_margin`, `flip_tta_margin`); enrolment
always mirrors.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face import quality as q
from identity.face.calibration import Calibration, Thresholds, load_calibration
from identity.face.config import FaceSettings, LandmarkModel
from identity.face.matching import decide, distance_to_template, l2_normalise, pairwise_distances
from identity.face.results import (
    EMBEDDING_DIM,
    Embedding,
    FaceAnalysis,
    FaceObservation,
    FaceQuality,
    Template,
)
from identity.geometry import FaceBox
from identity.models import verified_path

RgbImage = npt.NDArray[np.uint8]
CHIP_PX = 150
CHIP_PADDING = 0.25


def as_rgb(image: Any) -> RgbImage | None:
    """Coerce an array to contiguous uint8 RGB (H, W, 3): grey (H, W) is stacked, RGBA drops alpha."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or arr.size == 0:
        return None
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] != 3:
        return None
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        return None
    return np.ascontiguousarray(arr)


def _rect_to_box(rect: Any, scale: float, h: int, w: int) -> FaceBox:
    return FaceBox(
        top=max(int(round(rect.top() / scale)), 0),
        right=min(int(round(rect.right() / scale)), w),
        bottom=min(int(round(rect.bottom() / scale)), h),
        left=max(int(round(rect.left() / scale)), 0),
    )


def thumbnail(rgb: RgbImage) -> npt.NDArray[np.float32]:
    """32x32 grey thumbnail (float32, 0..255) used to spot near-duplicate frames."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small: npt.NDArray[np.uint8] = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32)


@dataclass(slots=True)
class Probe:
    """A single image analysed for a comparison: its analysis, the aligned chip of its primary face (None
    when not encoded) and whether its embedding is already mirror-averaged."""

    analysis: FaceAnalysis
    chip: RgbImage | None
    mirrored: bool


class FaceEngine:
    """dlib face pipeline with verified weights; methods take uint8 RGB (H, W, 3) and return plain values."""

    def __init__(
        self, models_dir: Path, settings: FaceSettings, calibration: Calibration | None = None
    ) -> None:
        self.settings = settings
        rec_path, rec_entry = verified_path("dlib_resnet_face_v1", models_dir)
        sp68_path, sp68_entry = verified_path("dlib_shape_predictor_68", models_dir)
        sp5_path, sp5_entry = verified_path("dlib_shape_predictor_5", models_dir)
        self._encoder = dlib.face_recognition_model_v1(str(rec_path))
        self._sp68 = dlib.shape_predictor(str(sp68_path))
        self._sp5 = dlib.shape_predictor(str(sp5_path))
        self._hog = dlib.get_frontal_face_detector()
        self._cnn: Any = None
        self._models_dir = models_dir
        self.stamp: ModelStamp = rec_entry.stamp()
        self.stamps: list[ModelStamp] = [rec_entry.stamp(), sp68_entry.stamp(), sp5_entry.stamp()]
        if settings.cnn_fallback:
            cnn_path, cnn_entry = verified_path("dlib_mmod_face_detector", models_dir)
            self._cnn = dlib.cnn_face_detection_model_v1(str(cnn_path))
            self.stamps.append(cnn_entry.stamp())
        self.calibration = (
            calibration if calibration is not None else load_calibration(settings.calibration_path)
        )
        self.thresholds: Thresholds = self.calibration.thresholds(
            settings.target_fmr, settings.target_false_fail_rate
        )

    # ------------------------------------------------------------------ detection
    def detect(self, rgb: RgbImage, *, thorough: bool = True) -> list[FaceObservation]:
        """Faces in an RGB (H, W, 3) image, largest first, each with 68 landmarks in full-res pixels.

        Fast pass on a downscaled copy; if it finds nothing, passes at twice the scale each up to full
        resolution (`detect_intermediate_scales`), then a full-resolution pass (upsampled when `thorough`),
        then, when `thorough`, the CNN detector.
        """
        h, w = rgb.shape[:2]
        s = self.settings
        found: list[tuple[Any, float, str]] = []
        scale = min(1.0, s.detect_max_side_px / max(h, w))
        small = rgb
        if scale < 1.0:
            small = cv2.resize(
                rgb, (max(int(w * scale), 1), max(int(h * scale), 1)), interpolation=cv2.INTER_AREA
            )
        found = [(r, scale, "hog_fast") for r in self._hog(small, 0)]
        # A large photo with a smaller face (an officer's 12 MP enrolment photo): twice the scale each
        # pass, up to full resolution, before the upsampled full-resolution pass (seconds at 12 MP).
        mid = scale * 2.0
        while not found and s.detect_intermediate_scales and mid < 1.0:
            resized = cv2.resize(
                rgb, (max(int(w * mid), 1), max(int(h * mid), 1)), interpolation=cv2.INTER_AREA
            )
            found = [(r, mid, "hog_mid") for r in self._hog(resized, 0)]
            mid *= 2.0
        upsample = s.hog_upsample if thorough else 0
        if not found and (scale < 1.0 or upsample > 0):
            # Faces under the HOG window (~80 px) at the fast scale: full resolution, upsampled.
            found = [(r, 1.0, "hog_full") for r in self._hog(rgb, upsample)]
        if not found and thorough and self._cnn is not None:
            cscale = s.cnn_max_side_px / max(h, w)
            resized = cv2.resize(
                rgb,
                (max(int(w * cscale), 1), max(int(h * cscale), 1)),
                interpolation=cv2.INTER_AREA if cscale < 1 else cv2.INTER_LINEAR,
            )
            found = [(d.rect, cscale, "cnn") for d in self._cnn(resized, 0)]
        faces = []
        for rect, sc, name in found:
            box = _rect_to_box(rect, sc, h, w)
            if box.width < 2 or box.height < 2:
                continue
            drect = dlib.rectangle(box.left, box.top, box.right, box.bottom)
            shape = self._sp68(rgb, drect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.int32)
            faces.append(FaceObservation(box=box, landmarks=pts, detector=name))
        faces.sort(key=lambda f: f.box.width * f.box.height, reverse=True)
        return faces

    def chip(self, rgb: RgbImage, face: FaceObservation) -> RgbImage:
        """The aligned 150x150 RGB chip of `face` in `rgb` (the encoder's input)."""
        return self._chip(rgb, face)

    def _chip(self, rgb: RgbImage, face: FaceObservation) -> RgbImage:
        rect = dlib.rectangle(face.box.left, face.box.top, face.box.right, face.box.bottom)
        if self.settings.landmark_model is LandmarkModel.POINTS_68:
            parts = [dlib.point(int(x), int(y)) for x, y in face.landmarks]
            shape = dlib.full_object_detection(rect, parts)
        else:
            shape = self._sp5(rgb, rect)
        chip: RgbImage = dlib.get_face_chip(rgb, shape, size=CHIP_PX, padding=CHIP_PADDING)
        return chip

    # ------------------------------------------------------------------ encoding
    def encode_chips(self, chips: Sequence[RgbImage], num_jitters: int = 0, flip: bool = True) -> Embedding:
        """L2-normalised (n, 128) embeddings of aligned 150x150 chips; mirror-averaged when `flip`."""
        if not chips:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        out: list[npt.NDArray[np.float64]] = []
        bs = self.settings.encode_batch_size
        if num_jitters > 0:
            # dlib's jitter already includes random mirroring.
            for chip in chips:
                out.append(np.asarray(self._encoder.compute_face_descriptor(chip, num_jitters)))
            return l2_normalise(np.stack(out))
        batch: list[RgbImage] = []
        for chip in chips:
            batch.append(chip)
            if flip:
                batch.append(np.ascontiguousarray(chip[:, ::-1]))
        vecs: list[npt.NDArray[np.float64]] = []
        for i in range(0, len(batch), bs):
            vecs.extend(np.asarray(v) for v in self._encoder.compute_face_descriptor(batch[i : i + bs]))
        arr = np.stack(vecs)
        if flip:
            arr = l2_normalise(arr).reshape(len(chips), 2, EMBEDDING_DIM).mean(axis=1)
        return l2_normalise(arr)

    # ------------------------------------------------------------------ analysis
    def analyse_many(
        self,
        images: Sequence[Any],
        *,
        num_jitters: int = 0,
        encode: bool = True,
        encode_rejected: bool = False,
        session: bool = False,
    ) -> list[FaceAnalysis]:
        """Detect, gate and (batch-)encode each image; embeddings only for gate-passing faces by default.

        `session` marks video frames: the cheaper detection and encoding of the session_* settings.
        """
        return self._analyse_many(
            images, num_jitters=num_jitters, encode=encode, encode_rejected=encode_rejected, session=session
        )[0]

    def _analyse_many(
        self,
        images: Sequence[Any],
        *,
        num_jitters: int = 0,
        encode: bool = True,
        encode_rejected: bool = False,
        session: bool = False,
        flip: bool | None = None,
    ) -> tuple[list[FaceAnalysis], dict[int, RgbImage]]:
        """`analyse_many`, plus the aligned chip of every encoded image by its index; `flip` overrides
        the settings' flip TTA."""
        results: list[FaceAnalysis] = []
        chips: list[RgbImage] = []
        chip_owner: list[int] = []
        for image in images:
            t0 = time.perf_counter()
            rgb = as_rgb(image)
            if rgb is None:
                results.append(self._unusable())
                continue
            faces = self.detect(rgb, thorough=not session or self.settings.session_thorough_detection)
            t1 = time.perf_counter()
            measures: FaceQuality | None = None
            chip: RgbImage | None = None
            if faces:
                chip = self._chip(rgb, faces[0])
                measures = q.measure(chip, faces[0])
            verdict = q.gate(faces, measures, self.stamp, self.settings)
            analysis = FaceAnalysis(
                faces=faces,
                primary=0 if faces else None,
                quality=verdict,
                measures=measures,
                embedding=None,
                model=self.stamp,
                image_shape=(int(rgb.shape[0]), int(rgb.shape[1])),
                timing_ms={"detect_ms": (t1 - t0) * 1e3, "align_ms": (time.perf_counter() - t1) * 1e3},
            )
            if encode and chip is not None and (verdict.passed or encode_rejected):
                chips.append(chip)
                chip_owner.append(len(results))
            results.append(analysis)
        if session and len(chips) > self.settings.session_max_encoded_frames:
            keep = sorted(
                {
                    int(round(i))
                    for i in np.linspace(0, len(chips) - 1, self.settings.session_max_encoded_frames)
                }
            )
            chips = [chips[i] for i in keep]
            chip_owner = [chip_owner[i] for i in keep]
        if chips:
            t2 = time.perf_counter()
            if flip is None:
                flip = self.settings.session_flip_tta if session else self.settings.flip_tta
            embs = self.encode_chips(chips, num_jitters, flip=flip)
            per_chip = (time.perf_counter() - t2) * 1e3 / len(chips)
            for owner, emb in zip(chip_owner, embs, strict=True):
                results[owner].embedding = emb
                results[owner].timing_ms["encode_ms"] = per_chip
        return results, dict(zip(chip_owner, chips, strict=True))

    def analyse(self, image: Any, *, num_jitters: int = 0, encode_rejected: bool = False) -> FaceAnalysis:
        """Analyse one RGB (H, W, 3) image: faces, 68 landmarks, quality gate, embedding when it passes."""
        return self.analyse_many([image], num_jitters=num_jitters, encode_rejected=encode_rejected)[0]

    def analyse_probe(self, image: Any, *, encode_rejected: bool = False) -> Probe:
        """Analyse one RGB (H, W, 3) probe that will be judged against a template.

        With on-demand flip TTA (`flip_tta` and `flip_tta_on_demand`) the chip is encoded once; call
        `needs_template_mirror` (the face thresholds) or `needs_mirror` (another band) with the resulting
        distance and `add_mirror` when it says so. Otherwise the embedding is already mirror-averaged
        (as `analyse`).
        """
        s = self.settings
        on_demand = s.flip_tta and s.flip_tta_on_demand
        results, chips = self._analyse_many(
            [image], encode_rejected=encode_rejected, flip=False if on_demand else None
        )
        analysis = results[0]
        return Probe(analysis, chips.get(0), mirrored=not on_demand and s.flip_tta)

    def needs_mirror(
        self,
        probe: Probe,
        distance: float,
        pass_below: float,
        fail_above: float,
        *,
        pass_margin: float | None = None,
    ) -> bool:
        """Whether a one-pass cosine `distance` is close enough to [pass_below, fail_above] (within
        `pass_margin` below it, `flip_tta_margin` above it; `pass_margin` None: `flip_tta_margin` on both
        sides) that the mirror-averaged embedding must decide."""
        m = self.settings.flip_tta_margin
        below = m if pass_margin is None else pass_margin
        return (
            self.settings.flip_tta
            and not probe.mirrored
            and probe.chip is not None
            and probe.analysis.embedding is not None
            and pass_below - below <= distance <= fail_above + m
        )

    def needs_template_mirror(self, probe: Probe, distance: float) -> bool:
        """`needs_mirror` at this engine's calibrated face thresholds, where the PASS side's margin is the
        measured `flip_tta_pass_margin` (a verification probe's one-pass cosine `distance` to a template)."""
        t = self.thresholds
        return self.needs_mirror(
            probe, distance, t.pass_below, t.fail_above, pass_margin=self.settings.flip_tta_pass_margin
        )

    def add_mirror(self, probe: Probe) -> None:
        """Replace the probe's one-pass embedding by the mirror-averaged one (what `analyse` gives)."""
        if probe.mirrored or probe.chip is None or probe.analysis.embedding is None:
            return
        t0 = time.perf_counter()
        mirror = self.encode_chips([np.ascontiguousarray(probe.chip[:, ::-1])], flip=False)[0]
        probe.analysis.embedding = l2_normalise((probe.analysis.embedding + mirror) / 2.0)
        probe.analysis.timing_ms["mirror_ms"] = (time.perf_counter() - t0) * 1e3
        probe.mirrored = True

    def analyse_frames(
        self, frames: Sequence[Any], *, encode: bool = True
    ) -> tuple[list[FaceAnalysis], list[int | None]]:
        """Analyse a frame sequence; identity work (detection, quality gate, embedding) only where needed.

        Returns one analysis per frame and, per frame, the index of the frame whose identity analysis it
        reuses (None when it was analysed itself). A frame is analysed afresh unless it is a
        near-duplicate of the last analysed frame, or fewer than `session_detect_every_n` frames have
        passed since it. Every frame still gets its own 68 landmarks: a reusing frame's are fitted on its
        own pixels in the reused face box (about a millisecond), because
        liveness reads eye and mouth movement that a near-duplicate thumbnail hides. `encode=False`
        skips the embedding (live analysis: `embed_analyses` encodes the chosen best frames later).
        """
        s = self.settings
        unique: list[Any] = []
        unique_of: list[int] = []
        dup_of: list[int | None] = []
        rgbs: list[RgbImage | None] = []
        last_thumb: npt.NDArray[np.float32] | None = None
        last_index = -1
        for i, frame in enumerate(frames):
            rgb = as_rgb(frame)
            rgbs.append(rgb)
            thumb = thumbnail(rgb) if rgb is not None else None
            near = (
                thumb is not None
                and last_thumb is not None
                and s.duplicate_frame_mad > 0
                and float(np.abs(thumb - last_thumb).mean()) < s.duplicate_frame_mad
            )
            recent = last_index >= 0 and i - last_index < s.session_detect_every_n
            if thumb is not None and last_thumb is not None and (near or recent):
                dup_of.append(last_index)
                unique_of.append(len(unique) - 1)
                continue
            unique.append(frame)
            unique_of.append(len(unique) - 1)
            dup_of.append(None)
            last_thumb = thumb
            last_index = i
        analysed = self.analyse_many(unique, session=True, encode=encode)
        out: list[FaceAnalysis] = []
        for i, (u, dup) in enumerate(zip(unique_of, dup_of, strict=True)):
            source = analysed[u]
            rgb = rgbs[i]
            if dup is None or rgb is None or source.primary_face is None:
                out.append(source)
                continue
            faces = [
                FaceObservation(box=f.box, landmarks=self._landmarks(rgb, f.box), detector=f.detector)
                for f in source.faces
            ]
            out.append(replace(source, faces=faces, reused_from=dup))
        return out, dup_of

    def embed_analyses(self, frames: Sequence[Any], analyses: Sequence[FaceAnalysis]) -> list[FaceAnalysis]:
        """Embeddings for frames already analysed (live analysis chose them): frames[i] is the RGB image
        analyses[i] was made from. Each primary face is chipped from its own landmarks and encoded (one
        batch); a frame without a face comes back unchanged. No detection runs again."""
        out = list(analyses)
        chips: list[RgbImage] = []
        owners: list[int] = []
        for i, (frame, analysis) in enumerate(zip(frames, analyses, strict=True)):
            rgb = as_rgb(frame)
            face = analysis.primary_face
            if rgb is None or face is None:
                continue
            chips.append(self._chip(rgb, face))
            owners.append(i)
        if chips:
            t0 = time.perf_counter()
            embs = self.encode_chips(chips, flip=self.settings.session_flip_tta)
            per_chip = (time.perf_counter() - t0) * 1e3 / len(chips)
            for owner, emb in zip(owners, embs, strict=True):
                a = out[owner]
                out[owner] = replace(
                    a, embedding=emb, reused_from=None, timing_ms={**a.timing_ms, "encode_ms": per_chip}
                )
        return out

    def _landmarks(self, rgb: RgbImage, box: FaceBox) -> npt.NDArray[np.int32]:
        shape = self._sp68(rgb, dlib.rectangle(box.left, box.top, box.right, box.bottom))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.int32)

    def _unusable(self) -> FaceAnalysis:
        return FaceAnalysis(
            faces=[],
            primary=None,
            quality=CheckResult(
                kind=CheckKind.MEDIA,
                outcome=Outcome.TECHNICAL,
                code="image_unusable",
                message="The picture could not be read. Please take it again.",
                model=self.stamp,
            ),
            measures=None,
            embedding=None,
            model=self.stamp,
            image_shape=(0, 0),
        )

    # ------------------------------------------------------------------ enrolment
    def enrol(
        self, images: Sequence[Any], previous: Template | None = None
    ) -> tuple[Template | None, list[CheckResult]]:
        """Build a template from several RGB images (or video frames).

        Returns (template or None, results): results[i] is the quality verdict of images[i]; the last
        element is the enrolment summary (PASS "enrolled", or INCONCLUSIVE/TECHNICAL with the reason).
        With `previous` (re-enrolment) the new images must not FAIL against the old template.
        """
        s = self.settings
        analyses = self.analyse_many(images, num_jitters=s.enrol_num_jitters)
        results = [a.quality for a in analyses]
        good = [i for i, a in enumerate(analyses) if a.embedding is not None and a.measures is not None]
        if len(good) >= 3:
            # Drop images that do not look like the rest (another person, a bad alignment).
            embs = np.stack([analyses[i].embedding for i in good])  # type: ignore[misc]
            d = pairwise_distances(embs)
            med = np.array([np.median(np.delete(d[j], j)) for j in range(len(good))])
            for j, i in enumerate(list(good)):
                if med[j] > self.thresholds.fail_above:
                    results[i] = CheckResult(
                        kind=CheckKind.FACE_QUALITY,
                        outcome=Outcome.INCONCLUSIVE,
                        code="inconsistent_image",
                        message="This photo does not look like the others. Please take it again.",
                        score=float(med[j]),
                        threshold=self.thresholds.fail_above,
                        model=self.stamp,
                    )
            good = [i for j, i in enumerate(good) if med[j] <= self.thresholds.fail_above]
        elif len(good) == 2:
            d2 = float(pairwise_distances(np.stack([analyses[i].embedding for i in good]))[0, 1])  # type: ignore[misc]
            if d2 > self.thresholds.fail_above:
                good = []
                summary = self._summary(
                    Outcome.INCONCLUSIVE,
                    "inconsistent_images",
                    "The photos do not show the same person clearly. Please take them again.",
                    {"pair_distance": d2},
                )
                return None, [*results, summary]
        if len(good) < s.enrol_min_images:
            codes = Counter(results[i].code for i in range(len(results)) if i not in good)
            reason = codes.most_common(1)[0][0] if codes else "no_face"
            message = q.MESSAGES.get(reason, "Please take the photos again.")
            outcome = (
                Outcome.TECHNICAL
                if all(r.outcome is Outcome.TECHNICAL for i, r in enumerate(results) if i not in good)
                and codes
                else Outcome.INCONCLUSIVE
            )
            summary = self._summary(
                outcome,
                "too_few_good_images",
                f"Enrolment needs {s.enrol_min_images} good photos; got {len(good)}. {message}",
                {"good": len(good), "needed": s.enrol_min_images, "main_reason": reason},
            )
            return None, [*results, summary]
        best = sorted(good, key=lambda i: analyses[i].measures.score(), reverse=True)  # type: ignore[union-attr]
        best = best[: s.enrol_max_images]
        embs = np.stack([analyses[i].embedding for i in best])  # type: ignore[misc]
        metadata: dict[str, Any] = {
            "n_images": len(images),
            "n_used": len(best),
            "used_indices": best,
            "quality": [analyses[i].measures.to_dict() for i in best],  # type: ignore[union-attr]
            "num_jitters": s.enrol_num_jitters,
            "landmark_model": s.landmark_model.value,
            "models": [m.to_dict() for m in self.stamps],
        }
        if previous is not None:
            if previous.model != self.stamp:
                metadata["previous_model_differs"] = True
            else:
                d_prev = float(np.mean([distance_to_template(previous.embeddings, e) for e in embs]))
                metadata["distance_to_previous"] = d_prev
                if d_prev > self.thresholds.fail_above:
                    summary = self._summary(
                        Outcome.INCONCLUSIVE,
                        "reenrol_mismatch",
                        "The new photos do not match the current enrolment; an officer must confirm.",
                        {"distance_to_previous": d_prev, "fail_above": self.thresholds.fail_above},
                    )
                    return None, [*results, summary]
            metadata["replaces_created_at"] = previous.created_at
        template = Template(embeddings=embs, model=self.stamp, created_at=Template.now(), metadata=metadata)
        summary = self._summary(
            Outcome.PASS, "enrolled", f"Enrolled from {len(best)} photos.", {"used": best}
        )
        return template, [*results, summary]

    def _summary(self, outcome: Outcome, code: str, message: str, details: dict[str, Any]) -> CheckResult:
        return CheckResult(
            kind=CheckKind.FACE_QUALITY,
            outcome=outcome,
            code=code,
            message=message,
            model=self.stamp,
            details=details,
        )

    # ------------------------------------------------------------------ verification
    def _template_problem(self, template: Template) -> CheckResult | None:
        if template.model != self.stamp:
            return CheckResult(
                kind=CheckKind.FACE,
                outcome=Outcome.TECHNICAL,
                code="template_model_mismatch",
                message="The enrolment was made with another face model; the person must be re-enrolled.",
                model=self.stamp,
                details={"template_model": template.model.to_dict()},
            )
        return None

    def verify_image(self, template: Template, image: Any) -> CheckResult:
        """Compare one RGB (H, W, 3) image with a template: PASS / FAIL / INCONCLUSIVE / TECHNICAL."""
        problem = self._template_problem(template)
        if problem is not None:
            return problem
        probe = self.analyse_probe(image)
        analysis = probe.analysis
        if analysis.embedding is None:
            return _as_face_result(analysis.quality, analysis.summary())
        d = distance_to_template(template.embeddings, analysis.embedding)
        if self.needs_template_mirror(probe, d):
            self.add_mirror(probe)
            d = distance_to_template(template.embeddings, analysis.embedding)
        return decide(
            d,
            self.thresholds,
            self.stamp,
            {"frame": analysis.summary(), "mirror_pass": probe.mirrored, "models": self._stamp_dicts()},
        )

    def verify_frames(self, template: Template, frames: Sequence[Any]) -> CheckResult:
        """Session decision from many RGB frames: fuse the embeddings of the best-quality frames.

        The top `session_top_k` gate-passing frames (by sharpness, size, frontality) are averaged into one
        embedding, which averages out per-frame noise. details["frames"] lists every frame's box,
        quality code and distance for the reviewer.
        """
        problem = self._template_problem(template)
        if problem is not None:
            return problem
        analyses, dup_of = self.analyse_frames(frames)
        return self.verify_analyses(template, analyses, dup_of)

    def verify_analyses(
        self, template: Template, analyses: Sequence[FaceAnalysis], dup_of: Sequence[int | None] | None = None
    ) -> CheckResult:
        """Session decision from frame analyses already made (e.g. by `analyse_frames` in a worker).

        `dup_of[i]` names the frame whose analysis frame i reuses; when None it is inferred from object
        identity (pickling keeps shared objects shared), so a reused analysis is not counted twice.
        """
        s = self.settings
        problem = self._template_problem(template)
        if problem is not None:
            return problem
        if dup_of is None:
            first: dict[int, int] = {}
            dup_of = [
                a.reused_from
                if a.reused_from is not None
                else (None if first.setdefault(id(a), i) == i else first[id(a)])
                for i, a in enumerate(analyses)
            ]
        frames = analyses
        per_frame: list[dict[str, Any]] = []
        good: list[int] = []
        for i, (a, dup) in enumerate(zip(analyses, dup_of, strict=True)):
            row: dict[str, Any] = {"index": i, "duplicate_of": dup, **a.summary()}
            if a.embedding is not None:
                row["distance"] = round(distance_to_template(template.embeddings, a.embedding), 6)
                if dup is None:
                    good.append(i)
            per_frame.append(row)
        details: dict[str, Any] = {
            "frames": per_frame,
            "n_frames": len(frames),
            "n_analysed": sum(1 for d in dup_of if d is None),
            "n_good": len(good),
            "models": self._stamp_dicts(),
        }
        # A frame that reuses another's analysis (the person held still) still shows a usable face: it
        # counts towards the minimum, while the fused embedding is built from distinct analyses only.
        usable = sum(1 for a in analyses if a.embedding is not None)
        details["n_usable"] = usable
        if not good or usable < s.session_min_frames:
            codes = Counter(
                a.quality.code
                for a, d in zip(analyses, dup_of, strict=True)
                if d is None and not a.quality.passed
            )
            reason = codes.most_common(1)[0][0] if codes else ("too_short" if good else "no_face")
            outcome = Outcome.TECHNICAL if reason == "image_unusable" else Outcome.INCONCLUSIVE
            return CheckResult(
                kind=CheckKind.FACE,
                outcome=outcome,
                code="too_few_good_frames",
                message=q.MESSAGES.get(
                    reason, "Too few usable frames: keep your face in view for the whole check and try again."
                ),
                threshold=self.thresholds.pass_below,
                model=self.stamp,
                details={**details, "main_reason": reason, "needed": s.session_min_frames},
            )
        ranked = sorted(good, key=lambda i: analyses[i].measures.score(), reverse=True)[: s.session_top_k]  # type: ignore[union-attr]
        fused = l2_normalise(np.mean(np.stack([analyses[i].embedding for i in ranked]), axis=0))  # type: ignore[misc]
        d = distance_to_template(template.embeddings, fused)
        frame_d = np.array([per_frame[i]["distance"] for i in good])
        mismatch_fraction = float(np.mean(frame_d > self.thresholds.fail_above))
        details.update(
            {
                "fused_from": ranked,
                "frame_distance_median": float(np.median(frame_d)),
                "frame_mismatch_fraction": mismatch_fraction,
            }
        )
        result = decide(d, self.thresholds, self.stamp, details)
        if result.outcome is Outcome.PASS and mismatch_fraction > s.session_max_mismatch_fraction:
            return CheckResult(
                kind=CheckKind.FACE,
                outcome=Outcome.INCONCLUSIVE,
                code="frames_disagree",
                message="Some frames do not match the enrolled person; a reviewer will check the video.",
                score=result.score,
                threshold=result.threshold,
                model=self.stamp,
                details=result.details,
            )
        return result

    def _stamp_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.stamps]


def _as_face_result(quality: CheckResult, summary: dict[str, Any]) -> CheckResult:
    """A quality/technical verdict re-labelled as the FACE check's (non-FAIL) outcome."""
    return CheckResult(
        kind=CheckKind.FACE,
        outcome=Outcome.TECHNICAL if quality.outcome is Outcome.TECHNICAL else Outcome.INCONCLUSIVE,
        code=quality.code,
        message=quality.message,
        model=quality.model,
        details={"frame": summary, **quality.details},
    )
