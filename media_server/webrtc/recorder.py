"""Re-encoding session recorder (the fallback): decoded frames -> libx264 + AAC in a thread.

The normal path records the received bitstream without re-encoding (`media_server.webrtc.remux`). This
recorder is used only where that is impossible (a codec Matroska cannot carry, an aiortc without the
receiver hooks) or when `media.record_mode` is "reencode". Its cost is bounded by its queue
(`record_queue_s`): when the encoder lags, frames are dropped, and every run of dropped frames is a
`recording_gap` event; its thread CPU time is counted (`recording_cpu_ms`). It writes a fragmented MP4
(playable while truncated) and also turns the received audio into 16 kHz mono float32 for the voice checks.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

log = logging.getLogger("kuzet.webrtc")

VIDEO_TIME_BASE = Fraction(1, 90000)
PCM16K_RATE = 16000
# Before the file header is written every expected stream must be known (MP4 cannot add one later).
_HOLD_FOR_STREAMS_S = 2.0
# An audio arrival gap longer than this is a real gap (loss), not jitter: the timeline jumps.
_AUDIO_GAP_S = 0.25
_STOP = object()
# Dropped frames closer together than this are one gap.
_DROP_RUN_JOIN_S = 0.5


class Pcm16k:
    """Decoded audio frames of a session as one float32 mono 16 kHz array (what voice and AV-sync read),
    and the session time of the first frame. Both recorders collect audio through it."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=PCM16K_RATE)
        self._parts: list[npt.NDArray[np.float32]] = []
        self.t0_s: float | None = None

    def add(self, t_s: float, frame: Any) -> None:
        """One decoded av.AudioFrame received at session time `t_s`."""
        if self.t0_s is None:
            self.t0_s = t_s
        self._take(self._resampler.resample(frame))

    def flush(self) -> None:
        """The resampler's last samples, at the end of the stream."""
        self._take(self._resampler.resample(None))

    def signal(self) -> npt.NDArray[np.float32]:
        """Everything collected so far (empty when no audio came)."""
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)

    def _take(self, frames: Any) -> None:
        for out in frames:
            self._parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))


@dataclass
class RecorderResult:
    """What the recorder thread produced. `path` is None when no media arrived."""

    path: Path | None
    audio_pcm16k: npt.NDArray[np.float32]
    audio_t0_s: float | None
    counts: dict[str, int] = field(default_factory=dict)
    # `recording_gap` session events and the recording artifact's meta (format, codecs, t0_s, gaps).
    events: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class SessionRecorder:
    """Feeds (t_s, frame) items to one encoding thread; drops (and counts) when it lags behind."""

    def __init__(
        self,
        path: Path,
        *,
        expected_kinds: set[str],
        preset: str,
        crf: int,
        queue_items: int,
    ) -> None:
        self._path = path
        self._expected = set(expected_kinds)
        self._preset = preset
        self._crf = crf
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_items)
        self._thread = threading.Thread(target=self._run, name=f"recorder-{path.parent.name}", daemon=True)
        self._result = RecorderResult(path=None, audio_pcm16k=np.zeros(0, np.float32), audio_t0_s=None)
        self.dropped = 0
        # Runs of dropped frames: [kind, first t_s, last t_s, count]; each becomes a gap event.
        self._drop_runs: list[list[Any]] = []
        self._started = False

    def start(self) -> None:
        """Start the encoding thread."""
        if not self._started:
            self._started = True
            self._thread.start()

    def push(self, kind: str, t_s: float, frame: Any) -> bool:
        """Enqueue a decoded frame (never blocks); False when it was dropped."""
        try:
            self._queue.put_nowait((kind, t_s, frame))
            return True
        except queue.Full:
            self.dropped += 1
            run = next((r for r in reversed(self._drop_runs) if r[0] == kind), None)
            if run is not None and t_s - run[2] <= _DROP_RUN_JOIN_S:
                run[2], run[3] = t_s, run[3] + 1
            else:
                self._drop_runs.append([kind, t_s, t_s, 1])
            return False

    async def close(self) -> RecorderResult:
        """Flush the encoders, close the file and return the result (the wait runs in a thread)."""
        if not self._started:
            return self._result
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)
        self._result.counts["recorder_dropped"] = self.dropped
        events = [
            {
                "type": "recording_gap",
                "kind": kind,
                "cause": "recorder_overflow",
                "t_s": round(first, 3),
                "media_t_s": None,
                "packets_missing": 0,
                "frames_missing": count,
                "seconds": round(last - first, 3),
            }
            for kind, first, last, count in self._drop_runs
        ]
        missing = {k: sum(e["frames_missing"] for e in events if e["kind"] == k) for k in ("video", "audio")}
        self._result.events = events
        self._result.counts.update(
            recording_gaps=len(events),
            recording_video_frames_missing=missing["video"],
            recording_audio_frames_missing=missing["audio"],
        )
        by_cause: dict[str, int] = {}
        for e in events:
            by_cause[f"{e['kind']}:recorder_overflow"] = by_cause.get(f"{e['kind']}:recorder_overflow", 0) + 1
        self._result.meta.update(
            gaps=len(events), gaps_by_cause=by_cause, frames_missing=missing, gap_list=events
        )
        return self._result

    def _run(self) -> None:
        cpu0 = time.thread_time()
        t0_s: float | None = None
        writer = _Writer(self._path, self._preset, self._crf)
        held: list[tuple[str, float, Any]] = []
        pcm = Pcm16k()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                kind, t_s, frame = item
                if t0_s is None:
                    t0_s = t_s
                if kind == "audio":
                    pcm.add(t_s, frame)
                if not writer.opened:
                    held.append(item)
                    kinds = {k for k, _, _ in held}
                    if kinds >= self._expected or t_s - held[0][1] >= _HOLD_FOR_STREAMS_S:
                        writer.open({k: f for k, _, f in reversed(held)})
                        for h in held:
                            writer.write(*h)
                        held.clear()
                    continue
                writer.write(kind, t_s, frame)
            if held:
                writer.open({k: f for k, _, f in reversed(held)})
                for h in held:
                    writer.write(*h)
            pcm.flush()
        except Exception:
            log.exception("recorder failed", extra={"path": str(self._path)})
        finally:
            writer.close()
        self._result = RecorderResult(
            path=self._path if writer.frames_written else None,
            audio_pcm16k=pcm.signal(),
            audio_t0_s=pcm.t0_s,
            counts={
                "video_frames_recorded": writer.counts["video"],
                "audio_frames_recorded": writer.counts["audio"],
                "recorder_discarded": writer.discarded,
                "recording_cpu_ms": round((time.thread_time() - cpu0) * 1000),
            },
            meta={
                "format": "mp4",
                "codecs": {k: s.codec_context.name for k, s in writer.streams.items()},
                "t0_s": None if t0_s is None else round(t0_s, 3),
                "reencoded": True,
            },
        )


