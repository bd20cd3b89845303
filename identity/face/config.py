"""Face settings: every threshold bounded and documented."""

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LandmarkModel(StrEnum):
    """Which dlib shape predictor aligns the face chip before encoding. Stored values are stable."""

    POINTS_68 = "68"
    POINTS_5 = "5"


class FaceSettings(BaseModel):
    """Face pipeline settings (env: KUZET_FACE__*).

    Distances are cosine distances between L2-normalised 128-d dlib embeddings (0 = identical, 2 =
    opposite). Pixel sizes are in pixels of the original (not downscaled) image.
    """

    model_config = ConfigDict(extra="forbid")

    # --- decoding (light, API-process safe) ---
    max_image_pixels: int = Field(
        40_000_000,
        ge=10_000,
        le=200_000_000,
        description="Largest width*height accepted when decoding; larger images (decompression bombs) are "
        "refused before their pixels are read.",
    )
    max_image_bytes: int = Field(
        30 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024, description="Largest encoded image accepted (bytes)."
    )

    # --- detection ---
    detect_max_side_px: int = Field(
        320,
        ge=120,
        le=4096,
        description="Fast pass: the frame is downscaled so its longest side is at most this before HOG "
        "detection; boxes are scaled back. Faces under ~80 px at this scale are found by the fallback pass.",
    )
    detect_intermediate_scales: bool = Field(
        True,
        description="When the fast pass finds nothing on a large image, try twice its scale, then twice "
        "again, before the full-resolution pass: a face of 1/8-1/4 of a 12 MP photo's long side is found "
        "in tens of milliseconds instead of seconds of upsampled full-resolution HOG.",
    )
    hog_upsample: int = Field(
        1,
        ge=0,
        le=2,
        description="Fallback pass: HOG upsampling of the full-resolution frame when the fast pass finds "
        "nothing (1 finds faces down to ~40 px).",
    )
    cnn_fallback: bool = Field(
        True, description="Run dlib's CNN (MMOD) detector when both HOG passes find no face."
    )
    cnn_max_side_px: int = Field(
        400,
        ge=100,
        le=2000,
        description="The CNN fallback runs on a copy downscaled to this longest side (bounds its CPU cost).",
    )
    landmark_model: LandmarkModel = Field(
        LandmarkModel.POINTS_68,
        description="Shape predictor used to align the chip for encoding (68 points are always computed "
        "for liveness; '5' aligns with the small model like plain face_recognition).",
    )

    # --- quality gates ---
    min_face_px: int = Field(
        80, ge=20, le=1000, description="Smallest accepted face box side; smaller -> 'move closer'."
    )
    other_face_min_ratio: float = Field(
        0.35,
        ge=0.05,
        le=1.0,
        description="A second face at least this fraction of the main face's width makes the frame "
        "'several faces'; smaller background faces are reported but tolerated.",
    )
    min_sharpness: float = Field(
        10.0,
        ge=0.0,
        le=5000.0,
        description="Minimum variance of the Laplacian of the inner 100x100 of the 150x150 grey aligned "
        "face chip (grey levels^2); below -> 'hold still / clean the lens'. Measured: astronaut 199, "
        "Gaussian blur sigma 1 -> 23, 1.5 -> 9; LFW dev images 5th percentile 20, median 42.",
    )
    min_brightness: float = Field(
        45.0,
        ge=0.0,
        le=254.0,
        description="Minimum mean grey level (0-255) of the face; below -> 'too dark'.",
    )
    max_brightness: float = Field(
        220.0,
        ge=1.0,
        le=255.0,
        description="Maximum mean grey level (0-255) of the face; above -> 'too bright'.",
    )
    max_saturated_fraction: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Largest fraction of face pixels clipped at >= 250 grey; above -> 'too bright'.",
    )
    max_yaw: float = Field(
        0.5,
        ge=0.05,
        le=1.0,
        description="Largest |yaw proxy|: (nose-to-left-jaw minus nose-to-right-jaw) / jaw width, "
        "0 = frontal; above -> 'look straight at the camera'. LFW dev (press photos): median 0.26, "
        "90th percentile 0.53.",
    )
    max_roll_deg: float = Field(
        25.0, ge=1.0, le=90.0, description="Largest head tilt (eye line angle, degrees)."
    )

    # --- encoding ---
    enrol_num_jitters: int = Field(
        0,
        ge=0,
        le=100,
        description="dlib jitters (random crops/flips, averaged) per enrolment image; each costs one network "
        "pass (~0.2-0.4 s on dlib-bin, which has no BLAS). 0 = flip TTA as on the probe side.",
    )
    flip_tta: bool = Field(
        True, description="Average the embeddings of the chip and its mirror image (single images)."
    )
    flip_tta_on_demand: bool = Field(
        True,
        description="With `flip_tta`, a probe judged against a template (verification, breath photos) is "
        "encoded once and its mirror only when the one-pass distance lies near the decision band "
        "(`flip_tta_pass_margin` below it, `flip_tta_margin` above it); enrolment and `analyse` always "
        "mirror. Off: every single image is mirrored.",
    )
    flip_tta_margin: float = Field(
        0.02,
        ge=0.0,
        le=2.0,
        description="Cosine distance above the FAIL threshold (and, for a band other than the face "
        "template's, e.g. breath photos, below its accept distance) inside which an on-demand probe gets "
        "the mirror pass. LFW dev, identity-grouped CV (margin = 99.9th percentile of "
        "|one-pass - mirror-averaged| distance near the band on the tuning folds, 0.015-0.018): 0 of "
        "54,900 held-out decisions differed from always mirroring.",
    )
    flip_tta_pass_margin: float = Field(
        0.0125,
        ge=0.0,
        le=2.0,
        description="Cosine distance below the face template's PASS threshold inside which an on-demand "
        "verification probe gets the mirror pass. Only a rise of the distance can turn a PASS into a "
        "REVIEW, and the mirror mostly lowers it (it averages noise away). LFW dev, identity-grouped CV "
        "(margin = 99.9th percentile of mirror-averaged minus one-pass distance near the band on the "
        "tuning folds, 0.0115-0.0123; all images 0.0121): 0 of 54,900 held-out decisions differed from "
        "always mirroring at 0.0125 / 0.02, the mirror ran for 32% of genuine and 5.8% of impostor probes "
        "(0.02 on both sides: 50.5% and 5.8%; LFW press photos, cooperative photos sit further from the band).",
    )
    session_flip_tta: bool = Field(
        False,
        description="Flip TTA on session frames too; off by default because fusing several frames already "
        "averages noise and the mirror doubles the encoding cost per frame.",
    )
    session_thorough_detection: bool = Field(
        False,
        description="Use the upsampled-HOG and CNN fallbacks on session frames (slow). Off: frames get the "
        "fast pass and a full-resolution pass without upsampling; single images always get all fallbacks.",
    )
    encode_batch_size: int = Field(16, ge=1, le=256, description="Face chips encoded per dlib batch call.")

    # --- decisions ---
    target_fmr: float = Field(
        1e-3,
        ge=1e-5,
        lt=0.1,
        description="Target false-match rate the PASS threshold is set for, through the calibration table.",
    )
    target_false_fail_rate: float = Field(
        0.01,
        ge=1e-4,
        le=0.2,
        description="Fraction of genuine comparisons allowed to end FAIL: distances above the genuine "
        "quantile (1 - this) are FAIL; between the PASS threshold and it is INCONCLUSIVE.",
    )
    calibration_path: Path | None = Field(
        None, description="Calibration JSON; empty = identity/face/calibration.json shipped with the code."
    )

    # --- enrolment ---
    enrol_min_images: int = Field(
        2, ge=1, le=20, description="Fewest quality-passing images a template needs."
    )
    enrol_max_images: int = Field(
        10, ge=1, le=50, description="Most embeddings kept in a template (best quality first)."
    )

    # --- sessions (many frames) ---
    session_top_k: int = Field(
        5, ge=1, le=50, description="Best-quality frames whose embeddings are fused for a session decision."
    )
    session_detect_every_n: int = Field(
        1,
        ge=1,
        le=30,
        description="In a session, detection and the quality gate run on at most every n-th frame; the "
        "frames between reuse that identity analysis and get their own 68 landmarks in its face box. "
        "1 (detect on every frame that is not a near-duplicate): on lp_d12 (fast head motion) a box "
        "carried over even one frame moved the landmark yaw by up to 23 degrees against a fresh "
        "detection, so liveness keeps fresh boxes.",
    )
    session_max_encoded_frames: int = Field(
        16,
        ge=3,
        le=2000,
        description="Most frames of one session that are encoded (the ~100-300 ms step); the rest are "
        "detected and landmarked only. Chosen evenly over time among the quality-passing frames, so a "
        "face change in part of the session still shows. Sessions sample at the camera's rate inside "
        "challenge windows (~290 frames), which liveness needs and identity does not.",
    )
    session_min_frames: int = Field(
        3, ge=1, le=50, description="Fewest quality-passing frames a session decision needs."
    )
    session_max_mismatch_fraction: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="A fused PASS becomes INCONCLUSIVE when more than this fraction of good frames are "
        "individually beyond the FAIL threshold (someone else in part of the session).",
    )
    duplicate_frame_mad: float = Field(
        1.5,
        ge=0.0,
        le=50.0,
        description="Frames whose 32x32 grey thumbnail differs from the last analysed frame by less than "
        "this mean absolute difference (grey levels) reuse its analysis; 0 disables skipping.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "FaceSettings":
        if self.min_brightness >= self.max_brightness:
            raise ValueError("min_brightness must be below max_brightness")
        if self.enrol_min_images > self.enrol_max_images:
            raise ValueError("enrol_min_images must not exceed enrol_max_images")
        return self
