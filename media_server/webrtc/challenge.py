"""The prompt plan a session runs over the data channel, from an identity.liveness challenge."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from identity.liveness.challenge import Challenge, make_challenge
from identity.liveness.config import LivenessSettings


@dataclass(frozen=True, slots=True)
class PromptStep:
    """One prompt: `step` names the action (and the page's `prompt.<step>` string)."""

    step: str
    window_s: float
    gap_s: float
    digits: str | None = None

    def message(self, index: int, t_s: float) -> dict[str, Any]:
        """The data-channel message announcing this step at session time `t_s`."""
        msg: dict[str, Any] = {
            "type": "prompt",
            "index": index,
            "step": self.step,
            "text_key": self.step,
            "window_s": self.window_s,
            "t_s": round(t_s, 3),
        }
        if self.digits:
            msg["digits"] = self.digits
        return msg


def session_challenge(given: dict[str, Any] | None, settings: LivenessSettings) -> dict[str, Any]:
    """The credential's challenge (issued with the check-in link) or a fresh random one."""
    if given:
        return given
    return make_challenge(np.random.default_rng(secrets.randbits(128)), settings).to_dict()


def plan_prompts(challenge: dict[str, Any]) -> tuple[float, list[PromptStep]]:
    """(lead-in seconds, steps) of a challenge dict in identity.liveness's `Challenge.to_dict` form."""
    parsed = Challenge.from_dict(challenge)
    steps = [
        PromptStep(step=s.kind.value, window_s=s.window_s, gap_s=parsed.gap_s, digits=s.digits or None)
        for s in parsed.steps
    ]
    return parsed.lead_in_s, steps


def plan_windows(
    start_s: float, lead_in_s: float, steps: list[PromptStep], baseline_s: float
) -> list[tuple[float, float]]:
    """Planned dense-sampling windows (start_s, end_s) on the session clock, one per step: from
    `baseline_s` before its planned prompt (the resting pose the checks compare against) to the end of
    its response window. `start_s` is when the lead-in begins."""
    windows: list[tuple[float, float]] = []
    t = start_s + lead_in_s
    for step in steps:
        windows.append((max(start_s, t - baseline_s), t + step.window_s))
        t += step.window_s + step.gap_s
    return windows
