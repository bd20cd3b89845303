"""Frames reach a local worker through an owner-only tmpfs file, not the pool's pipe (issue 13): the same
pixels arrive, the file is gone when the job is over, small jobs keep the pipe, and files left by a
killed node are swept."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import stat
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media_server import workers
from media_server.settings import Settings
from media_server.workers import (
    FRAME_FILE_PREFIX,
    WorkerPool,
    call_with_frame_file,
    read_frame_file,
    remove_stale_frame_files,
    write_frame_file,
)


def _frames(n: int, h: int = 480, w: int = 640) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_round_trip_keeps_every_frame_and_the_file_is_owner_only() -> None:
    frames = [*_frames(2), np.arange(12, dtype=np.float32).reshape(3, 4), _frames(1, 10, 7)[0][:, ::-1]]
    ff = write_frame_file(frames)
    try:
        assert stat.S_IMODE(os.stat(ff.path).st_mode) == 0o600
        back = read_frame_file(ff)
    finally:
        workers.discard_frame_file(ff)
    assert not Path(ff.path).exists()
    assert len(back) == len(frames)
    for a, b in zip(frames, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert b.flags.writeable  # engines may work on the frame in place


def test_a_spawned_worker_reads_the_frames_from_the_file() -> None:
    frames = _frames(3)
    ff = write_frame_file(frames)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
            stacked = ex.submit(call_with_frame_file, np.stack, ff).result(timeout=120)
    finally:
        workers.discard_frame_file(ff)
    np.testing.assert_array_equal(stacked, np.stack(frames))


def test_run_spills_large_frame_lists_and_removes_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, tuple[Any, ...]]] = []

    async def in_process(self: WorkerPool, fn: Any, *args: Any) -> Any:
        calls.append((fn, args))
        return fn(*args)

    monkeypatch.setattr(WorkerPool, "_run", in_process)
    pool = WorkerPool(Settings())
    frames = _frames(2)

    def job(got: list[np.ndarray], extra: str) -> tuple[list[np.ndarray], str]:
        return [a.copy() for a in got], extra

    back, extra = asyncio.run(pool.run(job, frames, "x"))
    assert extra == "x"
    for a, b in zip(frames, back, strict=True):
        np.testing.assert_array_equal(a, b)
    fn, args = calls[-1]
    assert fn is call_with_frame_file and args[0] is job and args[2] == "x"
    assert not Path(args[1].path).exists()  # removed once the job is over

    # Small inputs (thumbnails, one small image) keep the pipe: no file.
    small = _frames(1, 32, 32)
    back, extra = asyncio.run(pool.run(job, small, "y"))
    assert extra == "y"
    np.testing.assert_array_equal(back[0], small[0])
    fn, args = calls[-1]
    assert fn is not call_with_frame_file and args[0] is small

    # Arrays of Python objects are pickled as they are (their bytes are pointers).
    objects = [np.empty((400, 400), dtype=object)]
    asyncio.run(pool.run(job, objects, "z"))
    fn, args = calls[-1]
    assert fn is not call_with_frame_file and args[0] is objects


def test_the_file_is_removed_when_the_job_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def failing(self: WorkerPool, fn: Any, *args: Any) -> Any:
        seen.append(args[1].path)
        raise RuntimeError("worker failed")

    monkeypatch.setattr(WorkerPool, "_run", failing)
    with pytest.raises(RuntimeError):
        asyncio.run(WorkerPool(Settings()).run(np.stack, _frames(2)))
    assert seen and not Path(seen[0]).exists()


def test_files_of_dead_processes_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    stale = tmp_path / f"{FRAME_FILE_PREFIX}{dead_pid}-abc"
    live = tmp_path / f"{FRAME_FILE_PREFIX}{os.getpid()}-def"
    other = tmp_path / "unrelated"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert remove_stale_frame_files(tmp_path) == 1
    assert not stale.exists() and live.exists() and other.exists()
