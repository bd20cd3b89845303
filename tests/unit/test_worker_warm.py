"""The analysis pool loads its engines when the service starts, not on the first job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fastapi.testclient import TestClient

from media_server.app import create_app
from media_server.settings import Settings
from media_server.workers import WorkerPool, worker_pid

MODELS = Path(__file__).resolve().parents[2] / "var" / "models"


def engines_loaded() -> tuple[int, bool, bool]:
    """(pid, face engine built, PAD engine built) in the worker that runs this job."""
    import os

    from identity.face import worker as face_worker
    from identity.pad import worker as pad_worker

    return os.getpid(), face_worker._ENGINE is not None, pad_worker._state.get("engine") is not None


def test_workers_load_their_engines_at_start_before_any_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", models={"dir": MODELS.resolve()})
    assert settings.workers.warm_at_start  # the shipped default
    app = create_app(settings)
    with TestClient(app):
        pool = app.state.services.workers
        assert isinstance(pool, WorkerPool)
        deadline = time.monotonic() + 240
        while len(pool.loaded) < settings.workers.processes:
            assert time.monotonic() < deadline, f"only {pool.loaded} of the workers loaded their engines"
            time.sleep(0.1)
        warm = set(pool.loaded)
        # Every process was started and loaded by the service itself; a job now runs on one of them,
        # with its engines already there.
        assert len(warm) == settings.workers.processes
        pid, face, pad = asyncio.run(pool.run(engines_loaded))
        assert pid in warm and face and pad
        assert asyncio.run(pool.run(worker_pid)) in warm


def test_warm_starts_and_loads_every_worker_of_a_pool(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        models={"dir": MODELS.resolve()},
        workers={"processes": 1, "warm_at_start": False},
    )
    pool = WorkerPool(settings)
    try:
        assert pool.loaded == []
        pool.warm()
        assert len(pool.loaded) == 1 and asyncio.run(pool.run(worker_pid)) == pool.loaded[0]
    finally:
        pool.shutdown()
