"""Face settings: every threshold bounded and documented."""

from pydantic import BaseModel, ConfigDict, Field


class FaceSettings(BaseModel):
    """Face pipeline settings (env: KUZET_FACE__*)."""

    model_config = ConfigDict(extra="forbid")

    target_fmr: float = Field(
        1e-3, gt=0, lt=0.1, description="Target false-match rate the verification threshold is set for."
    )
