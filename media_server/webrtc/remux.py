"""Session recording without re-encoding: the received VP8/H.264 and Opus frames, remuxed.

aiortc's receiver reassembles RTP packets into encoded frames in its jitter buffer and hands each
`(codec, frame)` to its decoder thread through a queue. Two per-receiver hooks, installed before the
receiver starts (`tap_receiver`), copy those frames to the recorder thread:

- `SequencedJitterBuffer` labels every frame it releases with the RTP sequence numbers of its packets
  (and the VP8 picture id), so a packet lost on the network or discarded by the jitter buffer shows as a
  hole between two frames: nothing goes missing silently;
- `TeeQueue` (the decoder's input queue) passes each frame on to the decoder as before and to the tap.

The recorder thread (`RemuxRecorder`) writes the frames as they are into WebM (VP8 + Opus) or Matroska
(H.264), with timestamps from RTP (90 kHz video, 48 kHz Opus), and keeps converting the *decoded* audio
to 16 kHz PCM for the voice checks (the decoded track is still consumed). Gaps become `recording_gap`
events. Costs: a dict lookup and a queue put per frame on the event loop; the muxing is microseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import math
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from media_server.settings import MediaSettings
from media_server.webrtc.recorder import Pcm16k, RecorderResult, SessionRecorder

log = logging.getLogger("kuzet.webrtc")

VIDEO_CLOCK_HZ = 90000
# Codecs recorded as received (lower-case RTP names) and the container each needs.
REMUXABLE = {"video": {"vp8", "h264"}, "audio": {"opus"}}
# Before the header is written every expected stream must be known (Matroska cannot add one later).
_HOLD_FOR_STREAMS_S = 2.0
_SEQ_MOD = 1 << 16
_PICTURE_ID_MOD = 1 << 15
_STOP = object()
# Frames the recorder had to drop closer together than this are one gap.
_DROP_RUN_JOIN_S = 0.5


# --- the hooks on aiortc's receiver -------------------------------------------------------------


class SequencedFrame(JitterFrame):  # type: ignore[misc]
    """A `JitterFrame` with the RTP sequence numbers of its first and last packet, and how many
    received packets the jitter buffer threw away since the previous frame it released."""

    def __init__(
        self,
        data: bytes,
        timestamp: int,
        first_seq: int,
        last_seq: int,
        picture_id: int | None,
        discarded: int = 0,
    ) -> None:
        super().__init__(data, timestamp)
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.picture_id = picture_id
        self.discarded = discarded


class SequencedJitterBuffer(JitterBuffer):  # type: ignore[misc]
    """aiortc's jitter buffer, releasing `SequencedFrame`s.

    aiortc releases a frame only when its packets are contiguous from the buffer's origin, and then
    removes exactly those packets: the frame's packets are [origin before, origin after). Packets it
    removes otherwise (overflow after a hole: `smart_remove`; a reset on heavy misorder: `remove`) were
    received and are lost to the recording all the same: they are counted as `discarded`.
    """

    _origin: int | None
    _capacity: int
    _packets: list[Any]

    def __init__(
        self,
        capacity: int,
        prefetch: int = 0,
        is_video: bool = False,
        vp8_types: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        self._vp8_types = vp8_types
        self._releasing = False
        self.discarded = 0

    def _present(self, count: int) -> int:
        origin: int | None = self._origin
        if origin is None:
            return 0
        return sum(self._packets[(origin + i) % self._capacity] is not None for i in range(count))

    def remove(self, count: int) -> None:
        if not self._releasing:
            self.discarded += self._present(count)
        super().remove(count)

    def smart_remove(self, count: int) -> bool:
        # aiortc's smart_remove, counting the received packets it throws away.
        timestamp = None
        origin = self._origin or 0
        for i in range(self._capacity):
            pos = origin % self._capacity
            packet = self._packets[pos]
            if packet is not None:
                if i >= count and timestamp != packet.timestamp:
                    break
                timestamp = packet.timestamp
                self.discarded += 1
            self._packets[pos] = None
            origin = (origin + 1) % _SEQ_MOD
            self._origin = origin
            if i == self._capacity - 1:
                return True
        return False

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        origin = self._origin
        first = self._packets[origin % self._capacity] if origin is not None else None
        self._releasing = True
        try:
            frame = super()._remove_frame(sequence_number)
        finally:
            self._releasing = False
        if frame is None or origin is None or self._origin is None:
            return frame
        discarded, self.discarded = self.discarded, 0
        picture_id = None
        if first is not None and first.payload_type in self._vp8_types:
            try:
                picture_id = VpxPayloadDescriptor.parse(first.payload)[0].picture_id
            except ValueError:
                picture_id = None
        return SequencedFrame(
            frame.data, frame.timestamp, origin, (self._origin - 1) % _SEQ_MOD, picture_id, discarded
        )


class TeeQueue(queue.Queue[Any]):
    """The decoder thread's input queue; every `(codec, frame)` put is also handed to `tap`."""

    def __init__(self, tap: Callable[[Any, JitterFrame], None]) -> None:
        super().__init__()
        self._tap = tap

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if item is not None:
            try:
                self._tap(item[0], item[1])
            except Exception:  # the decoder path must never break because of the recording
                log.exception("recording tap failed")


