"""WHIP ingest with real aiortc peers over real UDP on 127.0.0.1 (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaPlayer

from media_server.settings import Settings
from media_server.station_client import MonotonicTrack, WhipClient
from media_server.webrtc.capture import EndedReason
from media_server.webrtc.credentials import OneTimeTokens
from media_server.webrtc.ice import gather_loopback, rtc_configuration
from tests.support.webrtc import (
    FakeSink,
    PacketLoss,
    RecordedCapture,
    ServerThread,
    TestMedia,
    build_whip_app,
    make_test_media,
)

# A short challenge (two moves and digits, about 4.5 s) keeps the tests quick.
QUICK_CHALLENGE = {"motion_window_s": 1.0, "read_digits_window_s": 2.0, "lead_in_s": 0.5, "step_gap_s": 0.0}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> TestMedia:
    return make_test_media(tmp_path_factory.mktemp("whip-media"))


class Rig:
    def __init__(
        self, server: ServerThread, tokens: OneTimeTokens, sink: FakeSink, settings: Settings
    ) -> None:
        self.server = server
        self.tokens = tokens
        self.sink = sink
        self.settings = settings
        self.url = server.url


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Factory: a running server with the given MediaSettings overrides, a fake authenticator and sink."""
    stack = contextlib.ExitStack()

    def start(**media: Any) -> Rig:
        settings = Settings(
            data_dir=tmp_path / "var",
            media={"loopback_only": True, "no_media_timeout_s": 10, **media},
            liveness=QUICK_CHALLENGE,
        )
        tokens, sink = OneTimeTokens(), FakeSink()
        server = stack.enter_context(ServerThread(build_whip_app(settings, tokens, sink)))
        return Rig(server, tokens, sink, settings)

    with stack:
        yield start


