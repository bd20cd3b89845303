"""Sobriety settings: every threshold bounded and documented.

Alcohol concentrations carry their unit in the field name: `_g_210l` is grams of ethanol per 210 litres
of breath (the US evidential breath unit), `_mg_l` milligrams per litre of breath, `_permille` grams per
litre of blood (per mille). See `sobriety/units.py` for the conversions and the partition ratio.
"""

from pydantic import BaseModel, ConfigDict, Field


class SobrietySettings(BaseModel):
    """Breath test settings (env: KUZET_SOBRIETY__*)."""

    model_config = ConfigDict(extra="forbid")

    # --- signed reading: freshness and replay -------------------------------------------------------------
    nonce_max_age_s: int = Field(
        300, ge=10, le=86400, description="A signed reading older than this (by its timestamp) is stale."
    )
    clock_skew_s: int = Field(
        30,
        ge=0,
        le=600,
        description="Tolerated station clock drift: a reading timestamped up to this far in the future is "
        "accepted, and the age limit is extended by the same amount.",
    )
    nonce_min_chars: int = Field(
        16, ge=8, le=64, description="Shortest nonce accepted (hex/base64url characters; 16 hex = 64 bits)."
    )

    # --- device calibration and the blow ---------------------------------------------------------------
    calibration_validity_days: int = Field(
        180,
        ge=1,
        le=730,
        description="A fuel-cell sensor calibrated longer ago than this is expired (manufacturers ask for "
        "6-12 months; Dräger/Intoximeters service intervals are 6 months).",
    )
    blow_min_s: float = Field(
        1.5,
        ge=0.5,
        le=10,
        description="Shortest valid blow (start to end); shorter ones are not deep-lung air.",
    )
    blow_max_s: float = Field(30.0, ge=5, le=120, description="Longest plausible blow.")
    photo_window_tolerance_s: float = Field(
        0.5,
        ge=0,
        le=5,
        description="A photo may be captured this long before blow start or after blow end and still count "
        "as taken during the blow (camera/sensor timestamp jitter).",
    )
    reading_max_bytes: int = Field(
        16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest signed reading (canonical JSON) a station may upload; a real one is ~500 bytes.",
    )
    photo_max_bytes: int = Field(
        5 * 1024 * 1024,
        ge=64 * 1024,
        le=50 * 1024 * 1024,
        description="Largest single breath photo file (bytes); a 640x480 to 1920x1080 JPEG is 50-800 KB.",
    )
    photo_min_count: int = Field(3, ge=1, le=10, description="Fewest photos a breath test must carry.")
    photo_max_count: int = Field(10, ge=1, le=32, description="Most photos one breath test may carry.")
    max_brac_g_210l: float = Field(
        0.60,
        gt=0.1,
        le=1.0,
        description="Highest physiologically plausible breath reading (g/210L); above it the reading is "
        "treated as a sensor fault (technical), not a violation.",
    )

    # --- reading policy (court order) -----------------------------------------------------------------
    default_limit_g_210l: float = Field(
        0.02,
        ge=0.0,
        le=0.08,
        description="Limit used when an order names none: readings at or above it are positive. 0.02 g/210L "
        "is the usual 'zero tolerance' cut-off of fuel-cell devices (above their noise floor).",
    )
    partition_ratio: float = Field(
        2100.0,
        ge=1800.0,
        le=2500.0,
        description="Blood/breath partition ratio (volumes of breath holding the ethanol of one volume of "
        "blood). 2100:1 is the ratio that defines g/210L (US UVC, NHTSA) and is conservative for the "
        "person (in vivo mean ~2300:1, Jones & Andersson 1996, J Forensic Sci 41:916).",
    )
    zero_threshold_g_210l: float = Field(
        0.005,
        ge=0.0,
        le=0.02,
        description="'Test to zero' ends when a reading falls below this (device resolution 0.005 g/210L).",
    )

    # --- retest state machine ---------------------------------------------------------------------------
    test_window_s: int = Field(
        900, ge=60, le=4 * 3600, description="How long after it falls due a scheduled test may be taken."
    )
    late_grace_s: int = Field(
        900,
        ge=0,
        le=4 * 3600,
        description="After the window closes a test is still accepted, marked late, for this long; after "
        "that the test is missed.",
    )
    deprivation_s: int = Field(
        900,
        ge=900,
        le=1200,
        description="Wait after a positive screening before the confirmatory test (15-20 min deprivation "
        "period lets mouth alcohol dissipate).",
    )
    confirmatory_window_s: int = Field(
        900,
        ge=120,
        le=3600,
        description="How long after the deprivation period the confirmatory test may be taken.",
    )
    test_to_zero_interval_s: int = Field(
        1800,
        ge=600,
        le=4 * 3600,
        description="Interval between 'test to zero' retests after a confirmed positive.",
    )
    test_to_zero_max_s: int = Field(
        12 * 3600,
        ge=3600,
        le=48 * 3600,
        description="'Test to zero' gives up (and flags) after this long without a reading below zero.",
    )

    # --- breath photos --------------------------------------------------------------------------------
    photo_min_face_px: int = Field(
        60, ge=20, le=400, description="Smallest face box side (pixels) a breath photo's face may have."
    )
    photo_min_brightness: float = Field(
        40.0, ge=0, le=128, description="Darkest acceptable mean luma of the face box (0-255)."
    )
    photo_max_brightness: float = Field(
        220.0, ge=128, le=255, description="Brightest acceptable mean luma of the face box (0-255)."
    )
    photo_min_sharpness: float = Field(
        9.6,
        ge=0,
        le=1000,
        description="Lowest variance of the Laplacian (grey levels^2) over the upper half of the face box "
        "(eyes/brow) scaled to photo_sharpness_width_px wide, below which the photo is too blurred to judge. "
        "Chosen by benchmarks/breath_sharpness.py on LFW dev faces: the highest threshold refusing at most 2% "
        "of sharp faces (a refused photo sends a genuine test to review); 5-fold identity-grouped CV, out of "
        "sample 2.0% of sharp faces refused and 88% of faces blurred with sigma 1.5 px caught. Station "
        "photos of benchmarks/breath_station.py: min 14.5, median 72.",
    )
    photo_sharpness_width_px: int = Field(
        150,
        ge=50,
        le=600,
        description="Face box width the sharpness is measured at (the face engine's chip size). Measured at "
        "the photo's own scale, a large soft face (a 300 px face from a station camera) read as blurred "
        "while a small face of the same detail read as sharp.",
    )
    phash_max_hamming: int = Field(
        8,
        ge=0,
        le=32,
        description="pHash distance (bits, sobriety.photos.set_distance over whole-image and crop hashes) at "
        "or below which two photos are near duplicates. Measured by benchmarks/breath_occlusion.py on LFW: "
        "one bit below the closest two different photos (10); re-encoded/resized/cropped copies score <= 2 "
        "(one-sided crops up to 14).",
    )
    reuse_candidate_max_hamming: int = Field(
        16,
        ge=0,
        le=32,
        description="When earlier photos can be read (the service passes them), every earlier photo within "
        "this pHash distance (bits, set_distance) is aligned with the new one and compared pixel by pixel "
        "(sobriety.reuse) instead of being called a near duplicate on the hash alone.",
    )
    reuse_max_comparisons: int = Field(
        48,
        ge=1,
        le=500,
        description="Most earlier photos (closest pHash first) compared pixel by pixel per new photo "
        "(each an ORB alignment at 320 px, ECC-refined when close: ~11 CPU-ms in benchmarks/breath_api.py, "
        "~20 on the station videos; 0.46 s wall before refinement was skipped, at load ~16). A pHash "
        "near duplicate beyond this many stays INCONCLUSIVE, so the service should offer the person's "
        "recent tests first (a station's photos are all close).",
    )
    reuse_same_moment_max_residual: float = Field(
        2.0,
        ge=0.5,
        le=64.0,
        description="Residual (grey levels 0-255: 90th percentile of the absolute difference over the face "
        "region after alignment, gain/offset fit and a 1.2 px blur at 320 px width) at or below which a "
        "new photo is a re-sent copy of an earlier one (same moment); above it, a new moment. Measured by "
        "benchmarks/breath_station.py on station tests built from 8 real videos: edited re-sent copies "
        "(JPEG q60/75, crops 3-5%, scale 0.8/1.25, brightness +-25) <= 1.29, new moments >= 0.5 s apart "
        ">= 2.2.",
    )
    reuse_refine_max_residual: float = Field(
        8.0,
        ge=2.0,
        le=255.0,
        description="An alignment (fixed camera or keypoints) is refined by ECC, ~75% of a pixel comparison's "
        "CPU, only when its residual before refinement (same measure as reuse_same_moment_max_residual) is at "
        "or below this; above it the photos are different moments without refining. Keep it well above "
        "reuse_same_moment_max_residual. Measured by benchmarks/breath_station.py: every re-sent copy had an "
        "alignment at <= 4.4 before refinement (<= 2.0 after), so 8 leaves a margin of 1.8x; with 8 the "
        "re-sent and new-moment decisions of all 1,719 comparisons there are unchanged, and the LFW-based "
        "station photos of benchmarks/breath_api.py (residual >= 54) are never refined.",
    )
    occluded_accept_distance: float = Field(
        0.37,
        ge=0.2,
        le=0.8,
        description="Face embedding distance (identity.face engine through sobriety.face_port: Euclidean "
        "between L2-normalised embeddings) at or below which an occluded breath photo matches the enrolled "
        "gallery (FAR 0.1% on occluded LFW probes, occlusion_calibration.json).",
    )
    occluded_reject_distance: float = Field(
        0.49,
        ge=0.3,
        le=1.2,
        description="Distance above which an occluded breath photo is a clear mismatch (every genuine "
        "occluded LFW distance plus a 0.05 margin, occlusion_calibration.json); between accept and reject "
        "the photo is inconclusive.",
    )
    photo_min_matching: int = Field(
        2, ge=1, le=10, description="Photos of one test that must match the gallery for identity to pass."
    )
    mouthpiece_min_fraction: float = Field(
        0.46,
        ge=0.0,
        le=1.0,
        description="Fraction of lower-face pixels that must differ from the person's own cheek colour for "
        "the mouthpiece to count as visible (heuristic; below it the photo goes to review). 0.46 balances "
        "errors on LFW with the synthetic occluder (about 11% each way, occlusion_calibration.json).",
    )
    mouthpiece_in_verdict: bool = Field(
        False,
        description="Whether the mouthpiece heuristic can send a breath test to review. Off: it is computed "
        "and stored with each photo (report only). benchmarks/breath_station.py measures it on station "
        "photos built from real videos with held-out occluders; see README 'Breath photos at a home "
        "station' for the figures that made it report-only.",
    )
    mouthpiece_skin_sigma: float = Field(
        2.5,
        ge=0.5,
        le=10,
        description="A mouth-region pixel differs from skin when its Lab colour is more than this many "
        "standard deviations from the cheek/forehead colour.",
    )
    require_pad: bool = Field(
        False,
        description="When true a breath photo without an anti-spoofing result goes to review; when false "
        "missing PAD is only recorded.",
    )
