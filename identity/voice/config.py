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
