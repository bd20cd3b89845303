"""PAD settings: every threshold bounded and documented.

How the defaults were set (re-measure with your own cameras before relying on them): `kuzet eval pad
--root ../shared/data/pad` and `python benchmarks/pad_generated.py` print the fused live probability of
every labelled image. On the generated set (astronaut + 40 LFW faces, one screen replay and one print
attack each) the highest attack scored 0.882 and live scores spread from 0.004 to 1.0 (web-compressed
LFW photos often look like recaptures to the model); on ../shared/data/pad the highest attack scored
0.727 and the lowest live 0.516. With live_threshold 0.55 and a review margin of 0.35, a frame PASSes at
>= 0.90, FAILs below 0.20 and goes to review in between: no generated or real attack passes, and what
the model cannot separate becomes review rather than a violation.
"""

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PadSettings(BaseModel):
    """Passive anti-spoofing settings (env: KUZET_PAD__*)."""

    model_config = ConfigDict(extra="forbid")

    live_threshold: float = Field(
        0.55,
        ge=0.05,
        le=0.99,
        description="Fused live probability (mean of the two MiniFASNet softmax 'live' outputs, 0..1) at or "
        "above which a frame counts as live; below it, as a presentation attack.",
    )
    inconclusive_margin: float = Field(
        0.35,
        ge=0.0,
        le=0.45,
        description="Scores within this distance of live_threshold (either side) are 'could not tell' "
        "(INCONCLUSIVE, human review) instead of PASS or FAIL.",
    )
    min_face_px: int = Field(
        60,
        ge=20,
        le=1000,
        description="A face box narrower than this (pixels) is too small to judge: INCONCLUSIVE.",
    )
    detect_max_side_px: int = Field(
        800,
        ge=160,
        le=4096,
        description="Standalone use only: frames are downscaled to this longest side before the dlib HOG "
        "face detector runs (speed); the crop is still taken from the full-resolution frame.",
    )
    detect_upsample: int = Field(
        1,
        ge=0,
        le=2,
        description="Standalone use only: dlib HOG upsampling passes (finds smaller faces, slower).",
    )
    video_sample_every_s: float = Field(
        0.5, gt=0, le=10, description="Evaluation of video files: seconds between sampled frames."
    )
    video_max_frames: int = Field(
        20, ge=1, le=500, description="Evaluation of video files: most frames scored per file."
    )

    @model_validator(mode="after")
    def _margin_inside_unit_range(self) -> Self:
        if (
            not 0.0
            <= self.live_threshold - self.inconclusive_margin
            <= self.live_threshold + self.inconclusive_margin
            <= 1.0
        ):
            raise ValueError("live_threshold +- inconclusive_margin must stay within 0..1")
        return self
