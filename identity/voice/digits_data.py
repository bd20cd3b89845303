"""Digit recordings for developing and measuring the spoken-digit check (benchmark and tests only).

- FSDD (`../shared/data/voice/fsdd`): 5-digit strings of single-digit recordings joined with digital
  silence (runs of exact zeros); `fsdd_takes` cuts them back into single takes per speaker and digit,
  dropping byte-identical repeats so enrolment and test takes are distinct recordings.
- espeak-ng (Russian `ru`, Kazakh `kk`): synthetic "speakers" (voice variants) saying single digits
  and whole digit strings at several speeds and pitches, resampled to 16 kHz with sox. Generated into
  a directory the caller owns (a temp dir); never committed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from identity.voice.audio import SAMPLE_RATE_HZ, Pcm16k, resample_to_16k

DigitTakes = dict[str, list[Pcm16k]]
"""Takes of each digit "0".."9" (16 kHz mono float32)."""

_FSDD_MIN_GAP_S = 0.05  # digital-silence runs at least this long separate the joined digits
_ESPEAK_TIMEOUT_S = 30


def fsdd_takes(root: Path) -> dict[str, DigitTakes]:
    """{speaker: {digit: [takes]}} from FSDD strings named `<speaker>_<nn>_<digits>.flac`."""
    import soundfile as sf

    out: dict[str, DigitTakes] = defaultdict(lambda: defaultdict(list))
    seen: set[str] = set()
    for path in sorted(root.glob("*.flac")):
        speaker, _, digits = path.stem.split("_")
        x, rate = sf.read(str(path), dtype="float32")
        zero = np.concatenate([[0], (x == 0).astype(np.int8), [0]])
        edges = np.diff(zero)
        gaps = [
            (int(a), int(b))
            for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)
            if b - a >= _FSDD_MIN_GAP_S * rate and a > 0 and b < len(x)
        ]
        if len(gaps) != len(digits) - 1:
            raise ValueError(f"{path.name}: {len(gaps) + 1} pieces for {len(digits)} digits")
        bounds = [0, *[v for g in gaps for v in g], len(x)]
        for k, digit in enumerate(digits):
            piece = x[bounds[2 * k] : bounds[2 * k + 1]]
            key = hashlib.sha256(speaker.encode() + piece.tobytes()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            out[speaker][digit].append(resample_to_16k(piece, int(rate)))
    return {s: dict(d) for s, d in out.items()}


def join_takes(
    takes: Sequence[Pcm16k],
    rng: np.random.Generator,
    max_pause_s: float,
    noise_snr_db: float | None = None,
) -> Pcm16k:
    """Takes said in sequence: random pauses of 0..max_pause_s between them, 0.1-0.4 s of lead-in and
    tail, a faint dither (a real microphone never gives exact zeros), optional white noise at an SNR."""
    parts: list[npt.NDArray[np.float32]] = [np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE_HZ), np.float32)]
    for i, take in enumerate(takes):
        parts.append(np.asarray(take, dtype=np.float32))
        if i < len(takes) - 1:
            parts.append(np.zeros(int(rng.uniform(0.0, max_pause_s) * SAMPLE_RATE_HZ), np.float32))
    parts.append(np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE_HZ), np.float32))
    x = np.concatenate(parts)
    x = x + rng.normal(0.0, 10 ** (-70 / 20), len(x)).astype(np.float32)
    if noise_snr_db is not None:
        speech_power = float(np.mean(np.concatenate([np.asarray(t, np.float64) for t in takes]) ** 2))
        noise_power = speech_power / 10 ** (noise_snr_db / 10)
        x = x + rng.normal(0.0, np.sqrt(noise_power), len(x)).astype(np.float32)
    return Pcm16k(np.clip(x, -1.0, 1.0).astype(np.float32))


def espeak_available() -> bool:
    """True when espeak-ng and sox are on PATH."""
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def espeak_say(text: str, voice: str, speed_wpm: int, pitch: int, workdir: Path, name: str) -> Pcm16k:
    """espeak-ng speech of `text` (voice e.g. "ru+m3"), resampled to 16 kHz mono by sox."""
    import soundfile as sf

    raw = workdir / f"{name}.raw.wav"
    out = workdir / f"{name}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(raw), text],
        check=True,
        capture_output=True,
        timeout=_ESPEAK_TIMEOUT_S,
    )
    subprocess.run(
        ["sox", str(raw), "-r", str(SAMPLE_RATE_HZ), "-c", "1", "-b", "16", str(out)],
        check=True,
        capture_output=True,
        timeout=_ESPEAK_TIMEOUT_S,
    )
    x, rate = sf.read(str(out), dtype="float32")
    if rate != SAMPLE_RATE_HZ:
        raise ValueError(f"sox wrote {rate} Hz")
    return Pcm16k(np.asarray(x, dtype=np.float32))


def espeak_digit_takes(voice: str, styles: Sequence[tuple[int, int]], workdir: Path) -> DigitTakes:
    """One take of each digit per (speed_wpm, pitch) style."""
    return {
        d: [espeak_say(d, voice, s, p, workdir, f"{voice}_{d}_{s}_{p}".replace("+", "_")) for s, p in styles]
        for d in "0123456789"
    }


def espeak_string(digits: str, voice: str, speed_wpm: int, pitch: int, pauses: bool, workdir: Path) -> Pcm16k:
    """A digit string said in one go: with pauses (", " between digits) or run together (spaces)."""
    text = (", " if pauses else " ").join(digits)
    tag = "p" if pauses else "r"
    return espeak_say(
        text,
        voice,
        speed_wpm,
        pitch,
        workdir,
        f"{voice}_{digits}_{speed_wpm}_{pitch}_{tag}".replace("+", "_"),
    )
