"""Randomised liveness challenges and their evaluation. Pure numpy; JSON-serialisable for the data channel."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import CheckKind, CheckResult, Outcome
from identity.liveness.checks import TurnDirection, check_av_sync, check_blink, check_head_turn
from identity.liveness.config import LivenessSettings


class StepKind(StrEnum):
    """One thing the person is asked to do. Stored values are stable."""

    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    BLINK = "blink"
    READ_DIGITS = "read_digits"


MOTION_STEPS: tuple[StepKind, ...] = (StepKind.TURN_LEFT, StepKind.TURN_RIGHT, StepKind.BLINK)


@dataclass(frozen=True, slots=True)
class Step:
    """A prompt: `prompt_key` names the translated text the page shows; `digits` only for read_digits."""

    kind: StepKind
    prompt_key: str
    window_s: float
    digits: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "kind": self.kind.value,
            "prompt_key": self.prompt_key,
            "window_s": self.window_s,
            "digits": self.digits,
        }


@dataclass(frozen=True, slots=True)
class Challenge:
    """An ordered list of steps, plus the planned timing (lead-in before the first prompt, gap between)."""

    nonce: str
    steps: tuple[Step, ...]
    lead_in_s: float
    gap_s: float

    def planned_prompt_ts(self) -> list[float]:
        """Planned prompt times in seconds from the challenge start."""
        times, t = [], self.lead_in_s
        for step in self.steps:
            times.append(t)
            t += step.window_s + self.gap_s
        return times

    def total_s(self) -> float:
        """Planned duration in seconds, lead-in to the end of the last window."""
        return self.lead_in_s + sum(s.window_s for s in self.steps) + self.gap_s * max(len(self.steps) - 1, 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "nonce": self.nonce,
            "lead_in_s": self.lead_in_s,
            "gap_s": self.gap_s,
            "steps": [s.to_dict() for s in self.steps],
        }

    def to_json(self) -> str:
        """Compact JSON for the data channel."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Challenge:
        """Inverse of `to_dict`."""
        steps = tuple(
            Step(StepKind(s["kind"]), str(s["prompt_key"]), float(s["window_s"]), str(s.get("digits") or ""))
            for s in data["steps"]
        )
        return cls(str(data["nonce"]), steps, float(data["lead_in_s"]), float(data["gap_s"]))

    @classmethod
    def from_json(cls, text: str) -> Challenge:
        """Inverse of `to_json`."""
        return cls.from_dict(json.loads(text))


def make_challenge(rng: np.random.Generator, settings: LivenessSettings) -> Challenge:
    """A fresh random challenge: `motion_steps` head-turn/blink steps (no kind twice in a row) and, if
    configured, one read-digits step at a random position with a random digit string."""
    steps: list[Step] = []
    previous: StepKind | None = None
    for _ in range(settings.motion_steps):
        choices = [k for k in MOTION_STEPS if k is not previous]
        kind = choices[int(rng.integers(len(choices)))]
        steps.append(Step(kind, f"liveness.{kind.value}", settings.motion_window_s))
        previous = kind
    if settings.include_read_digits:
        length = int(rng.integers(settings.digits_min_len, settings.digits_max_len + 1))
        digits = "".join(str(int(d)) for d in rng.integers(0, 10, length))
        step = Step(StepKind.READ_DIGITS, "liveness.read_digits", settings.read_digits_window_s, digits)
        steps.insert(int(rng.integers(len(steps) + 1)), step)
    nonce = bytes(rng.integers(0, 256, 8, dtype=np.uint8)).hex()
    return Challenge(nonce, tuple(steps), settings.lead_in_s, settings.step_gap_s)


def _floats(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64).ravel()


@dataclass(slots=True)
class Observations:
    """What the session measured, on one clock (seconds).

    Per video frame: `frame_ts`, and `yaw_deg`, `ear`, `mouth_ratio` from identity.liveness.landmarks
    (NaN where no face was found). Audio: `audio_energy` (e.g. RMS of 20 ms blocks) at `audio_ts`; empty if
    no audio arrived. `prompt_ts[i]`: when step i's prompt was actually shown (NaN: never shown).
    """

    frame_ts: npt.ArrayLike
    yaw_deg: npt.ArrayLike
    ear: npt.ArrayLike
    mouth_ratio: npt.ArrayLike
    audio_ts: npt.ArrayLike = field(default_factory=lambda: np.empty(0))
    audio_energy: npt.ArrayLike = field(default_factory=lambda: np.empty(0))
    prompt_ts: Sequence[float] = ()


def _with_step(result: CheckResult, index: int, step: Step, prompt: float) -> CheckResult:
    details = {**result.details, "step": index, "step_kind": step.kind.value, "prompt_ts": prompt}
    if step.digits:
        details["digits"] = step.digits
    return CheckResult(
        kind=result.kind,
        outcome=result.outcome,
        code=result.code,
        message=result.message,
        score=result.score,
        threshold=result.threshold,
        model=result.model,
        details=details,
    )


def evaluate_challenge(
    challenge: Challenge, observations: Observations, settings: LivenessSettings
) -> list[CheckResult]:
    """One CheckResult per step, judged only on data inside that step's window after its prompt.

    read_digits is judged by mouth/speech synchrony (kind AV_SYNC); recognising the spoken digits
    themselves is a separate check. A step whose prompt was never shown is INCONCLUSIVE.
    """
    ts = _floats(observations.frame_ts)
    yaw, ear, mouth = (
        _floats(observations.yaw_deg),
        _floats(observations.ear),
        _floats(observations.mouth_ratio),
    )
    a_ts, energy = _floats(observations.audio_ts), _floats(observations.audio_energy)
    results: list[CheckResult] = []
    for i, step in enumerate(challenge.steps):
        prompt = float(observations.prompt_ts[i]) if i < len(observations.prompt_ts) else float("nan")
        if not np.isfinite(prompt):
            kind = CheckKind.AV_SYNC if step.kind is StepKind.READ_DIGITS else CheckKind.LIVENESS
            result = CheckResult(
                kind, Outcome.INCONCLUSIVE, "prompt_not_shown", "The prompt was not shown; could not tell."
            )
        elif step.kind in (StepKind.TURN_LEFT, StepKind.TURN_RIGHT):
            direction = TurnDirection.LEFT if step.kind is StepKind.TURN_LEFT else TurnDirection.RIGHT
            result = check_head_turn(yaw, ts, prompt, direction, settings, window_s=step.window_s)
        elif step.kind is StepKind.BLINK:
            result = check_blink(ear, ts, prompt, settings, window_s=step.window_s)
        else:
            end = prompt + step.window_s
            f = (ts >= prompt) & (ts <= end)
            a = (a_ts >= prompt) & (a_ts <= end)
            result = check_av_sync(mouth[f], ts[f], energy[a], a_ts[a], settings)
        results.append(_with_step(result, i, step, prompt))
    return results
