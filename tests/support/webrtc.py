"""Test and benchmark support for WHIP: fakes of our own ports, test media, a real server thread.

Nothing here is imported by the service itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from media_server.errors import KuzetError, headers_for, status_for
from media_server.settings import Settings
from media_server.webrtc.capture import SessionCapture, SessionSink
from media_server.webrtc.credentials import WhipAuthenticator
from media_server.webrtc.ingest import WhipIngest
from media_server.webrtc.live import LiveFaceAnalysis

SERVER_START_TIMEOUT_S = 10.0


@dataclass
class RecordingProbe:
    """What PyAV reads back from a stored recording: per kind ("video"/"audio") packet and frame counts.

    `frames` are decoded frames (every packet is decoded); `monotonic` is whether each stream's packet
    times strictly increase; `first_is_keyframe` whether each stream starts at a keyframe.
    """

    streams: list[str] = field(default_factory=list)
    packets: dict[str, int] = field(default_factory=dict)
    keyframes: dict[str, int] = field(default_factory=dict)
    # VP8 packets whose own frame header says "key frame" (bit 0 of the frame tag clear)
    vp8_bitstream_keyframes: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    monotonic: dict[str, bool] = field(default_factory=dict)
    first_is_keyframe: dict[str, bool] = field(default_factory=dict)
    decode_errors: int = 0
    duration_s: dict[str, float] = field(default_factory=dict)


def probe_recording(path: Path) -> RecordingProbe:
    """Demux and decode a whole recording with PyAV (the same libraries ffprobe uses)."""
    import av

    probe = RecordingProbe()
    with av.open(str(path)) as container:
        probe.streams = [f"{s.type}:{s.codec_context.name}" for s in container.streams]
        last: dict[str, float] = {}
        first_pts: dict[str, float] = {}
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None or packet.time_base is None:
                continue  # the flush packet at the end of each stream
            kind = packet.stream.type
            t = float(packet.pts * packet.time_base)
            probe.packets[kind] = probe.packets.get(kind, 0) + 1
            probe.keyframes[kind] = probe.keyframes.get(kind, 0) + int(packet.is_keyframe)
            probe.first_is_keyframe.setdefault(kind, bool(packet.is_keyframe))
            if packet.stream.codec_context.name == "vp8":
                probe.vp8_bitstream_keyframes += int(not bytes(packet)[0] & 0x01)
            probe.monotonic[kind] = probe.monotonic.get(kind, True) and (kind not in last or t > last[kind])
            first_pts.setdefault(kind, t)
            last[kind] = t
            try:
                probe.frames[kind] = probe.frames.get(kind, 0) + len(packet.decode())
            except av.FFmpegError:
                probe.decode_errors += 1
        probe.duration_s = {k: last[k] - first_pts[k] for k in last}
    return probe


@dataclass
class RecordedCapture:
    """A capture as the fake sink saw it, with the recording read back while the file existed."""

    capture: SessionCapture
    recording_bytes: int
    recording_streams: list[str] = field(default_factory=list)
    probe: RecordingProbe | None = None


class FakeSink:
    """Keeps every capture; thread-safe to wait on from another event loop (the test's)."""

    def __init__(self, outcome: dict[str, Any] | None = None) -> None:
        self.outcome = outcome if outcome is not None else {"decision": "review", "reasons": ["fake_sink"]}
        self.captures: list[RecordedCapture] = []
        self._cond = threading.Condition()

    async def finish(self, capture: SessionCapture) -> dict[str, Any] | None:
        path = capture.recording_path
        size = path.stat().st_size if path else 0
        probe = await asyncio.to_thread(probe_recording, path) if path else None
        with self._cond:
            self.captures.append(RecordedCapture(capture, size, probe.streams if probe else [], probe))
            self._cond.notify_all()
        return self.outcome

    def wait(self, count: int = 1, timeout_s: float = 30.0) -> list[RecordedCapture]:
        """Block until `count` captures arrived (call via asyncio.to_thread from async code)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.captures) >= count, timeout_s):
                raise TimeoutError(f"sink saw {len(self.captures)} of {count} captures in {timeout_s}s")
            return list(self.captures)


class PacketLoss:
    """Induced network loss on one server-side receiver: RTP packets number `start`, `start + 1`, ...
    (`count` of them, counted from the first packet received) never reach the receiver. Their
    retransmissions (RTX, after the receiver's NACK) are dropped too unless `recoverable`: then the loss is
    the transient kind NACK repairs. Install from the server's loop before media flow (`install(receiver)`).
    """

    def __init__(self, start: int, count: int, *, recoverable: bool = False) -> None:
        self.start, self.count, self.recoverable = start, count, recoverable
        self.seen = 0
        self.dropped_seq: set[int] = set()
        self.retransmitted: set[int] = set()

    def install(self, receiver: Any) -> None:
        original = receiver._handle_rtp_packet
        codecs = receiver._RTCRtpReceiver__codecs

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            codec = codecs.get(packet.payload_type)
            if codec is not None and codec.name.lower() == "rtx" and len(packet.payload) >= 2:
                original_seq = int.from_bytes(packet.payload[:2], "big")
                if original_seq in self.dropped_seq:
                    if not self.recoverable:
                        return  # the retransmission of a dropped packet is lost as well
                    self.retransmitted.add(original_seq)
                await original(packet, arrival_time_ms)
                return
            self.seen += 1
            if self.start <= self.seen < self.start + self.count:
                self.dropped_seq.add(packet.sequence_number)
                return
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle


def build_whip_app(
    settings: Settings,
    authenticator: WhipAuthenticator,
    sink: SessionSink,
    live: LiveFaceAnalysis | None = None,
) -> FastAPI:
    """A small app with the WHIP and check-in routers and the domain error mapping, without the
    database or evidence store (create_app + `ingest.install` is the production wiring). `live`: where
    frames are analysed while a session runs (None: sessions keep their sampled frames, no analysis)."""
    from media_server.api.checkin_page import router as checkin_router
    from media_server.api.whip import router as whip_router

    ingest = WhipIngest(settings, authenticator, sink, live=live)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await ingest.close_all()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.whip_ingest = ingest

    @app.exception_handler(KuzetError)
    async def domain_error(_: Request, exc: KuzetError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.code, "message": str(exc)}, status_code=status_for(exc), headers=headers_for(exc)
        )

    app.include_router(whip_router)
    app.include_router(checkin_router)
    return app


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a background thread (a real UDP/TCP path);
    `options` are further uvicorn.Config arguments (e.g. those `kuzet serve` passes)."""

    def __init__(self, app: Any, port: int = 0, **options: Any) -> None:
        import uvicorn

        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, **{"log_level": "warning", "lifespan": "on", **options}
            )
        )
        self._thread = threading.Thread(target=self._server.run, name="uvicorn-test", daemon=True)
        self.app = app
        self.url = ""

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[ServerThread]:
    """Context manager form of ServerThread."""
    with ServerThread(app) as server:
        yield server


