"""Item 11: after a worker crash the job is really run again on a rebuilt pool, and when it cannot be
the person is told what really happens (a technical fault, not a violation, a new link comes) instead
of "the check will be retried"."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from identity.checks import CheckKind, Outcome
from media_server.errors import ServiceUnavailable
from media_server.i18n import checkin_strings
from media_server.jobs import run_engine
from media_server.services import Metrics
from media_server.settings import Settings
from media_server.workers import WorkerPool


class LightPool(WorkerPool):
    """The real `run` (crash handling, rebuild, retry) over a spawn pool without the engine loaders."""

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor


def die_once(marker: str) -> str:
    """Kill the worker the first time (as the OOM killer would), answer the second time."""
    if not os.path.exists(marker):
        Path(marker).write_text("crashed once")
        os._exit(9)
    return "analysed"


def die_always() -> str:
    os._exit(9)


async def test_a_crashed_worker_job_runs_again_on_a_rebuilt_pool(tmp_path: Path) -> None:
    pool = LightPool(Settings(data_dir=tmp_path))
    try:
        assert await pool.run(die_once, str(tmp_path / "marker")) == "analysed"
    finally:
        pool.shutdown()


async def test_a_job_that_keeps_crashing_is_a_technical_failure(tmp_path: Path) -> None:
    pool = LightPool(Settings(data_dir=tmp_path))
    try:
        with pytest.raises(ServiceUnavailable):
            await pool.run(die_always)

        class Services:
            workers = pool
            metrics = Metrics()

        result = await run_engine(Services(), CheckKind.FACE, die_always)  # type: ignore[arg-type]
    finally:
        pool.shutdown()
    assert result.outcome is Outcome.TECHNICAL and result.code == "engine_failure"
    assert "will be retried" not in result.message
    assert "not a violation" in result.message and "retake" in result.message


def test_the_person_is_told_what_happens_after_a_technical_failure() -> None:
    strings = checkin_strings()  # the check-in page's strings, from the ru / kk / en catalogs
    expected = {"en": "new link", "ru": "новую ссылку", "kk": "жаңа сілтеме"}
    for lang, phrase in expected.items():
        for key in ("outcome.retake", "outcome.error"):
            text = strings[lang][key]
            assert phrase in text, (lang, key, text)
            assert "retried" not in text and "try again" not in text.lower(), (lang, key)