_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
_CODECS_ATTR = "_RTCRtpReceiver__codecs"


def can_tap(receiver: RTCRtpReceiver) -> bool:
    """Whether `tap_receiver` can hook this receiver: aiortc 1.16's private attributes are there and
    the receiver has not started (its decoder thread would hold the old queue)."""
    return (
        isinstance(getattr(receiver, _BUFFER_ATTR, None), JitterBuffer)
        and isinstance(getattr(receiver, _QUEUE_ATTR, None), queue.Queue)
        and getattr(receiver, _THREAD_ATTR, "missing") is None
    )


def tap_receiver(receiver: RTCRtpReceiver, kind: str, tap: Callable[[Any, JitterFrame], None]) -> None:
    """Install the hooks on a receiver for which `can_tap` holds."""
    old: JitterBuffer = getattr(receiver, _BUFFER_ATTR)
    vp8_types = {
        pt for pt, c in getattr(receiver, _CODECS_ATTR, {}).items() if c.mimeType.lower() == "video/vp8"
    }
    setattr(
        receiver,
        _BUFFER_ATTR,
        SequencedJitterBuffer(
            old.capacity, prefetch=old._prefetch, is_video=kind == "video", vp8_types=frozenset(vp8_types)
        ),
    )
    setattr(receiver, _QUEUE_ATTR, TeeQueue(tap))


# --- gaps ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gap:
    """A hole in one stream of the recording: what is missing between two recorded frames."""

    kind: str
    # "network_loss" (packets never arrived), "jitter_buffer" (arrived, thrown away by aiortc's jitter
    # buffer), "timestamp_jump" (the sender paused), "recorder_overflow", "before_keyframe", "codec",
    # "late_stream" (its first keyframe came after the file was started without it), "recorder_failed"
    cause: str
    media_t_s: float  # position in the stream (RTP time since its first frame)
    packets_missing: int
    frames_missing: int
    seconds: float
    packets_discarded: int = 0  # of packets_missing, how many arrived and the jitter buffer dropped

    def event(self, t_s: float) -> dict[str, Any]:
        """As a session event (`t_s` on the session clock)."""
        return {
            "type": "recording_gap",
            "kind": self.kind,
            "cause": self.cause,
            "t_s": round(t_s, 3),
            "media_t_s": round(self.media_t_s, 3),
            "packets_missing": self.packets_missing,
            "packets_discarded": self.packets_discarded,
            "frames_missing": self.frames_missing,
            "seconds": round(self.seconds, 3),
        }