class _Writer:
    """PyAV muxer state; used only from the recorder thread."""

    def __init__(self, path: Path, preset: str, crf: int) -> None:
        self._path = path
        self._preset = preset
        self._crf = crf
        self._container: Any = None
        self.streams: dict[str, Any] = {}
        self._size: tuple[int, int] = (0, 0)
        self._last_video_pts = -1
        self._next_audio_pts: int | None = None
        self.counts = {"video": 0, "audio": 0}
        self.discarded = 0
        self.opened = False

    @property
    def frames_written(self) -> int:
        return self.counts["video"] + self.counts["audio"]

    def open(self, first_frames: dict[str, Any]) -> None:
        self.opened = True
        self._container = av.open(
            str(self._path), mode="w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}
        )
        video = first_frames.get("video")
        if video is not None:
            # x264 needs even dimensions in yuv420p.
            self._size = (video.width // 2 * 2, video.height // 2 * 2)
            stream = self._container.add_stream(
                # One x264 thread: the cost per session is bounded to this thread, and measured by it.
                "libx264",
                rate=30,
                options={"preset": self._preset, "crf": str(self._crf), "threads": "1"},
            )
            stream.width, stream.height = self._size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = VIDEO_TIME_BASE
            self.streams["video"] = stream
        audio = first_frames.get("audio")
        if audio is not None:
            stream = self._container.add_stream("aac", rate=audio.sample_rate)
            stream.layout = audio.layout.name
            self.streams["audio"] = stream

    def write(self, kind: str, t_s: float, frame: Any) -> None:
        stream = self.streams.get(kind)
        if stream is None:
            self.discarded += 1
            return
        if kind == "video":
            pts = max(round(t_s * 90000), self._last_video_pts + 1)
            self._last_video_pts = pts
            if (frame.width, frame.height) != self._size or frame.format.name != "yuv420p":
                # Browsers lower the resolution under their bandwidth estimate; the file keeps one size.
                frame = frame.reformat(width=self._size[0], height=self._size[1], format="yuv420p")
            frame.pts = pts
            frame.time_base = VIDEO_TIME_BASE
        else:
            rate = frame.sample_rate
            arrival = round(t_s * rate)
            if self._next_audio_pts is None or arrival - self._next_audio_pts > _AUDIO_GAP_S * rate:
                self._next_audio_pts = arrival
            frame.pts = self._next_audio_pts
            frame.time_base = Fraction(1, rate)
            self._next_audio_pts += frame.samples
        for packet in stream.encode(frame):
            self._container.mux(packet)
        self.counts[kind] += 1

    def close(self) -> None:
        if self._container is None:
            return
        for stream in self.streams.values():
            try:
                for packet in stream.encode(None):
                    self._container.mux(packet)
            except Exception:
                log.exception("recorder flush failed")
        self._container.close()
        self._container = None
