"""The composition root takes its ports: the same app and flows run over a fake worker pool."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi.testclient import TestClient

from identity.checks import CheckKind, Outcome
from media_server.app import create_app
from media_server.jobs import run_engine
from media_server.services import Services, build_services
from media_server.settings import Settings

T = TypeVar("T")


class CrashingPool:
    """A worker pool whose every job crashes (as a worker killed for memory would)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        self.calls.append(fn.__name__)
        raise RuntimeError("worker died")

    def submit_sync(self, fn: Callable[..., T], *args: Any) -> T:
        raise RuntimeError("worker died")

    def warm(self) -> None:
        return None

    def shutdown(self, wait: bool = True) -> None:
        return None


def _job() -> int:
    return 1


def test_create_app_runs_over_the_ports_it_is_given(tmp_path: Path) -> None:
    pool = CrashingPool()

    def build(settings: Settings) -> Services:
        return dataclasses.replace(build_services(settings), workers=pool)

    app = create_app(Settings(data_dir=tmp_path / "var"), build=build)
    with TestClient(app) as client:
        services: Services = app.state.services
        assert services.workers is pool
        assert client.get("/readyz").json()["status"] == "ready"
        # a flow helper on the fake: the crash is a TECHNICAL result, never an exception or a violation
        result = asyncio.run(run_engine(services, CheckKind.FACE, _job))
        metrics = client.get("/metrics").text
    assert pool.calls == ["_job"]
    # the job, its latency and outcome, and the live WebRTC sessions are on /metrics
    assert 'kuzet_job_seconds_count{job="_job",outcome="crashed"} 1.0' in metrics
    assert "kuzet_jobs_in_flight 0.0" in metrics and "kuzet_webrtc_sessions_live 0.0" in metrics
    assert not isinstance(result, int) and result.outcome is Outcome.TECHNICAL
