"""Voice settings: every threshold bounded and documented."""

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class VadBackend(StrEnum):
    """Which speech detector trims silence. Stored values are stable."""

    SILERO = "silero"
    WEBRTC = "webrtc"


class SpeakerEngineKind(StrEnum):
    """Which speaker-embedding engine runs. Stored values are stable."""

    RESEMBLYZER = "resemblyzer"
    ECAPA = "ecapa"


class ScoreNorm(StrEnum):
    """Score normalisation against a cohort of other speakers' embeddings."""

    NONE = "none"
    SNORM = "snorm"
    ASNORM = "asnorm"


class DigitSegmentation(StrEnum):
    """Where the spoken-digit check takes each digit's segment from. Stored values are stable."""

    FREE = "free"
    FORCED = "forced"


class DigitSettings(BaseModel):
    """Spoken-digit check against the person's own digit templates (env: KUZET_VOICE__DIGITS__*).

    Distances are mean Euclidean distances between CMN-normalised MFCC+delta frames ("feature units");
    the thresholds were tuned by cross-validation on FSDD speakers (`benchmarks/spoken_digits.py`).
    """

    model_config = ConfigDict(extra="forbid")

    n_mfcc: int = Field(
        13, ge=8, le=40, description="Cepstral coefficients per frame (c0 only enters as delta)."
    )
    n_mels: int = Field(40, ge=20, le=80, description="Mel bands the cepstra are computed from.")
    fmax_hz: float = Field(
        4000,
        ge=3000,
        le=8000,
        description="Highest frequency analysed; 4000 keeps 8 kHz telephone enrolments comparable with 16 kHz audio.",
    )
    frame_ms: float = Field(25, ge=10, le=50, description="Analysis window length.")
    hop_ms: float = Field(10, ge=5, le=25, description="Frame step.")
    probe_cmn: bool = Field(
        False,
        description="Centre the check-in utterance on its own cepstral mean (for a channel different from the "
        "enrolment's) instead of the enrolment mean. Off: on FSDD single takes it lowered isolated-digit "
        "accuracy from 96% to 88% (the mean of a few digits is not the mean of all ten).",
    )
    mismatch_decides: bool = Field(
        False,
        description="A digits mismatch makes the verdict FAIL (True) or sends it to review (False). Off: about "
        "1.7 % of genuine FSDD strings and 13 % in 20 dB noise do not pass (benchmarks/spoken_digits.py), "
        "and a misread digit is not a violation until a reviewer has listened to it.",
    )
    vad_floor_dbfs: float = Field(
        -60,
        ge=-90,
        le=-30,
        description="Frames below this level are never speech (digital silence, muted mic).",
    )
    vad_fraction: float = Field(
        0.35,
        ge=0.05,
        le=0.9,
        description="A frame is speech when its level is above noise + vad_fraction x (loud - noise), "
        "noise = 10th and loud = 95th percentile of frame levels (dB).",
    )
    vad_pad_ms: float = Field(40, ge=0, le=300, description="Audio kept either side of each speech run.")
    min_speech_s_per_digit: float = Field(
        0.15,
        ge=0.05,
        le=1.0,
        description="Least detected speech per expected digit for the string to be judged.",
    )
    min_template_speech_s: float = Field(
        0.12, ge=0.05, le=1.0, description="Least speech one enrolment take of a digit needs to be kept."
    )
    min_takes_per_digit: int = Field(
        1, ge=1, le=10, description="Usable takes every digit 0-9 needs at enrolment."
    )
    max_takes_per_digit: int = Field(
        5, ge=1, le=20, description="Most takes kept per digit (more = slower checks, rarely better)."
    )
    min_snr_db: float = Field(
        8, ge=-10, le=60, description="Speech-to-noise ratio (dB) below which the string is not judged."
    )
    silence_rms_dbfs: float = Field(
        -60, ge=-120, le=-20, description="Whole-clip RMS below this (dBFS): no signal (TECHNICAL)."
    )
    step_penalty: float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="DTW cost added when a template frame is repeated or skipped (feature units); keeps "
        "a word from being stretched or squeezed beyond speaking-rate variation.",
    )
    slope_limit: bool = Field(
        False,
        description="Never repeat a template frame twice in a row (a word lasts at most twice its template). "
        "Off: on FSDD it failed 9 of 15 genuine strings of one speaker whose takes vary in length.",
    )
    segmentation: DigitSegmentation = Field(
        DigitSegmentation.FREE,
        description="free: cut the utterance into digits without looking at the expected ones; forced: "
        "align it to the expected digits. Measured on FSDD (15 strings x 6 speakers, 3 enrolment takes): "
        "forced let a one-digit change bend the alignment (a wrong string's lowest margin 0.10 vs 0.45 free).",
    )
    pause_cost: float = Field(
        3.0,
        ge=0.0,
        le=100.0,
        description="Cost of one non-speech frame spent in a pause between digits (feature units); lower "
        "than a typical frame distance so pauses separate words, higher than the distance of a weak "
        "consonant the energy detector missed. 3 beat 2 and 5 on FSDD development strings (the benchmark's speakers).",
    )
    max_margin: float = Field(
        0.39,
        ge=-5.0,
        le=5.0,
        description="PASS when every expected digit's best take is at most this much farther (feature units "
        "per frame) from its segment than the best take of any other digit. Cross-validated leave-one-"
        "speaker-out on FSDD (benchmarks/spoken_digits.py): fold values 0.375-0.397, all-speaker 0.388.",
    )
    max_frame_cost: float = Field(
        10.0,
        gt=0.0,
        le=1000.0,
        description="Segmentation-path cost per frame above which the speech does not resemble the person's "
        "digits at all (noise, another voice, no digits): INCONCLUSIVE, never FAIL. Genuine strings measured "
        "at most 4.97 (FSDD and espeak ru/kk, benchmarks/spoken_digits.py); not yet measured on other speech.",
    )


