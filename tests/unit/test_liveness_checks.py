"""Active-liveness checks on synthetic landmark-derived series with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from identity.checks import CheckKind, Outcome
from identity.liveness.checks import TurnDirection, check_av_sync, check_blink, check_head_turn
from identity.liveness.config import LivenessSettings

S = LivenessSettings()
FPS = 15.0


def _ts(duration_s: float, fps: float = FPS) -> np.ndarray:
    return np.arange(0.0, duration_s, 1.0 / fps)


def _turn(ts: np.ndarray, start: float, peak_deg: float, baseline: float = 3.0) -> np.ndarray:
    """Yaw at baseline, ramping over 0.5 s from `start` to baseline + peak and holding."""
    return baseline + peak_deg * np.clip((ts - start) / 0.5, 0.0, 1.0)


def test_head_turn_left_passes_and_reports_latency() -> None:
    ts = _ts(6.0)
    result = check_head_turn(_turn(ts, 2.6, 25.0), ts, 2.0, TurnDirection.LEFT, S)
    assert result.outcome is Outcome.PASS
    assert result.kind is CheckKind.LIVENESS
    assert result.score == pytest.approx(25.0, abs=0.01)
    assert result.threshold == S.head_turn_min_deg
    assert 0.6 < result.details["response_latency_s"] < 1.2


def test_head_turn_other_way_fails_as_wrong_direction() -> None:
    ts = _ts(6.0)
    result = check_head_turn(_turn(ts, 2.6, 25.0), ts, 2.0, TurnDirection.RIGHT, S)
    assert result.outcome is Outcome.FAIL
    assert result.code == "wrong_direction"


def test_head_already_turned_before_prompt_does_not_count() -> None:
    ts = _ts(6.0)
    yaw = np.full(ts.size, 30.0)  # held turned all along: no change relative to the baseline
    result = check_head_turn(yaw, ts, 2.0, TurnDirection.LEFT, S)
    assert result.outcome is Outcome.FAIL
    assert result.code == "no_head_turn"


def test_head_turn_after_the_window_fails() -> None:
    ts = _ts(10.0)
    result = check_head_turn(_turn(ts, 2.0 + S.motion_window_s + 0.5, 30.0), ts, 2.0, TurnDirection.LEFT, S)
    assert result.outcome is Outcome.FAIL


def test_small_head_turn_goes_to_review() -> None:
    ts = _ts(6.0)
    result = check_head_turn(_turn(ts, 2.5, S.head_turn_min_deg - 2.0), ts, 2.0, TurnDirection.LEFT, S)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.code == "head_turn_borderline"


def test_a_quick_turn_lost_in_a_starved_window_is_not_a_fail() -> None:
    """A 0.16 s flick past the threshold (lp_d12's real turns) between sparse frames: review, not FAIL."""
    ts = _ts(6.0)
    yaw = np.full(ts.size, 3.0)
    flick = (ts > 3.0) & (ts < 3.16)
    yaw[flick] = 25.0
    keep = np.ones(ts.size, bool)
    keep[(ts > 2.2) & (ts < 4.5)] = False  # the server stalled: 2.3 s without frames
    keep[np.flatnonzero((ts > 2.2) & (ts < 4.5))[::8]] = True  # ...but a few got through
    sparse = check_head_turn(yaw[keep], ts[keep], 2.0, TurnDirection.LEFT, S)
    assert sparse.outcome is Outcome.INCONCLUSIVE and sparse.code == "frame_rate_too_low"
    # Densely seen, the flick is a turn; densely seen with no turn at all is still a FAIL.
    assert check_head_turn(yaw, ts, 2.0, TurnDirection.LEFT, S).outcome is Outcome.PASS
    still = check_head_turn(np.full(ts.size, 3.0), ts, 2.0, TurnDirection.LEFT, S)
    assert still.outcome is Outcome.FAIL and still.code == "no_head_turn"


def test_head_turn_without_face_frames_is_inconclusive() -> None:
    ts = _ts(6.0)
    yaw = _turn(ts, 2.6, 25.0)
    yaw[ts > 2.0] = np.nan
    result = check_head_turn(yaw, ts, 2.0, TurnDirection.LEFT, S)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.code == "too_few_frames"


def _ear_with_blink(ts: np.ndarray, blink_at: float | None, depth: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(0)
    ear = 0.3 + rng.normal(0, 0.005, ts.size)
    if blink_at is not None:
        ear[(ts >= blink_at) & (ts < blink_at + 0.2)] = depth
    return ear


def test_blink_dip_passes() -> None:
    ts = _ts(6.0)
    result = check_blink(_ear_with_blink(ts, 3.0), ts, 2.0, S)
    assert result.outcome is Outcome.PASS
    assert result.score is not None and result.score < 0.5


def test_open_eyes_fail_blink() -> None:
    ts = _ts(6.0)
    result = check_blink(_ear_with_blink(ts, None), ts, 2.0, S)
    assert result.outcome is Outcome.FAIL
    assert result.code == "no_blink"


def test_blink_before_prompt_does_not_count() -> None:
    ts = _ts(6.0)
    result = check_blink(_ear_with_blink(ts, 1.5), ts, 2.0, S)
    assert result.outcome is Outcome.FAIL


def test_blink_at_two_frames_per_second_is_inconclusive() -> None:
    ts = _ts(6.0, fps=2.0)
    result = check_blink(_ear_with_blink(ts, 3.0), ts, 2.0, S)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.code == "frame_rate_too_low"


def _speech(duration_s: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Audio energy at 50 Hz with syllable-like bursts, and its smooth envelope at 50 Hz."""
    rng = np.random.default_rng(seed)
    at = np.arange(0.0, duration_s, 0.02)
    # Syllables and pauses of random length (speech is not periodic).
    bounds = np.cumsum(rng.uniform(0.1, 0.35, int(duration_s / 0.1) + 1))
    syllables = (np.searchsorted(bounds, at) % 2 == 0).astype(float)
    envelope = np.convolve(syllables, np.ones(5) / 5, mode="same")
    energy = envelope * (0.8 + 0.4 * rng.random(at.size)) + 0.02
    return at, energy, envelope


def test_mouth_following_speech_passes_even_with_a_lag() -> None:
    at, energy, envelope = _speech(5.0, 1)
    mt = _ts(5.0)
    noise = np.random.default_rng(3).normal(0, 0.03, mt.size)  # landmark jitter
    mouth = 0.05 + 0.3 * np.interp(mt - 0.12, at, envelope) + noise  # video 120 ms behind the audio
    result = check_av_sync(mouth, mt, energy, at, S)
    assert result.outcome is Outcome.PASS
    assert result.kind is CheckKind.AV_SYNC
    assert result.score is not None and result.score >= S.av_pass_corr


@pytest.mark.parametrize("seed", range(10))
def test_mouth_moving_unrelated_to_speech_does_not_pass(seed: int) -> None:
    at, energy, _ = _speech(S.read_digits_window_s, seed)
    _, _, other = _speech(S.read_digits_window_s, seed + 1000)
    mt = _ts(S.read_digits_window_s)
    mouth = 0.05 + 0.3 * np.interp(mt, at, other)  # someone else's speech rhythm (a dubbed recording)
    result = check_av_sync(mouth, mt, energy, at, S)
    assert result.outcome is not Outcome.PASS
    assert result.score is not None and result.score < S.av_pass_corr


def test_still_photo_with_played_recording_fails() -> None:
    at, energy, _ = _speech(5.0, 2)
    mt = _ts(5.0)
    result = check_av_sync(np.full(mt.size, 0.04), mt, energy, at, S)
    assert result.outcome is Outcome.FAIL
    assert result.code == "no_mouth_movement"


def test_no_audio_is_inconclusive() -> None:
    mt = _ts(5.0)
    result = check_av_sync(np.full(mt.size, 0.04), mt, [], [], S)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.code == "no_audio"


def test_silence_is_inconclusive() -> None:
    at = np.arange(0.0, 5.0, 0.02)
    mt = _ts(5.0)
    result = check_av_sync(0.05 + 0.1 * np.sin(mt * 5), mt, np.full(at.size, 0.01), at, S)
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.code == "no_speech"


def _swing(ts: np.ndarray, first_deg: float, then_deg: float, start: float = 2.6) -> np.ndarray:
    """Yaw 3 degrees at rest; 0.6 s towards first_deg, back, then 0.6 s towards then_deg (a both-ways swing)."""
    yaw = np.full(ts.size, 3.0)
    yaw[(ts >= start) & (ts < start + 0.6)] += first_deg
    yaw[(ts >= start + 1.2) & (ts < start + 1.8)] += then_deg
    return yaw


def test_head_swinging_both_ways_passes_only_the_way_it_went_first() -> None:
    ts = _ts(6.0)
    both = _swing(ts, 25.0, -25.0)  # own left first, then right
    assert check_head_turn(both, ts, 2.0, TurnDirection.LEFT, S).outcome is Outcome.PASS
    wrong = check_head_turn(both, ts, 2.0, TurnDirection.RIGHT, S)
    assert wrong.outcome is Outcome.FAIL and wrong.code == "wrong_direction"
    assert wrong.details["first_move_s"] == pytest.approx(0.6, abs=0.1)


def test_small_opposite_twitch_before_the_turn_goes_to_review() -> None:
    ts = _ts(6.0)
    yaw = _swing(ts, -11.0, 25.0)  # a clear but small move the other way, then the prompted turn
    result = check_head_turn(yaw, ts, 2.0, TurnDirection.LEFT, S)
    assert result.outcome is Outcome.INCONCLUSIVE and result.code == "direction_unclear"
    # Yaw noise under head_turn_first_deg does not decide anything.
    assert check_head_turn(_swing(ts, -6.0, 25.0), ts, 2.0, TurnDirection.LEFT, S).outcome is Outcome.PASS


def test_blink_at_a_phones_fifteen_fps_is_judged() -> None:
    ts = _ts(6.0, 15.0)
    ear = np.full(ts.size, 0.32)
    ear[(ts >= 3.0) & (ts < 3.15)] = 0.12  # a 150 ms blink: two or three frames at 15 fps
    result = check_blink(ear, ts, 2.0, S)
    assert result.outcome is Outcome.PASS, result.details
