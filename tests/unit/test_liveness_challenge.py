"""Randomised challenges: shape, JSON round trip, and evaluation of live-like and attack-like sessions."""

from __future__ import annotations

import numpy as np

from identity.checks import CheckKind, Outcome
from identity.liveness.challenge import (
    Challenge,
    Observations,
    Step,
    StepKind,
    evaluate_challenge,
    make_challenge,
)
from identity.liveness.config import LivenessSettings

S = LivenessSettings()
FPS = 15.0


def test_challenges_are_random_bounded_and_serialisable() -> None:
    rng = np.random.default_rng(1)
    challenges = [make_challenge(rng, S) for _ in range(50)]
    assert len({c.nonce for c in challenges}) == 50
    assert len({tuple(s.kind for s in c.steps) for c in challenges}) > 3
    for c in challenges:
        kinds = [s.kind for s in c.steps]
        assert kinds.count(StepKind.READ_DIGITS) == 1
        assert len(kinds) == S.motion_steps + 1
        assert all(
            a is not b for a, b in zip(kinds, kinds[1:], strict=False) if a is not StepKind.READ_DIGITS
        )
        digits = next(s.digits for s in c.steps if s.kind is StepKind.READ_DIGITS)
        assert digits.isdigit() and S.digits_min_len <= len(digits) <= S.digits_max_len
        assert all(s.prompt_key == f"liveness.{s.kind.value}" for s in c.steps)
        assert Challenge.from_json(c.to_json()) == c
    times = challenges[0].planned_prompt_ts()
    assert times[0] == S.lead_in_s and all(b > a for a, b in zip(times, times[1:], strict=False))


def _fixed(kinds: list[StepKind]) -> Challenge:
    steps = tuple(
        Step(k, f"liveness.{k.value}", S.read_digits_window_s, "4071")
        if k is StepKind.READ_DIGITS
        else Step(k, f"liveness.{k.value}", S.motion_window_s)
        for k in kinds
    )
    return Challenge("test", steps, S.lead_in_s, S.step_gap_s)


def _live_session(challenge: Challenge) -> Observations:
    """A cooperative person: turns, blinks and speaks 0.6 s after each prompt, mouth following speech."""
    rng = np.random.default_rng(5)
    prompts = challenge.planned_prompt_ts()
    ts = np.arange(0.0, challenge.total_s() + 0.5, 1.0 / FPS)
    yaw = 2.0 + rng.normal(0, 0.8, ts.size)
    ear = 0.3 + rng.normal(0, 0.006, ts.size)
    mouth = 0.04 + rng.normal(0, 0.005, ts.size)
    audio_ts = np.arange(0.0, challenge.total_s() + 0.5, 0.02)
    energy = 0.01 + rng.random(audio_ts.size) * 0.005
    for step, p in zip(challenge.steps, prompts, strict=True):
        start = p + 0.6
        if step.kind in (StepKind.TURN_LEFT, StepKind.TURN_RIGHT):
            sign = 1.0 if step.kind is StepKind.TURN_LEFT else -1.0
            span = (ts >= start) & (ts < start + 1.5)
            yaw[span] += sign * 28.0 * np.sin(np.pi * (ts[span] - start) / 1.5)
        elif step.kind is StepKind.BLINK:
            ear[(ts >= start) & (ts < start + 0.2)] = 0.08
        else:
            bounds = start + np.cumsum(rng.uniform(0.12, 0.3, 40))
            speaking = (audio_ts >= start) & (audio_ts < start + 4.0)
            syll = speaking & (np.searchsorted(bounds, audio_ts) % 2 == 0)
            env = np.convolve(syll.astype(float), np.ones(5) / 5, mode="same")
            energy += env
            mouth += 0.3 * np.interp(ts - 0.08, audio_ts, env)
    return Observations(ts, yaw, ear, mouth, audio_ts, energy, prompts)


def test_cooperative_live_session_passes_every_step() -> None:
    challenge = _fixed([StepKind.TURN_LEFT, StepKind.BLINK, StepKind.READ_DIGITS, StepKind.TURN_RIGHT])
    results = evaluate_challenge(challenge, _live_session(challenge), S)
    assert [r.outcome for r in results] == [Outcome.PASS] * 4, [r.code for r in results]
    assert [r.kind for r in results] == [
        CheckKind.LIVENESS,
        CheckKind.LIVENESS,
        CheckKind.AV_SYNC,
        CheckKind.LIVENESS,
    ]
    assert results[2].details["digits"] == "4071"
    assert [r.details["step"] for r in results] == [0, 1, 2, 3]


def test_random_challenges_pass_for_a_cooperative_person() -> None:
    rng = np.random.default_rng(11)
    for _ in range(10):
        challenge = make_challenge(rng, S)
        results = evaluate_challenge(challenge, _live_session(challenge), S)
        assert all(r.outcome is Outcome.PASS for r in results), [
            (r.details["step_kind"], r.code) for r in results
        ]


def test_still_photo_with_recording_fails() -> None:
    challenge = _fixed([StepKind.TURN_LEFT, StepKind.BLINK, StepKind.READ_DIGITS])
    live = _live_session(challenge)
    n = np.asarray(live.frame_ts).size
    still = Observations(
        live.frame_ts,
        np.full(n, 4.0),
        np.full(n, 0.29),
        np.full(n, 0.05),
        live.audio_ts,
        live.audio_energy,
        live.prompt_ts,
    )
    results = evaluate_challenge(challenge, still, S)
    assert [r.outcome for r in results] == [Outcome.FAIL] * 3
    assert [r.code for r in results] == ["no_head_turn", "no_blink", "no_mouth_movement"]


def test_responses_shifted_to_the_wrong_step_fail() -> None:
    """A replayed video of an earlier session does not follow this session's prompts."""
    challenge = _fixed([StepKind.TURN_LEFT, StepKind.TURN_RIGHT])
    replay = _live_session(_fixed([StepKind.TURN_RIGHT, StepKind.TURN_LEFT]))
    results = evaluate_challenge(challenge, replay, S)
    assert [r.code for r in results] == ["wrong_direction", "wrong_direction"]


def test_no_face_no_audio_and_missing_prompt_are_inconclusive() -> None:
    challenge = _fixed([StepKind.TURN_LEFT, StepKind.READ_DIGITS, StepKind.BLINK])
    live = _live_session(challenge)
    n = np.asarray(live.frame_ts).size
    empty = Observations(
        live.frame_ts,
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, np.nan),
        prompt_ts=live.prompt_ts[:2],
    )
    results = evaluate_challenge(challenge, empty, S)
    assert [r.outcome for r in results] == [Outcome.INCONCLUSIVE] * 3
    assert [r.code for r in results] == ["too_few_frames", "no_audio", "prompt_not_shown"]
