"""The simulated person: answers prompts with the labelled segment after its reaction delay."""

from __future__ import annotations

import numpy as np

from media_server.simulator.performer import (
    AUDIO_RATE_HZ,
    Action,
    Clip,
    Mode,
    Performer,
    Segment,
    load_labels,
)

FPS = 10.0


def _clip() -> Clip:
    segments = [
        Segment("c", Action.LOOK, 0.0, 1.0),
        Segment("c", Action.BLINK, 2.0, 3.0),
        Segment("c", Action.SPEAK, 4.0, 5.0),
    ]
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(60)]
    audio = np.ones(6 * AUDIO_RATE_HZ, np.float32) * 0.5
    return Clip("c", frames, FPS, audio, segments)


def test_genuine_rests_then_answers_the_prompt_after_its_reaction_time() -> None:
    p = Performer(_clip(), Mode.GENUINE, np.random.default_rng(0), reaction_s=0.5)
    rest = [p.frame_index(t) for t in np.arange(0.0, 3.0, 0.1)]
    assert max(rest) < 10  # only the look segment (frames 0-9), back and forth
    p.on_prompt(3.0, "blink")
    assert p.frame_index(3.4) < 10  # still reading the prompt
    answer = [p.frame_index(t) for t in np.arange(3.5, 4.45, 0.1)]
    assert answer[0] == 20 and answer[-1] == 29  # the blink segment, frames 20-29, in order
    assert p.frame_index(4.6) < 10  # resting again
    assert p.audio(3.6, 960).std() < 0.01  # no speech while blinking
    p.on_prompt(5.0, "read_digits")
    assert abs(float(p.audio(5.6, 960).mean()) - 0.5) < 0.01  # the clip's speech


def test_attacks_ignore_or_misplay_the_prompts() -> None:
    still = Performer(_clip(), Mode.STILL, np.random.default_rng(0))
    still.on_prompt(1.0, "blink")
    assert {still.frame_index(t) for t in np.arange(0.0, 4.0, 0.1)} == {0}
    replay = Performer(_clip(), Mode.REPLAY, np.random.default_rng(0))
    replay.on_prompt(1.0, "blink")
    assert [replay.frame_index(t) for t in (0.0, 1.55, 2.0)] == [0, 15, 20]  # the clip as recorded
    foreign = np.full(6 * AUDIO_RATE_HZ, -0.25, np.float32)
    dubbed = Performer(
        _clip(), Mode.FOREIGN_AUDIO, np.random.default_rng(0), reaction_s=0.0, foreign_audio=foreign
    )
    dubbed.on_prompt(0.0, "read_digits")
    assert abs(float(dubbed.audio(0.1, 960).mean()) + 0.25) < 0.01


def test_labels_file_names_real_segments() -> None:
    labels = load_labels()
    assert {"grid_bbaf2n", "lp_d12", "lp_d3"} <= set(labels)
    for segments in labels.values():
        assert any(s.action is Action.LOOK for s in segments)
        assert all(0.0 <= s.start_s < s.end_s <= 12.0 for s in segments)
