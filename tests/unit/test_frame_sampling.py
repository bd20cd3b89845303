"""Per-window frame budgets (issue 14): a long session keeps each challenge window at the camera's rate."""

from __future__ import annotations

import numpy as np

from identity.liveness.config import LivenessSettings
from media_server.settings import MediaSettings
from media_server.webrtc.analysis import FeedbackCode
from media_server.webrtc.challenge import plan_prompts, plan_windows, session_challenge
from media_server.webrtc.sampling import FeedbackDebouncer, FrameSampler


def _run(sampler: FrameSampler[int], fps: float, seconds: float, jitter_s: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    for i in range(int(seconds * fps)):
        t = i / fps + (float(rng.uniform(-jitter_s, jitter_s)) if jitter_s else 0.0)
        if sampler.wants(t):
            sampler.keep(t, i)


def _rate(frames: list[tuple[float, int]], start: float, end: float) -> float:
    return sum(1 for t, _ in frames if start <= t <= end) / (end - start)


def test_default_challenge_windows_keep_the_camera_rate_to_the_end() -> None:
    media, liveness = MediaSettings(), LivenessSettings()
    challenge = session_challenge(None, liveness)
    lead_in, steps = plan_prompts(challenge)
    windows = plan_windows(0.5, lead_in, steps, liveness.baseline_s)
    for fps, expected in ((15.0, 15.0), (24.0, 15.0), (30.0, 15.0), (10.0, 10.0)):
        sampler: FrameSampler[int] = FrameSampler(
            media.sample_every_s, media.window_max_fps, media.max_sampled_frames
        )
        for start, end in windows:
            sampler.add_window(start, end)
        _run(sampler, fps, windows[-1][1] + 2.0, jitter_s=0.25 / fps)
        assert sampler.refused == 0
        for start, end in windows:  # the last window as well as the first: nothing is thinned later
            assert abs(_rate(sampler.frames, start, end) - expected) <= 1.0, (fps, start, end)
        outside = _rate(sampler.frames, 0.0, windows[0][0])
        assert outside <= 1 / media.sample_every_s + 1


def test_cap_releases_frames_outside_windows_first_and_bounds_memory() -> None:
    sampler: FrameSampler[int] = FrameSampler(0.1, 15.0, 40)
    sampler.add_window(5.0, 7.0)
    _run(sampler, 30.0, 10.0)
    assert len(sampler.frames) == 40
    in_window = [t for t, _ in sampler.frames if 5.0 <= t <= 7.0]
    assert len(in_window) >= 29  # the whole window survived at ~15 fps
    assert sampler.released > 0
    taken = sampler.take()
    assert len(taken) == 40 and sampler.frames == []
    assert [t for t, _ in taken] == sorted(t for t, _ in taken)


def test_feedback_needs_a_sustained_problem() -> None:
    deb = FeedbackDebouncer(hold_s=2.0)
    sent = []
    # Haar misses the face on single frames (a turned head): nothing is sent.
    for i in range(39):  # ends on a frame that saw the face
        t = i * 0.5
        code = FeedbackCode.FACE_NOT_VISIBLE if i % 3 == 0 else FeedbackCode.OK
        out = deb.feed(t, code)
        if out is not None:
            sent.append(out)
    assert sent == []
    # The face really leaves for 3 s: one message after 2 s, then OK when it is back.
    sent = [deb.feed(20.0 + i * 0.5, FeedbackCode.FACE_NOT_VISIBLE) for i in range(7)]
    assert [s for s in sent if s is not None] == [FeedbackCode.FACE_NOT_VISIBLE]
    assert sent.index(FeedbackCode.FACE_NOT_VISIBLE) == 4
    assert deb.feed(24.0, FeedbackCode.OK) is FeedbackCode.OK
    assert deb.feed(24.5, FeedbackCode.OK) is None
