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


def _voice() -> dict[str, list[np.ndarray]]:
    """Digit d is a 0.2 s tone of level (d + 1) / 20, so the audio tells which digit is being said."""
    return {str(d): [np.full(int(0.2 * AUDIO_RATE_HZ), (d + 1) / 20, np.float32)] for d in range(10)}


def _levels(p: Performer, start: float, end: float) -> list[float]:
    """Distinct audio levels (rounded) heard between start and end, in order."""
    out: list[float] = []
    for t in np.arange(start, end, 0.02):
        m = round(float(np.median(p.audio(float(t), 960))), 2)
        if m > 0.01 and (not out or out[-1] != m):
            out.append(m)
    return out


def test_a_person_with_a_digit_voice_says_the_prompted_digits() -> None:
    p = Performer(_clip(), Mode.GENUINE, np.random.default_rng(1), reaction_s=0.5, digit_voice=_voice())
    p.on_prompt(2.0, "read_digits", "3071")
    assert p.said == [(2.0, "3071")]
    assert p.audio(2.3, 960).std() < 0.01  # reading the prompt first
    assert _levels(p, 2.5, 5.0) == [0.2, 0.05, 0.4, 0.1]  # 3, 0, 7, 1 in order
    assert p.frame_index(2.6) >= 40  # the lips play the clip's speak segment meanwhile


def test_the_wrong_digits_attack_says_a_string_that_differs_in_every_digit() -> None:
    p = Performer(_clip(), Mode.WRONG_DIGITS, np.random.default_rng(2), reaction_s=0.0, digit_voice=_voice())
    p.on_prompt(1.0, "read_digits", "55555")
    said = p.said[0][1]
    assert len(said) == 5 and all(d != "5" for d in said)
    replay = Performer(_clip(), Mode.REPLAY, np.random.default_rng(2), digit_voice=_voice())
    replay.on_prompt(1.0, "read_digits", "123")
    assert replay.said == []  # a recording cannot answer


def test_labels_file_names_real_segments() -> None:
    labels = load_labels()
    assert {"grid_bbaf2n", "lp_d12", "lp_d3"} <= set(labels)
    for segments in labels.values():
        assert any(s.action is Action.LOOK for s in segments)
        assert all(0.0 <= s.start_s < s.end_s <= 12.0 for s in segments)
