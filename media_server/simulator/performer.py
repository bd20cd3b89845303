"""A compliant person (or an attacker) played from labelled segments of real face videos.

`Performer` maps session time to a frame of a clip and a slice of its audio: it rests on a "look"
segment (played forward and back, so there is no cut), and when a prompt arrives it plays the
segment that answers it (blink, turn_left, turn_right, speak) after a human reaction delay, then rests
again. Attack behaviours replace that policy. Pure numpy; clips are decoded by `load_clip`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

LABELS_CSV = Path(__file__).with_name("labels.csv")
AUDIO_RATE_HZ = 48000

Rgb = npt.NDArray[np.uint8]


class Action(StrEnum):
    """What a labelled segment shows. Stored values are the labels file's."""

    LOOK = "look"
    BLINK = "blink"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    SPEAK = "speak"


# The challenge step a prompt names -> the action that answers it.
ANSWERS: dict[str, Action] = {
    "blink": Action.BLINK,
    "turn_left": Action.TURN_LEFT,
    "turn_right": Action.TURN_RIGHT,
    "read_digits": Action.SPEAK,
}


class Mode(StrEnum):
    """How the simulated client behaves."""

    GENUINE = "genuine"  # a live person answering each prompt
    STILL = "still"  # one frame, held (a photo or an injected still)
    REPLAY = "replay"  # the clip played straight through in a loop, ignoring the prompts
    SCREEN = "screen"  # answers the prompts, but every frame is a face filmed off a screen
    WRONG_DIGITS = "wrong_digits"  # answers, but speaks words other than the prompted digits
    FOREIGN_AUDIO = "foreign_audio"  # answers with the lips, while another person's speech is played


@dataclass(frozen=True, slots=True)
class Segment:
    """[start_s, end_s) of a clip showing `action`."""

    clip: str
    action: Action
    start_s: float
    end_s: float


def load_labels(path: Path = LABELS_CSV) -> dict[str, list[Segment]]:
    """Segments per clip name from the labels CSV (lines starting with '#' are comments)."""
    rows = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    out: dict[str, list[Segment]] = {}
    for row in csv.DictReader(rows):
        seg = Segment(row["clip"], Action(row["action"]), float(row["start_s"]), float(row["end_s"]))
        out.setdefault(seg.clip, []).append(seg)
    return out


@dataclass(slots=True)
class Clip:
    """A decoded clip: frames at `fps`, mono float32 audio at AUDIO_RATE_HZ (empty without audio)."""

    name: str
    frames: list[Rgb]
    fps: float
    audio: npt.NDArray[np.float32]
    segments: list[Segment]

    def actions(self) -> set[Action]:
        """The actions this clip's labels cover."""
        return {s.action for s in self.segments}

    def segment(self, action: Action, rng: np.random.Generator) -> Segment:
        """One labelled segment of `action` (random when there are several)."""
        choices = [s for s in self.segments if s.action is action]
        if not choices:
            raise KeyError(f"{self.name} has no {action.value} segment")
        return choices[int(rng.integers(len(choices)))]


def load_clip(path: Path, segments: list[Segment]) -> Clip:
    """Decode every frame (rgb24) and the audio (mono, 48 kHz float32) of a video file."""
    import av

    frames: list[Rgb] = []
    audio_parts: list[npt.NDArray[np.float32]] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    with av.open(str(path)) as container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    audio_parts.append(out.to_ndarray().reshape(-1).astype(np.float32))
    audio = np.concatenate(audio_parts) if audio_parts else np.zeros(0, np.float32)
    return Clip(path.stem, frames, fps, audio, segments)


