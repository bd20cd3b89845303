"""Live analysis in the production profile: frame chunks and best-frame embeddings run on a `kuzet worker`
(Celery on RabbitMQ), the calling node loads no face model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from media_server.tasks import CeleryWorkerPool
from media_server.webrtc.live import LiveAnalyser, PoolLiveAnalysis
from tests.conftest import CeleryQueue

pytestmark = pytest.mark.integration


def _frames(n: int) -> list[np.ndarray]:
    """The astronaut's head as a phone frames it (640x480), swaying a few pixels per frame."""
    face = Image.fromarray(data.astronaut()).crop((84, 0, 364, 280)).resize((480, 480))
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:, 80:560] = np.asarray(face)
    return [np.roll(canvas, int(6 * np.sin(i / 3)), axis=1) for i in range(n)]


async def test_frames_are_analysed_and_the_best_embedded_on_celery_workers(
    celery_queue: CeleryQueue, celery_worker: subprocess.Popen[bytes]
) -> None:
    # Earlier tests of a whole-suite run may have loaded dlib in this process; the check below is
    # meaningful only when it was not loaded yet (as in a fresh media node).
    dlib_loaded_before = "dlib" in sys.modules
    pool = CeleryWorkerPool(celery_queue.settings(job_timeout_s=120))
    try:
        live = LiveAnalyser(
            PoolLiveAnalysis(pool), chunk_frames=4, max_pending=40, held_every_s=0.5, max_held=6, embed_best=3
        )
        for i, rgb in enumerate(_frames(16)):
            assert live.offer(0.2 * i, rgb)
        result = await live.finish()
    finally:
        pool.shutdown()
    assert result.stats["frames_analysed"] == 16 and result.stats["frames_analysis_failed"] == 0
    assert all(
        a.primary_face is not None and a.primary_face.landmarks.shape == (68, 2) for a in result.analyses
    )
    best = result.best_held(3)
    assert len(best) == 3
    assert all(result.analyses[h.index].embedding is not None for h in best)
    assert sum(a.embedding is not None for a in result.analyses) == result.stats["frames_embedded"] >= 3
    # This process never loaded dlib: the engines ran in the worker.
    assert dlib_loaded_before or "dlib" not in sys.modules