class VoiceSettings(BaseModel):
    """Voice pipeline settings (env: KUZET_VOICE__*)."""

    model_config = ConfigDict(extra="forbid")

    target_fmr: float = Field(
        1e-2, gt=0, lt=0.2, description="Target false-match rate the verification threshold is set for."
    )
    engine: SpeakerEngineKind = Field(
        SpeakerEngineKind.RESEMBLYZER,
        description="Speaker engine: resemblyzer (weights ship in the wheel) or ecapa (provisioned weights).",
    )
    ecapa_dir: str = Field(
        "speechbrain/spkrec-ecapa-voxceleb",
        min_length=1,
        description="Directory under the models dir with the SpeechBrain ECAPA hyperparams.yaml and ckpts.",
    )
    vad_backend: VadBackend = Field(
        VadBackend.SILERO, description="Speech detector; webrtc is used when silero cannot be loaded."
    )
    vad_threshold: float = Field(
        0.5, ge=0.05, le=0.95, description="Silero speech probability above which a 32 ms window is speech."
    )
    webrtc_vad_mode: int = Field(
        2, ge=0, le=3, description="webrtcvad aggressiveness (0 = keeps most audio, 3 = strictest)."
    )
    speech_pad_ms: int = Field(
        30, ge=0, le=500, description="Audio kept on each side of a detected speech segment."
    )
    min_net_speech_s: float = Field(
        1.0,
        ge=0.3,
        le=30,
        description="Least detected speech (after silence trimming) one utterance needs to be judged. "
        "Measured with silero: the 3 s speechcommands clips hold 0.66-2.25 s (5 of 60 below 1 s), "
        "the fsdd digit strings 0-3.5 s.",
    )
    min_input_s: float = Field(
        0.5, ge=0.1, le=10, description="Shorter inputs are refused before any analysis."
    )
    max_input_s: float = Field(120, ge=5, le=3600, description="Longer inputs are refused (memory bound).")
    min_sample_rate_hz: int = Field(
        8000,
        ge=4000,
        le=16000,
        description="Lowest input rate accepted (8 kHz telephone audio is resampled).",
    )
    max_sample_rate_hz: int = Field(96000, ge=16000, le=384000, description="Highest input rate accepted.")
    silence_rms_dbfs: float = Field(
        -60, ge=-120, le=-20, description="Whole-clip RMS below this (dBFS) means no signal at all."
    )
    clip_level: float = Field(
        0.999, ge=0.9, le=1.0, description="Absolute sample value (full scale = 1.0) counted as clipped."
    )
    max_clipped_fraction: float = Field(
        0.01, ge=0, le=0.5, description="Fraction of clipped samples above which the clip is distorted."
    )
    min_snr_db: float = Field(
        10, ge=-10, le=60, description="Estimated speech-to-noise ratio (dB) below which audio is too noisy."
    )
    partial_rate_hz: float = Field(
        1.3,
        ge=0.7,
        le=10,
        description="Resemblyzer: 1.6 s partial windows per second of audio whose embeddings are averaged "
        "(1.3 = resemblyzer's default; 2 and 3 measured no better on the speechcommands speakers).",
    )
    trim_silence: bool = Field(
        False,
        description="Embed only the VAD speech segments. Off: measured on the 3 s speechcommands clips, "
        "trimming to their 0.66-2.25 s of speech (below GE2E's 1.6 s window) raised EER from 1.7% to 6.7%.",
    )
    score_norm: ScoreNorm = Field(
        ScoreNorm.NONE,
        description="Cohort score normalisation. none: measured on the speechcommands speakers, S-norm "
        "against the shipped cohort (6 fsdd speakers, 8 kHz) raised EER from 1.7% to 4.6%; use it with a "
        "cohort built from the deployment's own channel (python -m identity.voice.build cohort).",
    )
    asnorm_top_k: int = Field(
        30, ge=5, le=10000, description="AS-norm: the most similar cohort embeddings used per side."
    )
    min_enrol_utterances: int = Field(
        2, ge=1, le=20, description="Usable utterances an enrolment needs (each passing the quality gate)."
    )
    torch_threads: int = Field(1, ge=1, le=64, description="Torch intra-op threads per worker process.")
    digits: DigitSettings = Field(
        default_factory=DigitSettings,
        description="Spoken-digit check (templates of the person's own digits).",
    )