async def _offer(*, video: bool = True, audio: bool = True) -> tuple[RTCPeerConnection, str]:
    """A real aiortc offer (recvonly transceivers: it will never send media)."""
    pc = RTCPeerConnection(rtc_configuration([]))
    if video:
        pc.addTransceiver("video", direction="sendonly")
    if audio:
        pc.addTransceiver("audio", direction="sendonly")
    pc.createDataChannel("kuzet")
    await gather_loopback(pc)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def _post(
    url: str, body: bytes | str, token: str | None, content_type: str = "application/sdp"
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{url}/whip", content=body, headers=headers, timeout=15)


async def test_media_flows_to_the_sink_and_is_recorded(rig: Callable[..., Rig], media: TestMedia) -> None:
    r = rig()
    video = MediaPlayer(str(media.video_y4m), loop=True)
    audio = MediaPlayer(str(media.speech_wav), loop=True)
    # The challenge issued with the credential is the one the session runs.
    challenge = {
        "nonce": "00ff",
        "lead_in_s": 0.5,
        "gap_s": 0.2,
        "steps": [
            {"kind": "turn_left", "prompt_key": "liveness.turn_left", "window_s": 1.0, "digits": ""},
            {"kind": "read_digits", "prompt_key": "liveness.read_digits", "window_s": 1.5, "digits": "4711"},
        ],
    }
    client = WhipClient(r.url, r.tokens.issue("person-1", challenge=challenge), loopback_only=True)
    received: list[dict[str, Any]] = []
    try:
        await client.publish([MonotonicTrack(video.video), MonotonicTrack(audio.audio)])
        assert client.resource_url is not None and "/whip/" in client.resource_url
        await asyncio.wait_for(client.channel_open.wait(), 20)
        client.send({"type": "location", "lat": 43.238, "lon": 76.945, "accuracy_m": 12.0})
        client.send({"type": "location", "lat": 400, "lon": 0, "accuracy_m": 1})  # hostile: ignored
        client.send({"type": "nonsense"})
        while not received or received[-1]["type"] != "outcome":
            message = await asyncio.wait_for(client.messages.get(), 60)
            received.append(message)
            if message["type"] == "prompt":
                client.send({"type": "ack", "step": message["step"], "index": message["index"]})
        assert await client.delete() == 200
    finally:
        await client.close()
        for track in (video.video, audio.audio):
            track.stop()

    (seen,) = await asyncio.to_thread(r.sink.wait, 1, 30)
    capture = seen.capture
    assert capture.ended_reason is EndedReason.COMPLETED
    assert capture.person_id == "person-1"
    # frames: sampled, real RGB pictures of the astronaut page (mid-grey canvas, not black)
    assert capture.frames, "no sampled frames reached the sink"
    t_s, rgb = capture.frames[0]
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and t_s >= 0
    assert 40 < float(rgb.mean()) < 220
    # audio: 16 kHz mono float32 speech with energy
    assert capture.audio_pcm16k.dtype == np.float32 and capture.audio_pcm16k.ndim == 1
    assert capture.audio_pcm16k.size > 16000 // 2
    assert float(np.sqrt(np.mean(capture.audio_pcm16k**2))) > 1e-3
    # the recording: the received VP8 and Opus, remuxed into WebM (not re-encoded), every frame kept
    assert seen.recording_bytes > 10_000
    assert capture.recording_path is not None and capture.recording_path.suffix == ".webm"
    assert not capture.recording_path.exists()  # cleaned after finish
    _assert_complete_recording(seen, ["audio:opus", "video:vp8"])
    # data channel: every prompt was sent and acknowledged; location kept; junk counted
    prompts = [e for e in capture.events if e["type"] == "prompt"]
    acks = [e for e in capture.events if e["type"] == "ack"]
    assert prompts and [p["step"] for p in prompts] == [m["step"] for m in received if m["type"] == "prompt"]
    assert {a["index"] for a in acks} == {p["index"] for p in prompts}
    assert capture.location is not None and capture.location["status"] == "ok"
    assert capture.location["lat"] == pytest.approx(43.238)
    assert capture.challenge == challenge
    assert [(p["step"], p.get("digits")) for p in prompts] == [("turn_left", None), ("read_digits", "4711")]
    assert prompts[0]["t_s"] >= 0.5 and prompts[1]["t_s"] - prompts[0]["t_s"] >= 1.2 - 0.05
    assert capture.stats["invalid_messages"] == 2
    assert capture.stats["video_frames_received"] > 0 and capture.stats["audio_frames_received"] > 0
    assert [m for m in received if m["type"] == "outcome"][0]["decision"] == "review"


def _assert_complete_recording(seen: RecordedCapture, streams: list[str]) -> None:
    """The stored file decodes, holds every frame the recorder says it wrote, and has no gap."""
    capture, probe = seen.capture, seen.probe
    assert probe is not None and sorted(probe.streams) == streams
    stats = capture.stats
    for kind in ("video", "audio"):
        recorded = stats[f"{kind}_frames_recorded"]
        assert recorded > 0 and probe.packets[kind] == recorded, (kind, probe.packets, stats)
        assert probe.frames[kind] >= recorded - 2, (kind, probe.frames, recorded)  # decoder delay only
        assert probe.monotonic[kind] and probe.first_is_keyframe[kind]
    assert probe.decode_errors == 0
    # ~30 fps for the seconds the video lasted (the aiortc player paces the y4m at 30 fps)
    assert probe.duration_s["video"] > 1.0
    assert abs(probe.packets["video"] / probe.duration_s["video"] - 30) < 4, (probe.packets, probe.duration_s)
    # keyframes flagged in the container exactly where the VP8 bitstream has them (aiortc's sender
    # restarts its encoder on every >10 % bitrate change, so early on most frames are keyframes)
    assert probe.keyframes["video"] == probe.vp8_bitstream_keyframes == stats["video_keyframes_recorded"] >= 1
    # a frame decoded by the analysis path had its encoded twin recorded
    assert stats["video_frames_recorded"] >= stats["video_frames_received"]
    assert (
        stats["recording_gaps"] == 0 and stats["recorder_dropped"] == 0 and stats["recorder_discarded"] == 0
    )
    assert stats["recording_video_frames_missing"] == 0 and stats["recording_audio_frames_missing"] == 0
    assert not [e for e in capture.events if e["type"] == "recording_gap"]
    meta = capture.recording_meta
    assert meta["format"] == "webm" and meta["codecs"] == {"video": "vp8", "audio": "opus"}
    assert meta["gaps"] == 0 and isinstance(meta["t0_s"], float) and meta["t0_s"] >= 0


async def _run_session(r: Rig, media: TestMedia, loss: PacketLoss | None = None, kind: str = "audio") -> None:
    """A whole check-in from an aiortc client (prompts acknowledged) until the outcome arrives."""
    video = MediaPlayer(str(media.video_y4m), loop=True)
    audio = MediaPlayer(str(media.speech_wav), loop=True)
    client = WhipClient(r.url, r.tokens.issue("person-1"), loopback_only=True)
    try:
        await client.publish([MonotonicTrack(video.video), MonotonicTrack(audio.audio)])
        if loss is not None:
            ingest = r.server.app.state.whip_ingest
            (session,) = ingest.sessions.values()
            (receiver,) = [t.receiver for t in session.pc.getTransceivers() if t.kind == kind]
            loss.install(receiver)
        while True:
            message = await asyncio.wait_for(client.messages.get(), 60)
            if message["type"] == "prompt":
                client.send({"type": "ack", "step": message["step"], "index": message["index"]})
            if message["type"] == "outcome":
                break
        await client.delete()
    finally:
        await client.close()
        for track in (video.video, audio.audio):
            track.stop()


async def test_induced_packet_loss_becomes_a_recording_gap_event(
    rig: Callable[..., Rig], media: TestMedia
) -> None:
    # Audio: aiortc sends no NACK for audio, so three dropped Opus packets stay lost.
    r = rig()
    loss = PacketLoss(start=60, count=3)
    await _run_session(r, media, loss, "audio")
    (seen,) = await asyncio.to_thread(r.sink.wait, 1, 30)
    capture, probe = seen.capture, seen.probe
    assert len(loss.dropped_seq) == 3
    gaps = [e for e in capture.events if e["type"] == "recording_gap"]
    # 3 packets lost on the network; aiortc's audio jitter buffer (16 packets) then throws away the
    # backlog that piled up behind the hole (received, but missing from the recording all the same)
    (gap,) = gaps
    assert (gap["kind"], gap["cause"]) == ("audio", "network_loss")
    lost = gap["packets_missing"] - gap["packets_discarded"]
    assert lost == 3 and gap["frames_missing"] == gap["packets_missing"], str(
        gap
    )  # one Opus packet per frame
    assert gap["seconds"] == pytest.approx(0.02 * (gap["frames_missing"] + 1), abs=0.001)
    assert capture.stats["recording_gaps"] == 1
    assert capture.stats["recording_audio_frames_missing"] == gap["frames_missing"]
    assert capture.recording_meta["gaps_by_cause"] == {"audio:network_loss": 1}
    assert capture.recording_meta["gap_list"] == gaps
    # the rest is stored and decodes: the video untouched, the audio without the lost frames
    assert (
        probe is not None and probe.decode_errors == 0 and probe.monotonic == {"video": True, "audio": True}
    )
    assert probe.packets["audio"] == capture.stats["audio_frames_recorded"]


async def test_reencode_mode_records_h264_aac_mp4_and_counts_its_cost(
    rig: Callable[..., Rig], media: TestMedia
) -> None:
    r = rig(record_mode="reencode")
    await _run_session(r, media)
    (seen,) = await asyncio.to_thread(r.sink.wait, 1, 30)
    capture, probe = seen.capture, seen.probe
    assert capture.recording_path is not None and capture.recording_path.suffix == ".mp4"
    assert probe is not None and sorted(probe.streams) == ["audio:aac", "video:h264"]
    assert probe.packets["video"] == capture.stats["video_frames_recorded"] > 0
    assert capture.stats["recording_cpu_ms"] > 0 and capture.recording_meta["format"] == "mp4"
    assert capture.stats["recording_gaps"] == capture.stats["recorder_dropped"] == 0


async def test_garbage_sdp_is_400_and_does_not_spend_the_token(rig: Callable[..., Rig]) -> None:
    r = rig()
    token = r.tokens.issue()
    for body in (
        b"hello",
        b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n",
        b"v=0\r\n\x00\x01",
        b"\xff\xfe",
    ):
        response = await asyncio.to_thread(_post, r.url, body, token)
        assert response.status_code == 400, body
        assert response.json()["error"] == "bad_input"
    assert r.tokens.used == set()


async def test_unsupported_codecs_only_is_rejected_with_a_clear_message(rig: Callable[..., Rig]) -> None:
    r = rig()
    pc, offer = await _offer()
    await pc.close()
    lines = []
    for line in offer.splitlines():
        for old, new in (("VP8/", "VP9/"), ("H264/", "AV1/"), ("opus/", "G719/")):
            line = line.replace(old, new)
        lines.append(line)
    response = await asyncio.to_thread(_post, r.url, "\r\n".join(lines) + "\r\n", r.tokens.issue())
    assert response.status_code in (400, 415)
    assert "no supported codec (VP8, H264, Opus)" in response.json()["message"]


async def test_wrong_content_type_is_415(rig: Callable[..., Rig]) -> None:
    r = rig()
    pc, offer = await _offer()
    await pc.close()
    for content_type in ("application/json", "text/plain", ""):
        response = await asyncio.to_thread(_post, r.url, offer, r.tokens.issue(), content_type)
        assert response.status_code == 415, content_type


async def test_missing_or_malformed_credential_is_401(rig: Callable[..., Rig]) -> None:
    r = rig()
    pc, offer = await _offer()
    await pc.close()
    assert (await asyncio.to_thread(_post, r.url, offer, None)).status_code == 401
    response = await asyncio.to_thread(
        lambda: httpx.post(
            f"{r.url}/whip",
            content=offer,
            headers={"Content-Type": "application/sdp", "Authorization": "Basic eDp5"},
        )
    )
    assert response.status_code == 401
    assert (await asyncio.to_thread(_post, r.url, offer, "not-issued")).status_code == 401


async def test_token_reuse_is_401_and_delete_ends_the_session(rig: Callable[..., Rig]) -> None:
    r = rig()
    token = r.tokens.issue("person-2")
    pc, offer = await _offer()
    first = await asyncio.to_thread(_post, r.url, offer, token)
    assert first.status_code == 201
    assert first.headers["content-type"].startswith("application/sdp")
    assert first.text.startswith("v=0")
    location = first.headers["location"]
    assert location.startswith("/whip/")
    again = await asyncio.to_thread(_post, r.url, offer, token)
    assert again.status_code == 401
    assert "already used" in again.json()["message"]
    patch = await asyncio.to_thread(lambda: httpx.patch(r.url + location, content=b"a=candidate"))
    assert patch.status_code == 405 and patch.headers["allow"] == "GET, DELETE"
    auth = {"Authorization": f"Bearer {token}"}
    # RFC 9725: only the bearer that opened the session may end it.
    anonymous = await asyncio.to_thread(lambda: httpx.delete(r.url + location))
    assert anonymous.status_code == 401
    other = {"Authorization": f"Bearer {r.tokens.issue('person-3')}"}
    assert (await asyncio.to_thread(lambda: httpx.delete(r.url + location, headers=other))).status_code == 403
    deleted = await asyncio.to_thread(lambda: httpx.delete(r.url + location, headers=auth))
    assert deleted.status_code == 200
    (seen,) = await asyncio.to_thread(r.sink.wait, 1, 20)
    assert seen.capture.ended_reason is EndedReason.CLIENT_HANGUP
    assert seen.capture.recording_path is None
    unknown = await asyncio.to_thread(lambda: httpx.delete(r.url + "/whip/unknown", headers=auth))
    assert unknown.status_code == 404
    await pc.close()


async def test_a_client_that_never_sends_media_times_out_cleanly(rig: Callable[..., Rig]) -> None:
    r = rig(no_media_timeout_s=1)
    pc, offer = await _offer()
    token = r.tokens.issue()
    response = await asyncio.to_thread(_post, r.url, offer, token)
    assert response.status_code == 201
    # The answer is never applied: ICE cannot complete and no media ever arrives.
    (seen,) = await asyncio.to_thread(r.sink.wait, 1, 20)
    capture = seen.capture
    assert capture.ended_reason is EndedReason.NO_MEDIA_TIMEOUT
    assert capture.recording_path is None and capture.frames == [] and capture.audio_pcm16k.size == 0
    assert (capture.ended_at - capture.started_at).total_seconds() >= 1
    await pc.close()
    # the session is gone from the server
    resource = response.headers["location"]
    for _ in range(50):
        gone = await asyncio.to_thread(
            lambda: httpx.delete(r.url + resource, headers={"Authorization": f"Bearer {token}"})
        )
        if gone.status_code == 404:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("timed-out session still listed")


def test_station_run_cli_completes_a_station_session(
    rig: Callable[..., Rig], media: TestMedia, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from media_server.cli import main

    r = rig()
    monkeypatch.setenv("KUZET_MEDIA__LOOPBACK_ONLY", "true")
    key = r.tokens.issue("person-3", kind="station")
    result = CliRunner().invoke(
        main,
        [
            "station",
            "run",
            "--url",
            r.url,
            "--device-key",
            key,
            "--video",
            str(media.video_y4m),
            "--audio",
            str(media.speech_wav),
            "--duration",
            "60",
            "--lat",
            "51.1",
            "--lon",
            "71.4",
        ],
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout[result.stdout.index("{") :])
    assert outcome == {"type": "outcome", "decision": "review", "reasons": ["fake_sink"]}
    (seen,) = r.sink.wait(1, 30)
    assert seen.capture.kind == "station" and seen.capture.ended_reason is EndedReason.COMPLETED
    assert seen.capture.location is not None and seen.capture.location["lon"] == pytest.approx(71.4)
    assert seen.capture.frames and seen.recording_bytes > 0
    # no challenge came with the credential: identity.liveness made a fresh one
    assert seen.capture.challenge is not None and len(seen.capture.challenge["nonce"]) == 16
    assert {e["step"] for e in seen.capture.events if e["type"] == "prompt"} <= {
        "turn_left",
        "turn_right",
        "blink",
        "read_digits",
    }