@dataclass(frozen=True, slots=True)
class TestMedia:
    """A face video (y4m, 640x480 @30) and a speech recording (wav) for fake cameras and players."""

    __test__ = False  # not a pytest class
    video_y4m: Path
    speech_wav: Path


def make_test_media(directory: Path, *, seconds: float = 4.0, text: str | None = None) -> TestMedia:
    """Astronaut face (skimage, public domain) -> y4m via ffmpeg; espeak-ng speech -> 48 kHz wav."""
    import numpy as np
    from PIL import Image
    from skimage import data

    directory.mkdir(parents=True, exist_ok=True)
    # A selfie framing: the astronaut's head fills the frame the way a phone check-in does (the full
    # portrait leaves a face too small for the quality gate at the resolutions Chromium sends).
    face = Image.fromarray(data.astronaut()).crop((84, 0, 364, 280)).resize((480, 480))
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(face, (80, 0))
    png = directory / "face.png"
    canvas.save(png)
    y4m = directory / "face.y4m"
    _run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-loop",
            "1",
            "-framerate",
            "30",
            "-i",
            str(png),
            "-t",
            str(seconds),
            "-pix_fmt",
            "yuv420p",
            str(y4m),
        ]
    )
    raw = directory / "speech-raw.wav"
    speech = text or "Three seven one nine four. This is a check-in test recording for Kuzet."
    if shutil.which("espeak-ng"):
        _run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(raw), speech])
    else:  # a tone keeps the media path testable where espeak-ng is missing
        import soundfile as sf

        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(raw, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    wav = directory / "speech.wav"
    _run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(raw),
            "-ar",
            "48000",
            "-ac",
            "1",
            "-sample_fmt",
            "s16",
            str(wav),
        ]
    )
    return TestMedia(video_y4m=y4m, speech_wav=wav)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def offer_sdp(direction: str = "sendonly", kinds: tuple[str, ...] = ("video", "audio")) -> str:
    """A real aiortc SDP offer (loopback candidates; the peer is closed at once, so nothing connects).

    `sendonly` is what a WHIP publisher offers, `recvonly` what a WHEP viewer offers."""
    import asyncio

    from aiortc import RTCPeerConnection

    from media_server.webrtc.ice import gather_loopback, rtc_configuration

    async def make() -> str:
        pc = RTCPeerConnection(rtc_configuration([]))
        for kind in kinds:
            pc.addTransceiver(kind, direction=direction)
        await gather_loopback(pc)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
        await pc.close()
        return sdp

    return asyncio.run(make())
