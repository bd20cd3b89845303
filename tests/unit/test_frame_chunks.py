"""A check-in's frames go to the analysis workers in jobs of bounded size (RabbitMQ refuses > 128 MiB)."""

from __future__ import annotations

import numpy as np

from media_server.checkin.checks import frame_chunks
from media_server.settings import Settings


def test_chunks_keep_order_and_stay_under_the_byte_bound() -> None:
    frames = [np.full((480, 640, 3), i % 256, dtype=np.uint8) for i in range(277)]  # a default check-in
    bound = Settings().workers.max_job_frame_bytes
    chunks = frame_chunks(frames, bound)
    assert len(chunks) > 1
    assert all(sum(f.nbytes for f in chunk) <= bound for chunk in chunks)
    flat = [f for chunk in chunks for f in chunk]
    assert len(flat) == len(frames) and all(a is b for a, b in zip(flat, frames, strict=True))
    # the shipped bound keeps every job far below RabbitMQ's default 128 MiB message limit
    assert bound * 2 < 128 * 1024 * 1024


def test_a_frame_larger_than_the_bound_still_gets_a_job_of_its_own() -> None:
    big = [np.zeros((2160, 3840, 3), dtype=np.uint8) for _ in range(3)]
    assert [len(c) for c in frame_chunks(big, 1024 * 1024)] == [1, 1, 1]
    assert frame_chunks([], 1024) == []
