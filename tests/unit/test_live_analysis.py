"""LiveAnalyser: frames analysed in chunks as they arrive, a bounded queue, a few held frames, all released."""

from __future__ import annotations

import asyncio
import gc
import weakref
from dataclasses import replace

import numpy as np

from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from identity.face.results import FaceAnalysis, FaceObservation, FaceQuality
from identity.geometry import FaceBox
from media_server.webrtc.live import LiveAnalyser, held_score

STAMP = ModelStamp("fake-face", "0", "00" * 32)


def _analysis(rgb: np.ndarray, reused_from: int | None = None) -> FaceAnalysis:
    """A face whose sharpness is the frame's first pixel value (so tests choose which frame is best)."""
    sharp = float(rgb[0, 0, 0])
    face = FaceObservation(FaceBox(top=10, right=60, bottom=60, left=10), np.zeros((68, 2), np.int32), "fake")
    return FaceAnalysis(
        faces=[face],
        primary=0,
        quality=CheckResult(CheckKind.FACE_QUALITY, Outcome.PASS, "ok", "ok", model=STAMP),
        measures=FaceQuality(
            face_px=50, sharpness=sharp, brightness=120, saturated_fraction=0, yaw=0, roll_deg=0
        ),
        embedding=None,
        model=STAMP,
        image_shape=(rgb.shape[0], rgb.shape[1]),
        reused_from=reused_from,
    )


class FakePort:
    """Analyses chunks after `delay_s`; remembers (weakly) every frame it was given."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.seen: list[weakref.ref[np.ndarray]] = []
        self.chunks: list[int] = []
        self.embedded: list[int] = []

    async def analyse(self, frames: list[np.ndarray]) -> list[FaceAnalysis]:
        self.seen.extend(weakref.ref(f) for f in frames)
        self.chunks.append(len(frames))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("engine down")
        # The second frame of each chunk reuses the first one's identity analysis (a near-duplicate).
        return [_analysis(f, 0 if i == 1 else None) for i, f in enumerate(frames)]

    async def embed(self, frames: list[np.ndarray], analyses: list[FaceAnalysis]) -> list[FaceAnalysis]:
        self.embedded.extend(int(f[0, 0, 0]) for f in frames)
        return [
            replace(a, embedding=np.full(128, f[0, 0, 0], np.float32))
            for f, a in zip(frames, analyses, strict=True)
        ]


def _frame(value: int) -> np.ndarray:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[0, 0, 0] = value
    return rgb


def _analyser(port: FakePort, **kw: float) -> LiveAnalyser:
    opts = {"chunk_frames": 4, "max_pending": 12, "held_every_s": 1.0, "max_held": 3, "embed_best": 0, **kw}
    return LiveAnalyser(
        port,
        chunk_frames=int(opts["chunk_frames"]),
        max_pending=int(opts["max_pending"]),
        held_every_s=opts["held_every_s"],
        max_held=int(opts["max_held"]),
        embed_best=int(opts["embed_best"]),
    )


async def test_every_frame_is_analysed_in_time_order_and_the_best_per_interval_is_held() -> None:
    port = FakePort()
    live = _analyser(port, max_held=10)
    values = [10, 200, 30, 40, 50, 60, 250, 80, 90, 100]  # two per 1 s interval below
    for i, v in enumerate(values):
        assert live.offer(0.5 * i, _frame(v))
        await asyncio.sleep(0)
    result = await live.finish()
    assert result.frame_ts == [0.5 * i for i in range(len(values))]
    assert [int(a.measures.sharpness) for a in result.analyses] == values  # type: ignore[union-attr]
    assert port.chunks == [4, 4, 2]
    # reused_from is re-based from chunk-local to series indexes.
    assert [a.reused_from for a in result.analyses] == [None, 0, None, None, None, 4, None, None, None, 8]
    assert [int(h.rgb[0, 0, 0]) for h in result.held] == [200, 40, 60, 250, 100]
    assert [h.index for h in result.held] == [1, 3, 5, 6, 9]
    best = result.best_held(2)
    assert [int(h.rgb[0, 0, 0]) for h in best] == [250, 200]
    assert best[0].score == held_score(result.analyses[6])


async def test_held_frames_are_capped_by_quality_and_the_queue_is_bounded() -> None:
    port = FakePort(delay_s=0.05)
    live = _analyser(port, max_pending=6, max_held=3, held_every_s=0.25)
    accepted = sum(live.offer(0.25 * i, _frame(i + 1)) for i in range(20))  # faster than the fake analyses
    assert accepted == 6 and live.stats["frames_analysis_dropped"] == 14
    assert live.lagging  # more than half the queue waits: the node admits no new session meanwhile
    assert live.frames_held <= 6 + 3
    result = await live.finish()
    assert not live.lagging
    assert len(result.analyses) == 6
    assert len(result.held) == 3
    assert [int(h.rgb[0, 0, 0]) for h in result.held] == [4, 5, 6]  # the three sharpest survive


async def test_a_failed_chunk_is_counted_and_the_session_goes_on() -> None:
    port = FakePort(fail=True)
    live = _analyser(port)
    for i in range(5):
        live.offer(0.1 * i, _frame(i))
    result = await live.finish()
    assert result.analyses == [] and result.held == []
    assert result.stats["frames_analysis_failed"] == 5


async def test_frames_are_released_once_the_result_is_dropped() -> None:
    port = FakePort()
    live = _analyser(port)
    for i in range(9):
        live.offer(0.3 * i, _frame(i))
    result = await live.finish()
    assert live.frames_held == 0  # the analyser itself let go at finish
    assert any(r() is not None for r in port.seen)  # the held frames live on in the result only
    del result
    gc.collect()
    assert all(r() is None for r in port.seen)


async def test_the_best_held_frames_are_embedded_while_the_session_runs() -> None:
    port = FakePort()
    live = _analyser(port, max_held=10, embed_best=2)
    values = [10, 200, 30, 40, 50, 60, 250, 80, 90, 100]  # held per 1 s: 200, 40, 60, 250, 100
    for i, v in enumerate(values):
        live.offer(0.5 * i, _frame(v))
        await asyncio.sleep(0)
    # Before the end: only frames of closed intervals that rank were embedded (200; 250's interval is open).
    await asyncio.sleep(0.05)
    assert port.embedded == [200]
    result = await live.finish()
    assert port.embedded == [200, 250]  # once the person stopped, only 250 was left to embed
    assert result.stats["frames_embedded"] == 2 and result.stats["frames_embedded_at_end"] == 1
    assert [int(h.rgb[0, 0, 0]) for h in result.best_held(2)] == [250, 200]
    assert all(result.analyses[h.index].embedding is not None for h in result.best_held(2))
    assert sum(a.embedding is not None for a in result.analyses) == 2
