"""Spoken digits against the person's own digit templates: real FSDD takes and espeak-ng Russian."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from identity.checks import CheckKind, Outcome
from identity.voice.audio import SAMPLE_RATE_HZ, Pcm16k
from identity.voice.config import DigitSettings
from identity.voice.digits import (
    DigitTemplateError,
    DigitTemplates,
    check_spoken_digits,
    enrol_digits,
    prompt_window,
    split_by_pauses,
    templates_from_bytes,
    templates_to_bytes,
)
from identity.voice.digits_data import DigitTakes, espeak_digit_takes, espeak_string, fsdd_takes, join_takes

FSDD = Path(__file__).parents[2] / ".." / "shared" / "data" / "voice" / "fsdd"
ENROL_TAKES = 3
SETTINGS = DigitSettings()


@pytest.fixture(scope="module")
def george() -> tuple[DigitTemplates, DigitTakes]:
    """George's templates from his first takes of each digit, and his other takes (never enrolled)."""
    takes = fsdd_takes(FSDD)["george"]
    templates, results = enrol_digits({d: t[:ENROL_TAKES] for d, t in takes.items()}, SETTINGS)
    assert templates is not None, [r.to_dict() for r in results]
    assert results[-1].outcome is Outcome.PASS and results[-1].code == "enrolled"
    held_out = {d: t[ENROL_TAKES:] for d, t in takes.items() if len(t) > ENROL_TAKES}
    return templates, held_out


def _said(held_out: DigitTakes, digits: str, seed: int = 1) -> Pcm16k:
    return join_takes([held_out[d][0] for d in digits], np.random.default_rng(seed), max_pause_s=0.3)


def _string(held_out: DigitTakes) -> str:
    return "".join(sorted(held_out))[:5]


