"""Voice settings: every threshold bounded and documented."""

from pydantic import BaseModel, ConfigDict, Field


class VoiceSettings(BaseModel):
    """Voice pipeline settings (env: KUZET_VOICE__*)."""

    model_config = ConfigDict(extra="forbid")

    target_fmr: float = Field(
        1e-2, gt=0, lt=0.2, description="Target false-match rate the verification threshold is set for."
    )
