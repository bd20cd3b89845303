"""Faults on the production profile (PostgreSQL + Ceph S3 + RabbitMQ + two `kuzet worker`s + Redis).

Each test drives a real breath test (signed reading, 3 photos) through the API while it breaks one
thing for real: kill -9 the Celery worker running the job; stop and restart RabbitMQ; stop the S3
server. It then checks the outcome, that the session has exactly one verdict, and that every stored
artifact is in S3 with its SHA-256. The suite prints: jobs redelivered, duplicate verdicts (must be 0),
evidence lost (must be 0).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from media_server.app import create_app
from media_server.db.models import Artifact, Verdict
from tests.api.conftest import Profile
from tests.api.seed import create_staff
from tests.api.test_breath_api import GENUINE, BreathApp, _post, _reading, _station, station_photos
from tests.conftest import (
    BROKER_URL,
    RESULT_BACKEND,
    S3_SCRIPT,
    CeleryQueue,
    S3Server,
    start_worker,
    stop_worker,
    wait_worker_ready,
)
from tests.faults.counters import COUNTERS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Genuine photos of the enrolled person, a different one per test (a repeated photo is flagged as reuse).
OTHER_GENUINE = ("Hugo_Chavez/Hugo_Chavez_0051.jpg", "Hugo_Chavez/Hugo_Chavez_0053.jpg")
JOB_START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0
BROKER_DOWN_S = 3.0


@dataclass
class World:
    api: BreathApp
    queue: CeleryQueue
    workers: dict[str, subprocess.Popen[bytes]]
    log_dir: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, s3_bucket: str) -> Iterator[World]:
    queue = CeleryQueue(BROKER_URL, RESULT_BACKEND, f"kuzet.faults.{secrets.token_hex(4)}")
    log_dir = tmp_path_factory.mktemp("fault-workers")
    workers = {name: start_worker(queue, name=name, log_dir=log_dir) for name in ("w1", "w2")}
    try:
        for _ in workers:
            wait_worker_ready(queue)
        profile = Profile("postgres", s3_server, s3_bucket, queue)
        with profile.settings(tmp_path_factory.mktemp("faults") / "var") as settings:
            app = create_app(settings)
            with TestClient(app) as client:
                create_staff(app.state.services)
                client.cookies.clear()
                api = BreathApp(client=client, services=app.state.services, settings=settings, app=app)
                yield World(api, queue, workers, log_dir)
                _count_duplicates_and_losses(api)
    finally:
        for proc in workers.values():
            stop_worker(proc)


def _count_duplicates_and_losses(api: BreathApp) -> None:
    """Across everything the module wrote: sessions with more than one verdict, artifacts not in S3 intact."""
    with api.services.sessions() as db:
        per_session = db.execute(
            select(Verdict.session_id, func.count()).group_by(Verdict.session_id).having(func.count() > 1)
        ).all()
        artifacts = list(db.scalars(select(Artifact)))
    COUNTERS["duplicate verdicts"] += len(per_session)
    store = api.services.store
    store.flush_spool()
    still_spooled = set(store.spool.keys())
    for a in artifacts:
        try:
            ok = a.key not in still_spooled and hashlib.sha256(store.get_bytes(a.key)).hexdigest() == a.sha256
        except Exception:
            ok = False
        if not ok:
            COUNTERS["evidence lost"] += 1


def _verdicts(api: BreathApp, session_id: str) -> int:
    with api.services.sessions() as db:
        return int(db.scalar(select(func.count()).where(Verdict.session_id == session_id)) or 0)


def _spy_jobs(api: BreathApp, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record the AsyncResult of every job the app publishes (the jobs still run for real)."""
    pool = api.services.workers
    real: Callable[..., Any] = pool._send
    sent: list[Any] = []

    def send(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        result = real(fn, args)
        sent.append(result)
        return result

    monkeypatch.setattr(pool, "_send", send)
    return sent


def _assert_judged(out: dict[str, Any]) -> None:
    """The photos were really analysed on a worker: a face check that is not technical, no engine failure."""
    assert all(c["code"] != "engine_failure" for c in out["checks"]), out["checks"]
    face = [c for c in out["checks"] if c["kind"] == "face"]
    assert face and face[0]["outcome"] in ("pass", "fail", "inconclusive"), out["checks"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_worker_killed_mid_job_is_redelivered_and_judged_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = world.api
    station = _station(api)
    photos = station_photos(GENUINE)
    body, sig = _reading(station, photos)
    sent = _spy_jobs(api, monkeypatch)
    with ThreadPoolExecutor(1) as ex:
        future = ex.submit(_post, api, body, sig, photos)
        deadline = time.monotonic() + JOB_START_TIMEOUT_S
        info: dict[str, Any] = {}
        while time.monotonic() < deadline and not future.done():
            if sent and sent[-1].state == "STARTED":
                info = dict(sent[-1].info or {})
                break
            time.sleep(0.02)
        assert info.get("hostname"), f"the photo job never started on a worker ({len(sent)} sent)"
        victim_name = str(info["hostname"]).split("@")[0]
        victim = world.workers[victim_name]
        children = _children(victim.pid)
        assert int(info["pid"]) in children
        os.kill(victim.pid, signal.SIGKILL)  # the worker's main process; its pool children must follow
        victim.wait(timeout=30)
        response = future.result(timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["decision"] == "pass", out["reasons"]
    assert sent[-1].state in ("SUCCESS", "PENDING")  # forgotten after it was read
    COUNTERS["jobs redelivered"] += 1
    orphans = [pid for pid in children if not _gone(pid)]
    COUNTERS["orphaned worker processes"] += len(orphans)
    assert not orphans, f"pool processes of the killed worker survived: {orphans}"
    assert _verdicts(api, out["session_id"]) == 1
    # bring the killed worker back for the next tests
    world.workers[victim_name] = start_worker(world.queue, name=victim_name, log_dir=world.log_dir)


def test_jobs_resume_after_rabbitmq_restarts(world: World) -> None:
    api = world.api
    station = _station(api)
    photos = station_photos(OTHER_GENUINE[0], seed=1)
    body, sig = _reading(station, photos)
    stopped = subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    try:
        with ThreadPoolExecutor(1) as ex:
            future = ex.submit(_post, api, body, sig, photos)
            time.sleep(BROKER_DOWN_S)  # the job's publish is retried while the broker is away
            assert not future.done()
            started = subprocess.run(
                ["rabbitmqctl", "start_app"], capture_output=True, text=True, timeout=120
            )
            assert started.returncode == 0, started.stderr
            response = future.result(timeout=REQUEST_TIMEOUT_S)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120)
    assert response.status_code == 201, response.text
    out = response.json()
    _assert_judged(out)
    assert _verdicts(api, out["session_id"]) == 1
    COUNTERS["jobs resumed after broker restart"] += 1


def test_s3_down_spools_then_all_evidence_reaches_s3_intact(world: World) -> None:
    api = world.api
    station = _station(api)
    photos = station_photos(OTHER_GENUINE[1], seed=2)
    body, sig = _reading(station, photos)
    stop = subprocess.run([str(S3_SCRIPT), "stop"], capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    try:
        response = _post(api, body, sig, photos)
    finally:
        start = subprocess.run([str(S3_SCRIPT), "start"], capture_output=True, text=True, timeout=300)
        assert start.returncode == 0, start.stderr[-2000:]
    assert response.status_code == 201, response.text
    out = response.json()
    _assert_judged(out)
    with api.services.sessions() as db:
        spooled = list(
            db.scalars(select(Artifact).where(Artifact.session_id == out["session_id"], Artifact.spooled))
        )
    assert spooled, "S3 was down, yet nothing was spooled"
    COUNTERS["artifacts spooled while S3 was down"] += len(spooled)
    deadline = time.monotonic() + 120
    while not api.services.store.healthy() and time.monotonic() < deadline:
        time.sleep(1)
    store = api.services.store
    moved = store.flush_spool()
    assert moved >= 1
    with api.services.sessions() as db:
        rows = list(db.scalars(select(Artifact).where(Artifact.session_id == out["session_id"])))
    left = set(store.spool.keys())
    for row in rows:
        assert row.key not in left, "an artifact is still only in the local spool"
        assert store.stat(row.key).spooled is False
        assert hashlib.sha256(store.get_bytes(row.key)).hexdigest() == row.sha256
    assert _verdicts(api, out["session_id"]) == 1
