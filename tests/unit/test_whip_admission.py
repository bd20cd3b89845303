"""Admission control and bounded frame memory of live WHIP sessions (real aiortc peers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.contrib.media import MediaPlayer

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face.results import FaceAnalysis
from media_server.settings import Settings
from media_server.station_client import MonotonicTrack, WhipClient
from media_server.webrtc.capture import EndedReason, SessionCapture
from media_server.webrtc.credentials import OneTimeTokens
from media_server.webrtc.ingest import WhipIngest
from tests.support.webrtc import FakeSink, ServerThread, TestMedia, build_whip_app, make_test_media
from tests.unit.test_whip_ingest import QUICK_CHALLENGE, _offer, _post

STAMP = ModelStamp("fake-face", "0", "00" * 32)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> TestMedia:
    return make_test_media(tmp_path_factory.mktemp("admission-media"))


@contextlib.contextmanager
def _server(
    tmp_path: Path, sink: Any, live: Any = None, **media: Any
) -> Iterator[tuple[ServerThread, OneTimeTokens, WhipIngest]]:
    settings = Settings(
        data_dir=tmp_path / "var",
        media={"loopback_only": True, "no_media_timeout_s": 10, **media},
        liveness=QUICK_CHALLENGE,
    )
    tokens = OneTimeTokens()
    app = build_whip_app(settings, tokens, sink, live=live)
    with ServerThread(app) as server:
        yield server, tokens, app.state.whip_ingest


async def _run_client(url: str, token: str, media: TestMedia) -> list[dict[str, Any]]:
    """A station-like client that answers prompts until the outcome arrives; the messages it received."""
    video = MediaPlayer(str(media.video_y4m), loop=True)
    audio = MediaPlayer(str(media.speech_wav), loop=True)
    client = WhipClient(url, token, loopback_only=True)
    received: list[dict[str, Any]] = []
    try:
        await client.publish([MonotonicTrack(video.video), MonotonicTrack(audio.audio)])
        while not received or received[-1]["type"] != "outcome":
            message = await asyncio.wait_for(client.messages.get(), 60)
            received.append(message)
            if message["type"] == "prompt":
                client.send({"type": "ack", "step": message["step"], "index": message["index"]})
        await client.delete()
    finally:
        await client.close()
        for track in (video.video, audio.audio):
            track.stop()
    return received


async def _until_closed(client: asyncio.Task[Any], sink: Any, ingest: Any) -> None:
    """The client has finished, its outcome was judged, and the session closed (after the client's DELETE)."""
    await client
    await asyncio.to_thread(sink.done.wait, 30)
    for _ in range(200):
        if not ingest.sessions:
            break
        await asyncio.sleep(0.05)
    assert not ingest.sessions


async def test_a_full_node_refuses_with_retry_after_keeps_the_link_and_spares_the_live_session(
    tmp_path: Path, media: TestMedia
) -> None:
    sink = FakeSink()
    with _server(tmp_path, sink, max_live_sessions=1, busy_retry_after_s=7) as (server, tokens, ingest):
        first = asyncio.create_task(_run_client(server.url, tokens.issue("person-a"), media))
        for _ in range(200):
            if ingest.busy_sessions() == 1:
                break
            await asyncio.sleep(0.05)
        assert ingest.busy_sessions() == 1
        waiting = tokens.issue("person-b")
        pc, offer = await _offer()
        refused = await asyncio.to_thread(_post, server.url, offer, waiting)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "7"
        assert refused.json()["error"] == "busy"
        assert waiting not in tokens.used  # the one-time link was not spent: the page retries with it
        # The running session is not disturbed by the refusal: it completes and is judged.
        received = await asyncio.wait_for(first, 90)
        assert received[-1]["type"] == "outcome"
        (seen,) = await asyncio.to_thread(sink.wait, 1, 30)
        assert seen.capture.ended_reason is EndedReason.COMPLETED
        assert seen.capture.stats["video_frames_received"] > 0 and seen.capture.frames
        # Once it has been judged, the same link opens a session.
        for _ in range(100):
            if ingest.busy_sessions() == 0:
                break
            await asyncio.sleep(0.05)
        admitted = await asyncio.to_thread(_post, server.url, offer, waiting)
        assert admitted.status_code == 201, admitted.text
        await pc.close()


class SlowFakeFaces:
    """A stand-in analysis pool: 'no face' for every frame after a short delay; weakly remembers frames."""

    def __init__(self) -> None:
        self.seen: list[weakref.ref[np.ndarray]] = []
        self._lock = threading.Lock()

    async def analyse(self, frames: list[np.ndarray]) -> list[FaceAnalysis]:
        with self._lock:
            self.seen.extend(weakref.ref(f) for f in frames)
        await asyncio.sleep(0.02)
        quality = CheckResult(CheckKind.FACE_QUALITY, Outcome.INCONCLUSIVE, "no_face", "no face", model=STAMP)
        return [FaceAnalysis([], None, quality, None, None, STAMP, (f.shape[0], f.shape[1])) for f in frames]

    async def embed(self, frames: list[np.ndarray], analyses: list[FaceAnalysis]) -> list[FaceAnalysis]:
        return analyses


class DroppingSink:
    """Keeps only counters and weak references to the capture's frames (like a sink that has stored them)."""

    def __init__(self) -> None:
        self.stats: list[dict[str, int]] = []
        self.held: list[int] = []
        self.frame_refs: list[weakref.ref[np.ndarray]] = []
        self.done = threading.Event()

    async def finish(self, capture: SessionCapture) -> dict[str, Any] | None:
        self.stats.append(dict(capture.stats))
        self.held.append(len(capture.frames))
        self.frame_refs.extend(weakref.ref(rgb) for _, rgb in capture.frames)
        assert capture.live is not None and len(capture.live.analyses) == capture.stats["frames_analysed"]
        self.done.set()
        return {"decision": "review", "reasons": ["fake_sink"]}


async def test_frames_held_by_a_live_session_are_bounded_and_freed_after_it_ends(
    tmp_path: Path, media: TestMedia
) -> None:
    faces, sink = SlowFakeFaces(), DroppingSink()
    bounds = {
        "max_pending_frames": 8,
        "max_held_frames": 4,
        "held_frame_every_s": 0.5,
        "analysis_chunk_frames": 4,
    }
    with _server(tmp_path, sink, live=faces, **bounds) as (server, tokens, ingest):
        task = asyncio.create_task(_run_client(server.url, tokens.issue("person-m"), media))
        peak = 0
        while not task.done():
            for session in list(ingest.sessions.values()):
                peak = max(peak, session.frames_held)
                session_ref = weakref.ref(session)
            await asyncio.sleep(0.01)
        await _until_closed(task, sink, ingest)
    stats = sink.stats[0]
    assert stats["frames_analysed"] > 10, stats
    assert 0 < peak <= bounds["max_pending_frames"] + bounds["max_held_frames"]
    assert 0 < sink.held[0] <= bounds["max_held_frames"]
    gc.collect()
    # Every sampled frame (analysed or held) is gone once the session has ended and been judged.
    assert faces.seen and all(r() is None for r in faces.seen)
    assert sink.frame_refs and all(r() is None for r in sink.frame_refs)
    assert session_ref() is None or session_ref().frames_held == 0  # type: ignore[union-attr]


class _StubSession:
    def __init__(self, *, busy: bool, lagging: bool) -> None:
        self.busy = busy
        self.analysis_lagging = lagging


async def test_a_node_whose_analysis_falls_behind_admits_no_new_session(tmp_path: Path) -> None:
    from media_server.errors import ServerBusy

    settings = Settings(data_dir=tmp_path / "var", media={"max_live_sessions": 3})
    refused: list[int] = []
    ingest = WhipIngest(settings, OneTimeTokens(), FakeSink(), on_refused=lambda: refused.append(1))
    token = ingest.authenticator.issue()  # type: ignore[attr-defined]
    auth = f"Bearer {token}"
    ingest.sessions["a"] = _StubSession(busy=True, lagging=False)  # type: ignore[assignment]
    await ingest.preflight("application/sdp", auth)  # one of three slots used, keeping up: admitted
    ingest.sessions["a"] = _StubSession(busy=True, lagging=True)  # type: ignore[assignment]
    with pytest.raises(ServerBusy) as err:
        await ingest.preflight("application/sdp", auth)
    assert err.value.retry_after_s == settings.media.busy_retry_after_s and "falling behind" in str(err.value)
    assert refused == [1]
    # "a" has been judged and lingers for its DELETE (not busy); "b" and "c" are live.
    ingest.sessions["a"] = _StubSession(busy=False, lagging=False)  # type: ignore[assignment]
    ingest.sessions.update({k: _StubSession(busy=True, lagging=False) for k in "bc"})  # type: ignore[misc]
    await ingest.preflight("application/sdp", auth)  # two busy of three: admitted
    ingest.sessions["d"] = _StubSession(busy=True, lagging=False)  # type: ignore[assignment]
    with pytest.raises(ServerBusy):
        await ingest.preflight("application/sdp", auth)


def test_capacity_defaults_to_one_session_per_core() -> None:
    import os

    shipped = Settings().media
    assert shipped.max_live_sessions == 0  # auto
    assert shipped.live_session_capacity() == len(os.sched_getaffinity(0))
    assert Settings(media={"max_live_sessions": 5}).media.live_session_capacity() == 5


async def test_a_finished_session_releases_its_peer_connection_threads_and_frames(
    tmp_path: Path, media: TestMedia
) -> None:
    # What the media process holds after a check-in has ended and been judged: nothing of the session.
    faces, sink = SlowFakeFaces(), DroppingSink()
    with _server(tmp_path, sink, live=faces, analysis_chunk_frames=4) as (server, tokens, ingest):
        task = asyncio.create_task(_run_client(server.url, tokens.issue("person-r"), media))
        refs: dict[str, weakref.ref[Any]] = {}
        while not task.done() and not refs:
            for session in list(ingest.sessions.values()):
                receivers = [t.receiver for t in session.pc.getTransceivers()]
                if len(receivers) == 2:
                    refs = {"session": weakref.ref(session), "peer connection": weakref.ref(session.pc)}
                    refs.update({f"receiver {i}": weakref.ref(r) for i, r in enumerate(receivers)})
            await asyncio.sleep(0.01)
        del session, receivers
        await _until_closed(task, sink, ingest)
        # The server is still up (its loop, the ended session's state for GET /whip/<id>): only the
        # session is gone. Its media threads (decoders, the remuxer) have exited.
        for _ in range(100):
            session_threads = [
                t.name
                for t in threading.enumerate()
                if t.name.endswith("-decoder") or t.name.startswith("remux-")
            ]
            if not session_threads:
                break
            await asyncio.sleep(0.05)
        assert session_threads == []
        gc.collect()
        assert refs and {name: ref() is None for name, ref in refs.items()} == dict.fromkeys(refs, True)
        assert faces.seen and all(r() is None for r in faces.seen)
        assert sink.frame_refs and all(r() is None for r in sink.frame_refs)