class GapTracker:
    """Finds the holes in one stream from the sequence numbers and timestamps of consecutive frames.

    A sequence-number hole is loss (network or jitter buffer); a VP8 picture-id jump counts the whole
    frames lost; otherwise frames are estimated from the timestamp hole and the usual frame duration.
    A timestamp jump longer than `jump_s` without a sequence hole is the sender pausing: recorded too.
    """

    def __init__(self, kind: str, clock_hz: int, *, jump_s: float) -> None:
        self.kind = kind
        self._clock_hz = clock_hz
        self._jump_ticks = jump_s * clock_hz
        self._last_seq: int | None = None
        self._last_ts: int | None = None
        self._last_pid: int | None = None
        self._first_ts: int | None = None
        self._duration: int | None = None

    def feed(
        self, first_seq: int, last_seq: int, timestamp: int, picture_id: int | None, discarded: int = 0
    ) -> Gap | None:
        """One released frame (`timestamp` already unwrapped, in clock ticks); `discarded`: packets the
        jitter buffer threw away since the previous frame."""
        gap = None
        if self._last_seq is not None and self._last_ts is not None and self._first_ts is not None:
            packets = (first_seq - self._last_seq - 1) % _SEQ_MOD
            delta = timestamp - self._last_ts
            if packets:
                if picture_id is not None and self._last_pid is not None:
                    frames = (picture_id - self._last_pid - 1) % _PICTURE_ID_MOD
                else:
                    frames = self._frames_in(delta)
                discarded = min(discarded, packets)
                cause = "jitter_buffer" if discarded == packets else "network_loss"
                gap = self._gap(cause, packets, frames, delta, discarded)
            elif delta > self._jump_ticks:
                gap = self._gap("timestamp_jump", 0, self._frames_in(delta), delta)
            elif delta > 0 and (self._duration is None or delta < 2 * self._duration):
                self._duration = delta
        if self._first_ts is None:
            self._first_ts = timestamp
        self._last_seq, self._last_ts, self._last_pid = last_seq, timestamp, picture_id
        return gap

    def _frames_in(self, delta: int) -> int:
        if self._duration is None or self._duration <= 0:
            return 0
        return max(0, round(delta / self._duration) - 1)

    def _gap(self, cause: str, packets: int, frames: int, delta: int, discarded: int = 0) -> Gap:
        start = (self._last_ts or 0) - (self._first_ts or 0)
        seconds = max(0, delta) / self._clock_hz
        return Gap(self.kind, cause, start / self._clock_hz, packets, frames, seconds, discarded)