def test_correct_string_passes(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    said = _string(held_out)
    r = check_spoken_digits(_said(held_out, said), said, templates, SETTINGS)
    assert r.kind is CheckKind.SPOKEN_DIGITS
    assert r.outcome is Outcome.PASS, r.to_dict()
    assert r.details["recognised"] == said
    assert r.threshold == SETTINGS.max_margin and r.score is not None and r.score <= SETTINGS.max_margin
    assert r.model is not None and r.model.name == "digit_dtw"
    assert [d["expected"] for d in r.details["per_digit"]] == list(said)


def test_run_together_digits_pass(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    said = _string(held_out)[::-1]
    pcm = join_takes([held_out[d][0] for d in said], np.random.default_rng(2), max_pause_s=0.0)
    assert check_spoken_digits(pcm, said, templates, SETTINGS).outcome is Outcome.PASS


def test_one_digit_changed_fails(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    said = _string(held_out)
    shown = said[:2] + ("1" if said[2] != "1" else "2") + said[3:]
    r = check_spoken_digits(_said(held_out, said), shown, templates, SETTINGS)
    assert r.outcome is Outcome.FAIL, r.to_dict()
    assert r.code == "digits_mismatch"
    assert r.message == "The spoken digits did not match the digits shown."
    assert r.details["expected"] == shown
    assert r.score is not None and r.score > SETTINGS.max_margin
    worst = max(r.details["per_digit"], key=lambda d: d["margin"])
    assert worst["expected"] == shown[2]
    assert worst["closest_other_distance"] < worst["expected_distance"]


def test_different_string_fails(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    said = _string(held_out)
    shown = "".join(str((int(c) + 5) % 10) for c in said)
    r = check_spoken_digits(_said(held_out, said), shown, templates, SETTINGS)
    assert r.outcome is Outcome.FAIL and r.code == "digits_mismatch"


def test_silence_is_technical(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, _ = george
    r = check_spoken_digits(Pcm16k(np.zeros(3 * SAMPLE_RATE_HZ, np.float32)), "12345", templates, SETTINGS)
    assert r.outcome is Outcome.TECHNICAL and r.code == "no_signal"


def test_noise_only_is_inconclusive(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, _ = george
    noise = np.random.default_rng(0).normal(0, 0.05, 3 * SAMPLE_RATE_HZ).astype(np.float32)
    r = check_spoken_digits(Pcm16k(noise), "12345", templates, SETTINGS)
    assert r.outcome is Outcome.INCONCLUSIVE, r.to_dict()
    assert r.code in {"too_noisy", "too_little_speech", "unlike_templates"}


def test_noisy_speech_is_not_a_fail(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    said = _string(held_out)
    pcm = join_takes([held_out[d][0] for d in said], np.random.default_rng(3), 0.3, noise_snr_db=-5)
    assert check_spoken_digits(pcm, said, templates, SETTINGS).outcome is Outcome.INCONCLUSIVE


def test_one_digit_for_five_is_inconclusive(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    said = _string(held_out)
    r = check_spoken_digits(_said(held_out, said[:1]), said, templates, SETTINGS)
    assert r.outcome is Outcome.INCONCLUSIVE and r.code == "too_little_speech"


def test_bad_expected_is_technical(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    r = check_spoken_digits(_said(held_out, "0"), "12a", templates, SETTINGS)
    assert r.outcome is Outcome.TECHNICAL and r.code == "bad_expected"


def test_template_bytes_round_trip(george: tuple[DigitTemplates, DigitTakes]) -> None:
    templates, held_out = george
    back = templates_from_bytes(templates_to_bytes(templates))
    assert back.config == templates.config and back.counts() == templates.counts()
    for (d1, f1), (d2, f2) in zip(back.takes, templates.takes, strict=True):
        assert d1 == d2 and np.array_equal(f1, f2)
    said = _string(held_out)
    assert check_spoken_digits(_said(held_out, said), said, back, SETTINGS).outcome is Outcome.PASS
    with pytest.raises(DigitTemplateError):
        templates_from_bytes(b"KZVT" + templates_to_bytes(templates)[4:])
    with pytest.raises(DigitTemplateError):
        templates_from_bytes(templates_to_bytes(templates)[:-4])


def test_missing_digit_is_not_enrolled() -> None:
    takes = fsdd_takes(FSDD)["george"]
    templates, results = enrol_digits({d: t[:1] for d, t in takes.items() if d != "7"}, SETTINGS)
    assert templates is None
    assert results[-1].outcome is Outcome.INCONCLUSIVE and results[-1].code == "missing_digits"
    assert results[-1].details["takes_per_digit"]["7"] == 0


def test_split_by_pauses(george: tuple[DigitTemplates, DigitTakes]) -> None:
    _, held_out = george
    said = _string(held_out)[:3]
    pieces = split_by_pauses(_said(held_out, said, seed=4), 3, SETTINGS)
    assert pieces is not None and len(pieces) == 3
    for piece, d in zip(pieces, said, strict=True):
        assert abs(len(piece) - len(held_out[d][0])) < 0.25 * SAMPLE_RATE_HZ
    assert split_by_pauses(_said(held_out, said, seed=4), 6, SETTINGS) is None


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng/sox")
def test_russian_espeak_digits(tmp_path: Path) -> None:
    voice = "ru+m3"
    templates, results = enrol_digits(espeak_digit_takes(voice, [(140, 40), (180, 60)], tmp_path), SETTINGS)
    assert templates is not None, [r.to_dict() for r in results]
    said = "38052"
    pcm = espeak_string(said, voice, 160, 52, pauses=True, workdir=tmp_path)
    assert check_spoken_digits(pcm, said, templates, SETTINGS).outcome is Outcome.PASS
    assert check_spoken_digits(pcm, "38752", templates, SETTINGS).outcome is Outcome.FAIL


def test_prompt_window_cuts_the_digits_step() -> None:
    pcm = Pcm16k(np.arange(10 * SAMPLE_RATE_HZ, dtype=np.float32))
    got = prompt_window(pcm, audio_t0_s=1.0, prompt_t_s=3.0, window_s=2.0)
    assert got is not None and len(got) == 2 * SAMPLE_RATE_HZ and got[0] == 2 * SAMPLE_RATE_HZ
    tail = prompt_window(pcm, audio_t0_s=1.0, prompt_t_s=10.0, window_s=5.0)
    assert tail is not None and len(tail) == SAMPLE_RATE_HZ
    assert prompt_window(pcm, None, 3.0, 2.0) is None
    assert prompt_window(pcm, 1.0, float("nan"), 2.0) is None
    assert prompt_window(pcm, 1.0, 20.0, 2.0) is None
