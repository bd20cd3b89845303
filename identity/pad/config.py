"""PAD settings: every threshold bounded and documented."""

from pydantic import BaseModel, ConfigDict, Field


class PadSettings(BaseModel):
    """Passive anti-spoofing settings (env: KUZET_PAD__*)."""

    model_config = ConfigDict(extra="forbid")

    live_threshold: float = Field(
        0.5, ge=0, le=1, description="Minimum fused live probability for a frame to count as live."
    )