def _pingpong(x: float, n: int) -> int:
    """Index into n frames played forward then backward, for x frames of elapsed time."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    k = int(x) % period
    return k if k < n else period - k


@dataclass(slots=True)
class Performer:
    """Session time -> clip frame index and audio, for one behaviour (`mode`).

    `reaction_s` is the delay between a prompt arriving and the answer starting (a person reads the
    prompt first). `foreign_audio` is another clip's speech, for Mode.FOREIGN_AUDIO. `digit_voice` holds
    takes of each digit "0".."9" (mono float32 at AUDIO_RATE_HZ) of one speaker: with it, a read-digits
    prompt is answered by saying the prompted digits in that voice (Mode.WRONG_DIGITS: a string that
    differs in every digit), while the video plays the clip's speak segment if it has one.
    """

    clip: Clip
    mode: Mode
    rng: np.random.Generator
    reaction_s: float = 0.6
    foreign_audio: npt.NDArray[np.float32] | None = None
    digit_voice: dict[str, list[npt.NDArray[np.float32]]] | None = None
    _rest: Segment | None = None
    _rest_t0: float = 0.0
    _act: Segment | None = None
    _act_t0: float = 0.0
    answered: list[tuple[float, str]] = field(default_factory=list)
    said: list[tuple[float, str]] = field(default_factory=list)
    _speech: npt.NDArray[np.float32] | None = None
    _speech_t0: float = 0.0

    def __post_init__(self) -> None:
        self._rest = self.clip.segment(Action.LOOK, self.rng)

    def on_prompt(self, t_s: float, step: str, digits: str = "") -> None:
        """A prompt arrived at session time t_s; a following mode schedules its answer."""
        if self.mode in (Mode.STILL, Mode.REPLAY):
            return
        if step == "read_digits" and digits and self.digit_voice and self.mode is not Mode.FOREIGN_AUDIO:
            said = digits
            if self.mode is Mode.WRONG_DIGITS:
                said = "".join(str((int(d) + int(self.rng.integers(1, 10))) % 10) for d in digits)
            self._speech = self._say(said)
            self._speech_t0 = t_s + self.reaction_s
            self.said.append((t_s, said))
        action = ANSWERS.get(step)
        if action is None or action not in self.clip.actions():
            return
        self._act = self.clip.segment(action, self.rng)
        self._act_t0 = t_s + self.reaction_s
        self.answered.append((t_s, step))

    def _current(self, t_s: float) -> tuple[Segment, float] | None:
        """The segment playing at t_s and the time into it, or None while resting."""
        act = self._act
        if act is not None and self._act_t0 <= t_s < self._act_t0 + (act.end_s - act.start_s):
            return act, t_s - self._act_t0
        return None

    def frame_index(self, t_s: float) -> int:
        """The clip frame shown at session time t_s."""
        fps, n = self.clip.fps, len(self.clip.frames)
        if self.mode is Mode.REPLAY:
            return int(t_s * fps) % n
        rest = self._rest
        assert rest is not None
        if self.mode is Mode.STILL:
            return min(int(rest.start_s * fps), n - 1)
        playing = self._current(t_s)
        if playing is not None:
            seg, into = playing
            return min(int((seg.start_s + into) * fps), n - 1)
        if self._act is not None and t_s >= self._act_t0:
            # Rest again where a person would: from the start of a look segment.
            self._rest_t0 = self._act_t0 + (self._act.end_s - self._act.start_s)
            self._rest = self.clip.segment(Action.LOOK, self.rng)
            self._act = None
        first = int(rest.start_s * fps)
        count = max(int((rest.end_s - rest.start_s) * fps), 1)
        return min(first + _pingpong((t_s - self._rest_t0) * fps, count), n - 1)

    def _say(self, digits: str) -> npt.NDArray[np.float32]:
        """One take per digit (random) with 0.1-0.35 s pauses between them, as a person reads a string."""
        assert self.digit_voice is not None
        parts: list[npt.NDArray[np.float32]] = []
        for i, d in enumerate(digits):
            takes = self.digit_voice[d]
            parts.append(takes[int(self.rng.integers(len(takes)))])
            if i < len(digits) - 1:
                parts.append(np.zeros(int(self.rng.uniform(0.1, 0.35) * AUDIO_RATE_HZ), np.float32))
        return np.concatenate(parts).astype(np.float32)

    def audio(self, t_s: float, samples: int) -> npt.NDArray[np.float32]:
        """`samples` mono float32 samples at AUDIO_RATE_HZ starting at session time t_s."""
        noise = (self.rng.standard_normal(samples) * 1e-3).astype(np.float32)  # room noise, not silence
        if self._speech is not None and t_s + samples / AUDIO_RATE_HZ > self._speech_t0:
            start = int(round((t_s - self._speech_t0) * AUDIO_RATE_HZ))
            if start < self._speech.size:
                out = np.zeros(samples, np.float32)
                lo = max(start, 0)
                chunk = self._speech[lo : start + samples]
                out[lo - start : lo - start + chunk.size] = chunk
                return out + noise
        if self.mode is Mode.REPLAY and self.clip.audio.size:
            start = int(t_s * AUDIO_RATE_HZ) % self.clip.audio.size
            return _slice(self.clip.audio, start, samples) + noise
        playing = self._current(t_s)
        if playing is None or playing[0].action is not Action.SPEAK:
            return noise
        seg, into = playing
        source = self.clip.audio
        if self.mode is Mode.FOREIGN_AUDIO and self.foreign_audio is not None:
            source = self.foreign_audio
        if not source.size:
            return noise
        start = int((seg.start_s + into) * AUDIO_RATE_HZ)
        return _slice(source, start, samples) + noise


def _slice(audio: npt.NDArray[np.float32], start: int, samples: int) -> npt.NDArray[np.float32]:
    out = np.zeros(samples, np.float32)
    chunk = audio[start : start + samples] if start < audio.size else audio[:0]
    out[: chunk.size] = chunk
    return out
