"""Face analysis while the person is on camera, and the few frames a live session keeps.

Sampled frames go to the analysis pool in small chunks as they arrive (`LiveAnalyser.offer`): every
frame gets its face box, its own 68 landmarks (the liveness series) and its quality measures, but no
embedding. The session then holds only one frame per `held_frame_every_s` (the best by face quality,
at most `max_held_frames`): these are the evidence frames and the candidates whose embedding is computed
when the session ends. Everything else is released as soon as its chunk is analysed, so a session's
frame memory is bounded by `max_pending_frames + max_held_frames` whatever its length.

The analysis runs wherever the node's `AnalysisPool` runs engines (the local spawn pool, or Celery
workers): the media node itself loads no face model. A chunk that fails is counted, never retried
(its frames are gone); the checks see fewer frames and say so.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from identity.face.results import FaceAnalysis
from media_server.workers import AnalysisPool

log = logging.getLogger("kuzet.webrtc")

RgbFrame = npt.NDArray[np.uint8]

# Ranking of held frames: a gate-passing face beats a face that failed the gate, which beats no face.
_GATE_FAILED_PENALTY = 1_000.0
_NO_FACE_SCORE = -1_000_000.0


class LiveFaceAnalysis(Protocol):
    """Where a chunk of live frames is analysed (the worker pool in production, a fake in tests)."""

    async def analyse(self, frames: list[RgbFrame]) -> list[FaceAnalysis]: ...

    async def embed(self, frames: list[RgbFrame], analyses: list[FaceAnalysis]) -> list[FaceAnalysis]: ...


class PoolLiveAnalysis:
    """`LiveFaceAnalysis` on the node's analysis pool (`identity.face.worker.analyse_live`)."""

    def __init__(self, pool: AnalysisPool) -> None:
        self._pool = pool

    async def analyse(self, frames: list[RgbFrame]) -> list[FaceAnalysis]:
        """Landmarks, box and quality of each RGB frame (no embedding), in a worker."""
        from identity.face import worker as face_worker

        result: list[FaceAnalysis] = await self._pool.run(face_worker.analyse_live, frames)
        return result

    async def embed(self, frames: list[RgbFrame], analyses: list[FaceAnalysis]) -> list[FaceAnalysis]:
        """The same analyses with the primary face's embedding, in a worker."""
        from identity.face import worker as face_worker

        result: list[FaceAnalysis] = await self._pool.run(face_worker.embed_analyses, frames, analyses)
        return result


@dataclass(frozen=True, slots=True)
class HeldFrame:
    """A frame the session keeps: its session time, pixels, index in the analysis series, rank score."""

    t_s: float
    rgb: RgbFrame
    index: int
    score: float


@dataclass(frozen=True, slots=True)
class LiveResult:
    """The analysis series of a session (one entry per analysed frame, in time order) and its held frames.

    `analyses[i]` was made from the frame at `frame_ts[i]`; `reused_from` indexes this series. `held` is
    in time order; `held[j].index` points into the series.
    """

    frame_ts: list[float]
    analyses: list[FaceAnalysis]
    held: list[HeldFrame]
    stats: dict[str, int] = field(default_factory=dict)

    def best_held(self, n: int) -> list[HeldFrame]:
        """Up to n held frames whose face passed the quality gate, best first."""
        return _best(self.held, self.analyses, n)


def _best(held: list[HeldFrame], analyses: list[FaceAnalysis], n: int) -> list[HeldFrame]:
    good = [h for h in held if analyses[h.index].quality.passed and h.score > _NO_FACE_SCORE]
    return sorted(good, key=lambda h: -h.score)[:n]


def held_score(analysis: FaceAnalysis) -> float:
    """Rank of a frame for keeping (higher is better): sharp, large, frontal; a failed gate ranks below."""
    if analysis.primary_face is None or analysis.measures is None:
        return _NO_FACE_SCORE
    score = analysis.measures.score()
    return score if analysis.quality.passed else score - _GATE_FAILED_PENALTY