# --- bitstream facts ------------------------------------------------------------------------------


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether an encoded frame starts a decodable picture (VP8: frame tag bit; H.264: IDR NAL)."""
    if codec == "vp8":
        return len(data) >= 10 and not data[0] & 0x01 and data[3:6] == b"\x9d\x01\x2a"
    if codec == "h264":
        return any(nal & 0x1F == 5 for nal in _annexb_nal_headers(data))
    return True


def _annexb_nal_headers(data: bytes) -> list[int]:
    out, i = [], data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        out.append(data[i + 3])
        i = data.find(b"\x00\x00\x01", i + 3)
    return out


def _ivf(width: int, height: int, frame: bytes) -> bytes:
    header = struct.pack("<4sHH4sHHIIII", b"DKIF", 0, 32, b"VP80", width, height, VIDEO_CLOCK_HZ, 1, 1, 0)
    return header + struct.pack("<IQ", len(frame), 0) + frame


def _vp8_size(keyframe: bytes) -> tuple[int, int]:
    width, height = struct.unpack_from("<HH", keyframe, 6)
    return width & 0x3FFF, height & 0x3FFF


# --- the recorder ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Encoded:
    kind: str
    codec: str
    clock_hz: int
    frame: JitterFrame
    t_s: float


class RemuxRecorder:
    """One thread per session: remuxes tapped encoded frames and turns decoded audio into PCM16k.

    `tap(kind)` gives the callback for `tap_receiver`; `push` takes decoded frames (audio is kept as
    PCM, video is ignored: the recording comes from the encoded frames). Never blocks the loop; a full
    queue drops the frame and records a `recorder_overflow` gap.
    """

    def __init__(
        self,
        path_stem: Path,
        *,
        expected_kinds: set[str],
        queue_items: int,
        clock: Callable[[], float],
        jump_s: float,
        max_gap_events: int,
    ) -> None:
        self._stem = path_stem
        self._expected = set(expected_kinds)
        self._clock = clock
        self._jump_s = jump_s
        self._max_gap_events = max_gap_events
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_items)
        self._thread = threading.Thread(target=self._run, name=f"remux-{path_stem.parent.name}", daemon=True)
        self._result = RecorderResult(path=None, audio_pcm16k=np.zeros(0, np.float32), audio_t0_s=None)
        self._started = False
        self._closing = False
        self.dropped = {"video": 0, "audio": 0}
        self.pcm_dropped = 0
        self._overflow: list[tuple[float, Gap]] = []
        self._overflow_lock = threading.Lock()

    def start(self) -> None:
        """Start the recorder thread."""
        if not self._started:
            self._started = True
            self._thread.start()

    def tap(self, kind: str) -> Callable[[Any, JitterFrame], None]:
        """The callback `tap_receiver` installs for a receiver of `kind` (runs on the event loop)."""

        def on_frame(codec: Any, frame: JitterFrame) -> None:
            if self._closing:
                return  # the session ended: what still arrives is not part of it
            item = _Encoded(kind, str(codec.name).lower(), int(codec.clockRate), frame, self._clock())
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped[kind] += 1
                with self._overflow_lock:
                    # Drops closer together than _DROP_RUN_JOIN_S are one gap.
                    last = next((g for g in reversed(self._overflow) if g[1].kind == kind), None)
                    if last is not None and item.t_s - last[0] - last[1].seconds <= _DROP_RUN_JOIN_S:
                        index = self._overflow.index(last)
                        gap = last[1]
                        self._overflow[index] = (
                            last[0],
                            dataclasses.replace(
                                gap, frames_missing=gap.frames_missing + 1, seconds=item.t_s - last[0]
                            ),
                        )
                    else:
                        self._overflow.append((item.t_s, Gap(kind, "recorder_overflow", 0.0, 0, 1, 0.0)))

        return on_frame

    def push(self, kind: str, t_s: float, frame: Any) -> bool:
        """A decoded frame: audio goes to the PCM16k conversion; False when dropped."""
        if kind != "audio" or self._closing:
            return True
        try:
            self._queue.put_nowait(("pcm", t_s, frame))
            return True
        except queue.Full:
            self.pcm_dropped += 1  # the voice checks' audio, not the recording
            return False

    async def close(self) -> RecorderResult:
        """Finish the file and return the result (the wait runs in a thread)."""
        self._closing = True
        if not self._started:
            return self._result
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)
        return self._result

    def _run(self) -> None:
        cpu0 = time.thread_time()
        muxer = _Muxer(self._stem, self._expected, self._jump_s)
        pcm = Pcm16k()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if isinstance(item, _Encoded):
                    muxer.add(item)
                    continue
                _, t_s, frame = item
                pcm.add(t_s, frame)
            pcm.flush()
        except Exception:
            log.exception("remux recorder failed", extra={"path": str(self._stem)})
            # Whatever the file lacks from here on is a gap the reviewer must see.
            muxer.gaps.append((self._clock(), Gap("video", "recorder_failed", 0.0, 0, 0, 0.0)))
        finally:
            muxer.close()
        with self._overflow_lock:
            gaps = muxer.gaps + self._overflow
        gaps.sort(key=lambda tg: tg[0])
        events = [g.event(t) for t, g in gaps]
        missing = {k: sum(g.frames_missing for _, g in gaps if g.kind == k) for k in ("video", "audio")}
        meta = {
            "format": muxer.format_name,
            "codecs": muxer.codecs,
            "t0_s": None if muxer.t0_s is None else round(muxer.t0_s, 3),
            "gaps": len(events),
            "gaps_by_cause": _by_cause([(g.kind, g.cause) for _, g in gaps]),
            "frames_missing": missing,
            "gap_list": events[: self._max_gap_events],
        }
        self._result = RecorderResult(
            path=muxer.path if muxer.frames_written else None,
            audio_pcm16k=pcm.signal(),
            audio_t0_s=pcm.t0_s,
            counts={
                "video_frames_recorded": muxer.counts["video"],
                "audio_frames_recorded": muxer.counts["audio"],
                "video_keyframes_recorded": muxer.keyframes["video"],
                "recorder_dropped": sum(self.dropped.values()),
                "pcm_dropped": self.pcm_dropped,
                "recorder_discarded": muxer.discarded,
                "recording_gaps": len(events),
                "recording_video_frames_missing": missing["video"],
                "recording_audio_frames_missing": missing["audio"],
                "recording_packets_missing": sum(g.packets_missing for _, g in gaps),
                "recording_packets_discarded": sum(g.packets_discarded for _, g in gaps),
                "recording_cpu_ms": round((time.thread_time() - cpu0) * 1000),
            },
            events=events[: self._max_gap_events],
            meta=meta,
        )


class _Muxer:
    """PyAV muxer state; used only from the recorder thread.

    Holds frames until every expected stream has its first decodable frame (or `_HOLD_FOR_STREAMS_S`
    passed), then writes the header: WebM for VP8/Opus, Matroska when H.264 is present.
    """

    def __init__(self, stem: Path, expected: set[str], jump_s: float) -> None:
        self._stem = stem
        self._expected = expected
        self._jump_s = jump_s
        self._container: Any = None
        self._streams: dict[str, Any] = {}
        self._trackers: dict[str, GapTracker] = {}
        self._first: dict[str, tuple[int, float]] = {}  # kind -> (first RTP ts, arrival t_s)
        self._last_pts: dict[str, int] = {}
        self._held: list[_Encoded] = []
        self._waiting: dict[str, int] = {}
        self._unstorable: dict[str, str] = {}
        self.gaps: list[tuple[float, Gap]] = []
        self.counts = {"video": 0, "audio": 0}
        self.keyframes = {"video": 0, "audio": 0}
        self.discarded = 0
        self.codecs: dict[str, str] = {}
        self.path: Path | None = None
        self.format_name: str | None = None
        self.t0_s: float | None = None
        self.opened = False

    @property
    def frames_written(self) -> int:
        return self.counts["video"] + self.counts["audio"]

    def add(self, item: _Encoded) -> None:
        kind, frame = item.kind, item.frame
        if item.codec not in REMUXABLE.get(kind, set()):
            self._lose(item, "codec")
            return
        if kind not in self._trackers:
            self._trackers[kind] = GapTracker(kind, item.clock_hz, jump_s=self._jump_s)
        if isinstance(frame, SequencedFrame):
            gap = self._trackers[kind].feed(
                frame.first_seq, frame.last_seq, frame.timestamp, frame.picture_id, frame.discarded
            )
            if gap is not None:
                self.gaps.append((item.t_s, gap))
        if kind not in self._first:
            # A stream starts at a decodable frame; what came before cannot be shown and is a gap.
            if not is_keyframe(item.codec, frame.data):
                self._lose(item, "before_keyframe")
                return
            self._first[kind] = (frame.timestamp, item.t_s)
            self.codecs[kind] = item.codec
        if not self.opened:
            self._held.append(item)
            if set(self._first) >= self._expected or item.t_s - self._held[0].t_s >= _HOLD_FOR_STREAMS_S:
                self._open()
            return
        self._write(item)

    def _lose(self, item: _Encoded, cause: str) -> None:
        self.discarded += 1
        key = f"{item.kind}:{cause}"
        if key not in self._waiting:
            self.gaps.append((item.t_s, Gap(item.kind, cause, 0.0, 0, 0, 0.0)))
            self._waiting[key] = len(self.gaps) - 1
        index = self._waiting[key]
        t_s, gap = self.gaps[index]
        self.gaps[index] = (t_s, Gap(gap.kind, cause, 0.0, 0, gap.frames_missing + 1, gap.seconds))

    def _open(self) -> None:
        self.opened = True
        held, self._held = self._held, []
        firsts: dict[str, _Encoded] = {}
        for it in held:
            firsts.setdefault(it.kind, it)
        h264 = any(it.codec == "h264" for it in firsts.values())
        self.format_name = "matroska" if h264 else "webm"
        self.path = self._stem.with_suffix(".mkv" if h264 else ".webm")
        self.t0_s = min(t for _, t in self._first.values())
        self._container = av.open(str(self.path), mode="w", format=self.format_name)
        video = firsts.get("video")
        if video is not None:
            try:
                self._streams["video"] = self._video_stream(video)
            except (av.FFmpegError, ValueError, struct.error):
                # A bitstream the container cannot be set up from: keep the audio, count the video as gap.
                log.exception("recording: video stream could not be set up", extra={"codec": video.codec})
                self._unstorable["video"] = "codec"
        audio = firsts.get("audio")
        if audio is not None:
            stream = self._container.add_stream("libopus", rate=48000)
            stream.layout = "stereo"  # WebRTC signals opus/48000/2; mono packets decode as well
            stream.time_base = Fraction(1, 48000)
            self._streams["audio"] = stream
        for it in held:
            self._write(it)

    def _video_stream(self, first: _Encoded) -> Any:
        data = first.frame.data
        if first.codec == "vp8":
            width, height = _vp8_size(data)
            template = av.open(io.BytesIO(_ivf(width, height, data)), format="ivf")
        else:
            template = av.open(io.BytesIO(data), format="h264")
        stream = self._container.add_stream_from_template(template.streams.video[0])
        stream.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        template.close()
        return stream

    def _write(self, item: _Encoded) -> None:
        stream = self._streams.get(item.kind)
        first = self._first.get(item.kind)
        if stream is None or first is None or self.t0_s is None:
            # A stream whose first keyframe came after the header was written (Matroska cannot add it).
            self._lose(item, self._unstorable.get(item.kind, "late_stream"))
            return
        first_ts, first_arrival = first
        # Each stream keeps its own RTP clock, placed where its first frame arrived on the session clock.
        offset = round((first_arrival - self.t0_s) * item.clock_hz)
        pts = offset + item.frame.timestamp - first_ts
        last = self._last_pts.get(item.kind)
        if last is not None and pts <= last:
            pts = last + 1  # monotonic even if the sender's clock stepped back
        self._last_pts[item.kind] = pts
        packet = av.Packet(item.frame.data)
        packet.pts = packet.dts = pts
        packet.time_base = Fraction(1, item.clock_hz)
        packet.stream = stream
        packet.is_keyframe = key = is_keyframe(item.codec, item.frame.data)
        self._container.mux(packet)
        self.counts[item.kind] += 1
        self.keyframes[item.kind] += int(key)

    def close(self) -> None:
        if not self.opened and self._held:
            self._open()
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                log.exception("closing the recording failed")
            self._container = None


def _by_cause(keys: list[tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind, cause in keys:
        out[f"{kind}:{cause}"] = out.get(f"{kind}:{cause}", 0) + 1
    return out


# --- choosing the recorder ------------------------------------------------------------------------


class Recorder(Protocol):
    """What a session needs from its recorder (the remuxer, or the re-encoding fallback)."""

    def start(self) -> None: ...

    def push(self, kind: str, t_s: float, frame: Any) -> bool: ...

    async def close(self) -> RecorderResult: ...


# Nominal frame rates, to size the recorder queues from record_queue_s.
_VIDEO_FPS = 30
_AUDIO_FPS = 50


def negotiated_codec(transceiver: RTCRtpTransceiver) -> str | None:
    """The first negotiated media codec of a transceiver (lower-case RTP name), RTX skipped."""
    for codec in getattr(transceiver, "_codecs", []) or []:
        name = str(codec.name).lower()
        if name not in ("rtx", "red", "ulpfec"):
            return name
    return None


def open_session_recorder(
    pc: RTCPeerConnection,
    stem: Path,
    kinds: set[str],
    media: MediaSettings,
    *,
    clock: Callable[[], float],
) -> Recorder:
    """The recorder for a session whose answer is set and whose receivers have not started yet.

    Remuxes when `media.record_mode` is "remux", every negotiated codec can be stored as received and the
    receiver hooks install; otherwise re-encodes (SessionRecorder), with its bounded queue.
    """
    per_s = (_VIDEO_FPS if "video" in kinds else 0) + (_AUDIO_FPS if "audio" in kinds else 0)
    receivers = [
        (t.kind, t.receiver, negotiated_codec(t))
        for t in pc.getTransceivers()
        if t.kind in kinds and t.receiver is not None
    ]
    remuxable = media.record_mode == "remux" and all(
        codec in REMUXABLE.get(kind, set()) for kind, _, codec in receivers
    )
    if remuxable:
        recorder = RemuxRecorder(
            stem,
            expected_kinds=kinds,
            # encoded video + encoded audio + decoded audio for PCM; the items are small
            queue_items=max(16, math.ceil((per_s + _AUDIO_FPS) * media.record_queue_s * 4)),
            clock=clock,
            jump_s=media.record_gap_jump_s,
            max_gap_events=media.record_max_gap_events,
        )
        if all(can_tap(receiver) for _, receiver, _ in receivers):
            for kind, receiver, _ in receivers:
                tap_receiver(receiver, kind, recorder.tap(kind))
            return recorder
        log.warning("receiver hooks unavailable in this aiortc: the recording is re-encoded")
    else:
        log.info(
            "recording re-encoded",
            extra={"mode": media.record_mode, "codecs": {k: c for k, _, c in receivers}},
        )
    return SessionRecorder(
        stem.with_suffix(".mp4"),
        expected_kinds=kinds,
        preset=media.record_preset,
        crf=media.record_crf,
        queue_items=max(8, math.ceil(per_s * media.record_queue_s)),
    )
