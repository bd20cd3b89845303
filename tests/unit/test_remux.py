"""The remuxing recorder without a network: real VP8 / H.264 / Opus bitstreams (PyAV encoders), real aiortc
RTP packets through the sequenced jitter buffer, and the stored file read back with PyAV."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from media_server.webrtc.remux import (
    GapTracker,
    RemuxRecorder,
    SequencedFrame,
    SequencedJitterBuffer,
    is_keyframe,
)
from tests.support.webrtc import probe_recording

FPS = 30
VIDEO_TICKS = 90000 // FPS
OPUS_TICKS = 960


class Codec:
    """The two fields of aiortc's RTCRtpCodecParameters the tap reads."""

    def __init__(self, name: str, clock_rate: int) -> None:
        self.name, self.clockRate = name, clock_rate


def _picture(i: int) -> Any:
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, : 10 + 9 * i % 300] = (200, 120, 40)  # a moving edge, so delta frames carry changes
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def encode_video(codec: str, frames: int, keyframe_every: int = 1000) -> list[bytes]:
    """A real bitstream: libvpx (VP8) or libx264 (H.264, Annex B), one packet per frame."""
    ctx = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.gop_size = keyframe_every
    ctx.options = (
        {"deadline": "realtime", "lag-in-frames": "0"}
        if codec == "vp8"
        else {"preset": "ultrafast", "tune": "zerolatency", "bframes": "0"}
    )
    out: list[bytes] = []
    for i in range(frames):
        frame = _picture(i)
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def encode_opus(frames: int) -> list[bytes]:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = 48000, "stereo", "s16", 64000
    out: list[bytes] = []
    for i in range(frames):
        tone = (np.sin(2 * np.pi * 440 * (np.arange(960) + 960 * i) / 48000) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.stack([tone, tone]).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [bytes(p) for p in ctx.encode(frame)]
    return out


def _recorder(tmp_path: Path, kinds: set[str], t: list[float]) -> RemuxRecorder:
    recorder = RemuxRecorder(
        tmp_path / "session",
        expected_kinds=kinds,
        queue_items=10_000,
        clock=lambda: t[0],
        jump_s=1.0,
        max_gap_events=200,
    )
    recorder.start()
    return recorder


def _frame(data: bytes, ts: int, seq: int, pid: int | None = None, packets: int = 1) -> SequencedFrame:
    return SequencedFrame(data, ts, seq, seq + packets - 1, pid)


# --- gap detection ----------------------------------------------------------------------------------


def test_contiguous_frames_make_no_gap_and_sequence_numbers_wrap() -> None:
    tracker = GapTracker("video", 90000, jump_s=1.0)
    seq, gaps = 65530, []
    for i in range(20):
        first, last = seq % 65536, (seq + 2) % 65536  # three packets a frame, across the 16-bit wrap
        gaps.append(tracker.feed(first, last, i * VIDEO_TICKS, (32760 + i) % 32768))
        seq += 3
    assert gaps == [None] * 20


def test_a_sequence_hole_is_network_loss_counted_by_picture_id() -> None:
    tracker = GapTracker("video", 90000, jump_s=1.0)
    assert tracker.feed(10, 11, 0, 100) is None
    assert tracker.feed(12, 13, VIDEO_TICKS, 101) is None
    gap = tracker.feed(20, 21, 5 * VIDEO_TICKS, 105)  # packets 14..19 (frames 102..104) never arrived
    assert gap is not None
    assert (gap.kind, gap.cause, gap.packets_missing, gap.frames_missing) == ("video", "network_loss", 6, 3)
    assert gap.seconds == pytest.approx(4 / FPS) and gap.media_t_s == pytest.approx(1 / FPS)


def test_without_picture_ids_frames_are_estimated_from_the_timestamps() -> None:
    tracker = GapTracker("audio", 48000, jump_s=1.0)
    for i in range(5):
        assert tracker.feed(i, i, i * OPUS_TICKS, None) is None
    gap = tracker.feed(9, 9, 9 * OPUS_TICKS, None, discarded=1)
    assert gap is not None and (gap.packets_missing, gap.frames_missing, gap.packets_discarded) == (4, 4, 1)
    assert gap.cause == "network_loss"
    only_discards = tracker.feed(12, 12, 12 * OPUS_TICKS, None, discarded=2)
    assert only_discards is not None and only_discards.cause == "jitter_buffer"


def test_a_long_timestamp_jump_without_loss_is_a_sender_pause_gap() -> None:
    tracker = GapTracker("video", 90000, jump_s=1.0)
    tracker.feed(1, 1, 0, None)
    tracker.feed(2, 2, VIDEO_TICKS, None)
    assert tracker.feed(3, 3, 2 * VIDEO_TICKS + 10, None) is None  # jitter in the sender's clock
    gap = tracker.feed(4, 4, 2 * VIDEO_TICKS + 90000 * 2, None)
    assert gap is not None and gap.cause == "timestamp_jump" and gap.packets_missing == 0
    assert gap.frames_missing == 59 and gap.seconds == pytest.approx(2.0, abs=0.01)


def _vp8_packet(seq: int, ts: int, pid: int, chunk: bytes, start: bool) -> RtpPacket:
    descriptor = VpxPayloadDescriptor(partition_start=int(start), partition_id=0, picture_id=pid)
    packet = RtpPacket(
        payload_type=97, sequence_number=seq % 65536, timestamp=ts, payload=bytes(descriptor) + chunk
    )
    packet._data = chunk  # what aiortc's depayload leaves
    return packet


def test_sequenced_jitter_buffer_labels_frames_and_counts_what_it_throws_away() -> None:
    buffer = SequencedJitterBuffer(64, is_video=True, vp8_types=frozenset({97}))
    released: list[SequencedFrame] = []
    seq = 65500
    lost = set(range(65500 + 3 * 10, 65500 + 3 * 10 + 3))  # frame 10's three packets never arrive
    for i in range(60):
        for part in range(3):
            if seq not in lost:
                _, frame = buffer.add(
                    _vp8_packet(seq, i * VIDEO_TICKS, (7 + i) % 32768, bytes([i, part]), part == 0)
                )
                if frame is not None:
                    released.append(frame)
            seq += 1
    assert released and all(isinstance(f, SequencedFrame) for f in released)
    assert [f.data for f in released[:3]] == [
        bytes([0, 0, 0, 1, 0, 2]),
        bytes([1, 0, 1, 1, 1, 2]),
        bytes([2, 0, 2, 1, 2, 2]),
    ]
    tracker = GapTracker("video", 90000, jump_s=1.0)
    gaps = [
        g
        for f in released
        if (g := tracker.feed(f.first_seq, f.last_seq, f.timestamp, f.picture_id, f.discarded))
    ]
    # The hole stalls the buffer until it overflows: aiortc then drops the hole and the frames behind it.
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.packets_missing - gap.packets_discarded == 3  # the three lost on the network
    assert gap.frames_missing == gap.packets_missing // 3  # whole frames, counted by picture id
    assert released[0].picture_id == 7 and released[0].first_seq == 65500 and released[0].last_seq == 65502


# --- the stored file ----------------------------------------------------------------------------------


def _feed(recorder: RemuxRecorder, t: list[float], items: list[tuple[str, SequencedFrame]]) -> None:
    taps = {"video": recorder.tap("video"), "audio": recorder.tap("audio")}
    codecs = {"vp8": Codec("VP8", 90000), "h264": Codec("H264", 90000), "opus": Codec("opus", 48000)}
    for codec, frame in items:
        kind = "audio" if codec == "opus" else "video"
        t[0] = frame.timestamp / (48000 if kind == "audio" else 90000) + 0.2
        taps[kind](codecs[codec], frame)


async def _close(recorder: RemuxRecorder) -> Any:
    return await recorder.close()


def _interleave(
    video: list[tuple[str, SequencedFrame]], audio: list[tuple[str, SequencedFrame]]
) -> list[Any]:
    return sorted(video + audio, key=lambda cf: cf[1].timestamp / (48000 if cf[0] == "opus" else 90000))


async def test_vp8_and_opus_are_stored_as_received_in_webm(tmp_path: Path) -> None:
    vp8 = encode_video("vp8", 90, keyframe_every=30)
    opus = encode_opus(150)
    t = [0.0]
    recorder = _recorder(tmp_path, {"video", "audio"}, t)
    video = [("vp8", _frame(d, i * VIDEO_TICKS, 2 * i, 500 + i, packets=2)) for i, d in enumerate(vp8)]
    audio = [("opus", _frame(d, i * OPUS_TICKS, 1000 + i)) for i, d in enumerate(opus)]
    started = time.thread_time()
    _feed(recorder, t, _interleave(video, audio))
    result = await _close(recorder)
    assert time.thread_time() - started < 5  # the loop side only enqueues
    assert result.path is not None and result.path.suffix == ".webm"
    probe = probe_recording(result.path)
    assert sorted(probe.streams) == ["audio:opus", "video:vp8"]
    # every frame stored once, as sent: same bytes, same count, keyframes flagged where the bitstream has them
    with av.open(str(result.path)) as container:
        stored = [bytes(p) for p in container.demux(video=0) if p.size]
    assert stored == vp8
    assert probe.packets == {"video": 90, "audio": 150} and probe.frames["video"] == 90
    assert probe.keyframes["video"] == probe.vp8_bitstream_keyframes == 3
    assert probe.first_is_keyframe == {"video": True, "audio": True}
    assert probe.monotonic == {"video": True, "audio": True} and probe.decode_errors == 0
    # timestamps from RTP: 30 fps video, 20 ms Opus frames
    assert probe.duration_s["video"] == pytest.approx(89 / FPS, abs=0.002)
    assert probe.duration_s["audio"] == pytest.approx(149 * 0.02, abs=0.002)
    assert result.counts["recording_gaps"] == 0 and result.events == []
    assert result.counts["video_keyframes_recorded"] == 3
    assert result.meta["format"] == "webm" and result.meta["codecs"] == {"video": "vp8", "audio": "opus"}
    assert result.meta["t0_s"] == pytest.approx(0.2)


async def test_h264_goes_to_matroska_and_decodes(tmp_path: Path) -> None:
    h264 = encode_video("h264", 40, keyframe_every=20)
    assert is_keyframe("h264", h264[0]) and not is_keyframe("h264", h264[1])
    t = [0.0]
    recorder = _recorder(tmp_path, {"video"}, t)
    _feed(recorder, t, [("h264", _frame(d, i * VIDEO_TICKS, i)) for i, d in enumerate(h264)])
    result = await _close(recorder)
    assert result.path is not None and result.path.suffix == ".mkv"
    probe = probe_recording(result.path)
    assert probe.streams == ["video:h264"]
    assert probe.packets["video"] == probe.frames["video"] == 40 and probe.decode_errors == 0
    assert probe.keyframes["video"] == 2 and probe.monotonic["video"]


async def test_loss_frames_before_the_first_keyframe_and_overflow_are_all_gap_events(tmp_path: Path) -> None:
    vp8 = encode_video("vp8", 60, keyframe_every=30)
    assert is_keyframe("vp8", vp8[0]) and not is_keyframe("vp8", vp8[1]) and is_keyframe("vp8", vp8[30])
    t = [0.0]
    recorder = _recorder(tmp_path, {"video"}, t)
    # The stream joins at frame 5 (no keyframe until 30); frames 40..42 are lost on the network.
    frames = [
        ("vp8", _frame(d, i * VIDEO_TICKS, i, i)) for i, d in enumerate(vp8) if i >= 5 and not 40 <= i <= 42
    ]
    _feed(recorder, t, frames)
    result = await _close(recorder)
    gaps = [(e["kind"], e["cause"], e["frames_missing"], e["packets_missing"]) for e in result.events]
    assert gaps == [("video", "before_keyframe", 25, 0), ("video", "network_loss", 3, 3)]
    assert all(e["type"] == "recording_gap" for e in result.events)
    assert result.counts["recording_video_frames_missing"] == 28 and result.counts["recording_gaps"] == 2
    assert result.meta["gaps_by_cause"] == {"video:before_keyframe": 1, "video:network_loss": 1}
    assert result.path is not None
    probe = probe_recording(result.path)
    assert (
        probe.packets["video"] == 60 - 30 - 3
        and probe.first_is_keyframe["video"]
        and probe.decode_errors == 0
    )


async def test_a_full_queue_drops_and_says_so(tmp_path: Path) -> None:
    t = [0.0]
    recorder = RemuxRecorder(
        tmp_path / "session",
        expected_kinds={"video"},
        queue_items=4,
        clock=lambda: t[0],
        jump_s=1.0,
        max_gap_events=200,
    )  # not started: nothing drains the queue
    tap = recorder.tap("video")
    vp8 = encode_video("vp8", 10)
    for i, d in enumerate(vp8):
        tap(Codec("VP8", 90000), _frame(d, i * VIDEO_TICKS, i, i))
    assert recorder.dropped["video"] == 6
    recorder.start()
    result = await recorder.close()
    overflow = [e for e in result.events if e["cause"] == "recorder_overflow"]
    assert len(overflow) == 6 and result.counts["recorder_dropped"] == 6
    assert result.counts["recording_video_frames_missing"] == 6


def test_keyframe_flags_from_the_bitstream() -> None:
    assert not is_keyframe("vp8", b"\x01\x00\x00\x9d\x01\x2a\x40\x01\xf0\x00")  # inter frame bit set
    assert is_keyframe("vp8", b"\x50\x01\x00\x9d\x01\x2a\x40\x01\xf0\x00")
    assert is_keyframe("h264", b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68\xce\x00\x00\x01\x65\x88")
    assert not is_keyframe("h264", b"\x00\x00\x00\x01\x41\x9a")
    assert is_keyframe("opus", b"\xfc\xff")  # every Opus packet decodes on its own
    assert isinstance(SequencedFrame(b"", 0, 0, 0, None), JitterFrame)
