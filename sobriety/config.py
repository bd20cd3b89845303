"""Sobriety settings: every threshold bounded and documented."""

from pydantic import BaseModel, ConfigDict, Field


class SobrietySettings(BaseModel):
    """Breath test settings (env: KUZET_SOBRIETY__*)."""

    model_config = ConfigDict(extra="forbid")

    nonce_max_age_s: int = Field(
        300, ge=10, le=86400, description="A signed reading older than this (by its timestamp) is stale."
    )
