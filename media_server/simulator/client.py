"""A WHIP client on aiortc that plays a Performer: a person (or an attack) answering the prompts.

The page's protocol, as a phone follows it: publish camera + microphone, send the location on the
"kuzet" data channel, and for each {"type": "prompt"} message acknowledge it and act (the Performer
starts the labelled answer after its reaction delay); the session ends with {"type": "outcome"}.
Frames are letterboxed into the requested size at the requested frame rate (a phone camera).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from media_server.simulator.performer import AUDIO_RATE_HZ, Clip, Mode, Performer, Rgb, load_clip, load_labels
from media_server.station_client import WhipClient

VIDEO_CLOCK_HZ = 90000
AUDIO_PTIME_S = 0.02
# Screen-attack frames are costly to make: keep the most recent ones per clip frame.
_SCREEN_CACHE = 64
# Letterboxed frames, reused while resting on a look segment (played back and forth).
_FRAME_CACHE = 96


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """What the simulated phone camera sends: frame size in pixels and frame rate."""

    width: int
    height: int
    fps: float


def letterbox(rgb: Rgb, width: int, height: int) -> Rgb:
    """Scale to fit width x height, keeping the aspect ratio, on a mid-grey background."""
    h, w = rgb.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(int(w * scale), 1), max(int(h * scale), 1)
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((height, width, 3), 96, np.uint8)
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = resized
    return out


class _Clock:
    """Session time on the client: seconds since the first frame was asked for."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def now(self) -> float:
        if self.t0 is None:
            self.t0 = time.monotonic()
        return time.monotonic() - self.t0


class PerformerVideo(MediaStreamTrack):  # type: ignore[misc]
    """Video frames of a Performer at `camera.fps`, paced in real time."""

    kind = "video"

    def __init__(self, performer: Performer, camera: CameraSpec, clock: _Clock, seed: int) -> None:
        super().__init__()
        self._performer = performer
        self._camera = camera
        self._clock = clock
        self._n = 0
        self._screen: OrderedDict[int, Rgb] = OrderedDict()
        self._boxed: OrderedDict[int, Rgb] = OrderedDict()
        self._seed = seed

    def _source(self, index: int) -> Rgb:
        rgb = self._performer.clip.frames[index]
        if self._performer.mode is not Mode.SCREEN:
            return rgb
        cached = self._screen.get(index)
        if cached is None:
            from identity.pad.attacks import screen_replay

            # One screen and one camera for the whole session: the same random draw on every frame.
            cached = screen_replay(rgb, np.random.default_rng(self._seed))
            self._screen[index] = cached
            if len(self._screen) > _SCREEN_CACHE:
                self._screen.popitem(last=False)
        return cached

    async def recv(self) -> Any:
        fps = self._camera.fps
        start = self._clock.now() if self._n == 0 else None
        if start is None:
            due = self._n / fps
            wait = due - self._clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
        t = self._clock.now()
        index = self._performer.frame_index(t)
        rgb = self._boxed.get(index)
        if rgb is None:
            rgb = await asyncio.to_thread(
                lambda: letterbox(self._source(index), self._camera.width, self._camera.height)
            )
            self._boxed[index] = rgb
            if len(self._boxed) > _FRAME_CACHE:
                self._boxed.popitem(last=False)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = int(round(self._n * VIDEO_CLOCK_HZ / fps))
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        self._n += 1
        return frame


class PerformerAudio(MediaStreamTrack):  # type: ignore[misc]
    """20 ms mono s16 frames at 48 kHz of a Performer's audio, paced in real time."""

    kind = "audio"

    def __init__(self, performer: Performer, clock: _Clock) -> None:
        super().__init__()
        self._performer = performer
        self._clock = clock
        self._n = 0

    async def recv(self) -> Any:
        samples = int(AUDIO_RATE_HZ * AUDIO_PTIME_S)
        if self._n:
            wait = self._n * AUDIO_PTIME_S - self._clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            self._clock.now()
        pcm = self._performer.audio(self._n * AUDIO_PTIME_S, samples)
        data = (np.clip(pcm, -1, 1) * 32767).astype("<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts = self._n * samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE_HZ)
        self._n += 1
        return frame


@dataclass(slots=True)
class SessionRun:
    """What the client saw: the outcome message, prompts (client time, step), feedback codes."""

    outcome: dict[str, Any] | None
    prompts: list[tuple[float, str]]
    feedback: list[str]


async def run_session(
    url: str,
    credential: str,
    performer: Performer,
    camera: CameraSpec,
    *,
    timeout_s: float = 120.0,
    loopback_only: bool = True,
    location: tuple[float, float, float] | None = (43.2389, 76.8897, 25.0),
    seed: int = 0,
) -> SessionRun:
    """One simulated check-in over WHIP; returns when the outcome arrives (or after timeout_s)."""
    clock = _Clock()
    video = PerformerVideo(performer, camera, clock, seed)
    audio = PerformerAudio(performer, clock)
    client = WhipClient(url, credential, loopback_only=loopback_only)
    run = SessionRun(None, [], [])
    try:
        await client.publish([video, audio])
        with contextlib.suppress(TimeoutError):
            run.outcome = await asyncio.wait_for(_follow(client, performer, clock, location, run), timeout_s)
    finally:
        await client.close()
        video.stop()
        audio.stop()
    return run


async def _follow(
    client: WhipClient,
    performer: Performer,
    clock: _Clock,
    location: tuple[float, float, float] | None,
    run: SessionRun,
) -> dict[str, Any]:
    await client.channel_open.wait()
    if location is not None:
        client.send({"type": "location", "lat": location[0], "lon": location[1], "accuracy_m": location[2]})
    while True:
        message = await client.messages.get()
        kind = message.get("type")
        if kind == "prompt":
            step = str(message.get("step", ""))
            run.prompts.append((clock.now(), step))
            performer.on_prompt(clock.now(), step, str(message.get("digits") or ""))
            client.send({"type": "ack", "step": step, "index": message.get("index")})
        elif kind == "feedback":
            run.feedback.append(str(message.get("code")))
        elif kind == "outcome":
            return message


@functools.lru_cache(maxsize=4)
def _cached_clip(video_dir: str, name: str) -> Clip:
    return load_clip(Path(video_dir) / f"{name}.mp4", load_labels()[name])


def play_session(
    url: str,
    credential: str,
    video_dir: str,
    clip: str,
    mode: str,
    camera: tuple[int, int, float],
    seed: int,
    foreign: str | None = None,
    reaction_s: float | None = None,
    digit_voice: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """One simulated session, blocking; meant for a separate (spawned) process, as a phone is its own
    device: {"outcome", "feedback", "prompts"}. `clip` and `foreign` name clips in video_dir (decoded
    once per process); reaction_s defaults to a random 0.4-1.0 s; `digit_voice` (takes of each digit,
    mono float32 at 48 kHz) lets the person say the prompted digits."""
    rng = np.random.default_rng(seed)
    performer = Performer(
        _cached_clip(video_dir, clip),
        Mode(mode),
        rng,
        reaction_s=float(rng.uniform(0.4, 1.0)) if reaction_s is None else reaction_s,
        foreign_audio=_cached_clip(video_dir, foreign).audio if foreign else None,
        digit_voice=digit_voice,
    )
    run = asyncio.run(run_session(url, credential, performer, CameraSpec(*camera), seed=seed))
    return {"outcome": run.outcome, "feedback": run.feedback, "prompts": run.prompts, "said": performer.said}
