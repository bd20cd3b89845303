"""The prompt plan a session runs over the data channel, from a liveness challenge."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import Any

# Used only when identity.liveness offers no challenge generator.
_FALLBACK_MOVES = ("turn_left", "turn_right", "blink")
_DIGITS = 5


@dataclass(frozen=True, slots=True)
class PromptStep:
    """One prompt: `step` names the action, `text_key` the string the client shows."""

    step: str
    text_key: str
    duration_s: float
    digits: str | None = None

    def message(self, index: int, t_s: float) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "type": "prompt",
            "index": index,
            "step": self.step,
            "text_key": self.text_key,
            "duration_s": self.duration_s,
            "t_s": round(t_s, 3),
        }
        if self.digits is not None:
            msg["digits"] = self.digits
        return msg


def fallback_challenge() -> dict[str, Any]:
    """A randomised challenge: look straight, the head moves in random order, then spoken digits."""
    rng = random.Random(secrets.randbits(64))
    moves = list(_FALLBACK_MOVES)
    rng.shuffle(moves)
    digits = "".join(str(rng.randrange(10)) for _ in range(_DIGITS))
    steps = [{"step": "look_straight"}, *({"step": m} for m in moves), {"step": "say_digits", "digits": digits}]
    return {"source": "media_server.fallback", "steps": steps}


def make_session_challenge(principal_challenge: dict[str, Any] | None) -> dict[str, Any]:
    """The challenge for a session: the credential's own, identity.liveness's, or the fallback."""
    if principal_challenge:
        return principal_challenge
    try:
        from identity.liveness import make_challenge  # type: ignore[attr-defined]
    except ImportError:
        return fallback_challenge()
    made = make_challenge()
    return dict(made.to_dict() if hasattr(made, "to_dict") else made)


def plan_prompts(challenge: dict[str, Any], step_s: float) -> list[PromptStep]:
    """Prompt steps from a challenge dict {"steps": [{"step"|"action"|"kind", "digits"?, "duration_s"?}]}."""
    plan: list[PromptStep] = []
    for raw in challenge.get("steps", []):
        if isinstance(raw, str):
            raw = {"step": raw}
        name = str(raw.get("step") or raw.get("action") or raw.get("kind") or "look_straight")
        digits = raw.get("digits")
        duration = float(raw.get("duration_s") or step_s)
        if digits is not None:
            digits = "".join(str(d) for d in digits)
            duration = max(duration, step_s * 1.5)
        plan.append(PromptStep(step=name, text_key=str(raw.get("text_key") or name), duration_s=duration, digits=digits))
    return plan or [PromptStep(step="look_straight", text_key="look_straight", duration_s=step_s)]