class LiveAnalyser:
    """One session's live analysis: a bounded queue of frames, one chunk job in flight at a time."""

    def __init__(
        self,
        port: LiveFaceAnalysis,
        *,
        chunk_frames: int,
        max_pending: int,
        held_every_s: float,
        max_held: int,
        embed_best: int = 0,
    ) -> None:
        self._port = port
        self._chunk = chunk_frames
        self._max_pending = max_pending
        self._held_every_s = held_every_s
        self._max_held = max_held
        self._embed_best = embed_best
        self._pending: list[tuple[float, RgbFrame]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._frame_ts: list[float] = []
        self._analyses: list[FaceAnalysis] = []
        self._held: dict[int, HeldFrame] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "frames_analysed",
                "frames_analysis_dropped",
                "frames_analysis_failed",
                "analysis_jobs",
                "peak_pending_frames",
                "frames_embedded",
                "frames_embedded_at_end",
            ),
            0,
        )

    @property
    def lagging(self) -> bool:
        """True while more than half of the analysis queue is waiting (the pool is falling behind)."""
        return len(self._pending) * 2 > self._max_pending

    @property
    def frames_held(self) -> int:
        """Frames this session holds now (waiting for analysis + kept)."""
        return len(self._pending) + len(self._held)

    def offer(self, t_s: float, rgb: RgbFrame) -> bool:
        """Queue a sampled frame (on the event loop; never blocks). False when the queue is full."""
        if self._closed:
            return False
        if len(self._pending) >= self._max_pending:
            self.stats["frames_analysis_dropped"] += 1
            return False
        self._pending.append((t_s, rgb))
        self.stats["peak_pending_frames"] = max(self.stats["peak_pending_frames"], len(self._pending))
        if len(self._pending) >= self._chunk and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._drain(full_only=True))
        return True

    async def _drain(self, *, full_only: bool) -> None:
        while self._pending and (len(self._pending) >= self._chunk or not full_only):
            chunk = self._pending[: self._chunk]
            del self._pending[: self._chunk]
            self.stats["analysis_jobs"] += 1
            try:
                analyses = await self._port.analyse([rgb for _, rgb in chunk])
                if len(analyses) != len(chunk):
                    raise ValueError(f"{len(analyses)} analyses for {len(chunk)} frames")
            except Exception:
                log.exception("live frame analysis failed", extra={"frames": len(chunk)})
                self.stats["frames_analysis_failed"] += len(chunk)
                continue
            self._absorb(chunk, analyses)
            # Held frames whose interval is over and that rank among the best are embedded now, so
            # that little is left to embed when the person stops (then `finish` embeds once, at the end).
            if not self._closed:
                await self._embed_best_held(closed_before=int(chunk[-1][0] // self._held_every_s))

    async def _embed_best_held(self, closed_before: int | None) -> int:
        """Embed the best held frames not embedded yet (only closed intervals unless None); how many."""
        if self._embed_best <= 0:
            return 0
        held = sorted(self._held.items())
        best = _best([h for _, h in held], self._analyses, self._embed_best)
        todo = [
            h
            for h in best
            if self._analyses[h.index].embedding is None
            and (closed_before is None or int(h.t_s // self._held_every_s) < closed_before)
        ]
        if not todo:
            return 0
        try:
            embedded = await self._port.embed([h.rgb for h in todo], [self._analyses[h.index] for h in todo])
            if len(embedded) != len(todo):
                raise ValueError(f"{len(embedded)} embeddings for {len(todo)} frames")
        except Exception:
            # The end of the session embeds what is missing (and reports a failure there).
            log.exception("live face embedding failed", extra={"frames": len(todo)})
            return 0
        for h, analysis in zip(todo, embedded, strict=True):
            self._analyses[h.index] = analysis
        self.stats["frames_embedded"] += len(todo)
        if self._closed:  # the person has stopped: this embedding adds to the verdict's latency
            self.stats["frames_embedded_at_end"] += len(todo)
        return len(todo)

    def _absorb(self, chunk: list[tuple[float, RgbFrame]], analyses: list[FaceAnalysis]) -> None:
        base = len(self._analyses)
        for (t_s, rgb), analysis in zip(chunk, analyses, strict=True):
            if analysis.reused_from is not None:
                analysis = replace(analysis, reused_from=base + analysis.reused_from)
            index = len(self._analyses)
            self._frame_ts.append(t_s)
            self._analyses.append(analysis)
            self.stats["frames_analysed"] += 1
            score = held_score(analysis)
            bucket = int(t_s // self._held_every_s)
            current = self._held.get(bucket)
            if current is None or score > current.score:
                self._held[bucket] = HeldFrame(t_s, rgb, index, score)
            if len(self._held) > self._max_held:
                worst = min(self._held, key=lambda b: (self._held[b].score, b))
                del self._held[worst]

    async def finish(self) -> LiveResult:
        """Analyse what is still queued, then hand over the series and the held frames and let go of them."""
        self._closed = True
        if self._task is not None:
            await self._task
        await self._drain(full_only=False)
        await self._embed_best_held(closed_before=None)
        held = sorted(self._held.values(), key=lambda h: h.t_s)
        result = LiveResult(list(self._frame_ts), list(self._analyses), held, dict(self.stats))
        self._pending, self._held, self._frame_ts, self._analyses = [], {}, [], []
        return result

    async def cancel(self) -> None:
        """Drop everything (a session whose setup failed)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._pending, self._held, self._frame_ts, self._analyses = [], {}, [], []


def return_freed_memory() -> None:
    """Ask glibc to give freed heap pages back to the OS (frames of ended sessions); no-op elsewhere.

    Large frame buffers freed in a busy process otherwise stay in malloc's arenas, and the server's RSS
    stays at its peak long after the load has gone. Blocking (milliseconds): call it off the event loop.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return
