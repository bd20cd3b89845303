"""The local worker pool: CPU-heavy engines run here (spawn processes), never on the event loop."""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from media_server.errors import ServiceUnavailable
from media_server.settings import Settings

log = logging.getLogger("kuzet.workers")

T = TypeVar("T")

# A job whose worker died is run again once on a rebuilt pool (jobs are pure functions of their input).
POOL_CRASH_ATTEMPTS = 2

# Each engine module exposes `init_worker(models_dir: str, settings: dict) -> None` that loads (and
# sha256-verifies) its weights inside the worker process.
ENGINE_INITIALISERS: tuple[tuple[str, str], ...] = (
    ("identity.face.worker", "face"),
    ("identity.voice.worker", "voice"),
    ("identity.pad.worker", "pad"),
)


def _init_worker(models_dir: str, groups: dict[str, dict[str, Any]]) -> None:
    for module_name, group in ENGINE_INITIALISERS:
        module = importlib.import_module(module_name)
        module.init_worker(models_dir, groups.get(group, {}))


class WorkerPool:
    """A spawn process pool created on first use; `run` awaits a function call in a worker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._executor: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            s = self._settings
            groups = {name: getattr(s, name).model_dump(mode="json") for _, name in ENGINE_INITIALISERS}
            self._executor = ProcessPoolExecutor(
                max_workers=s.workers.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(s.models.dir.resolve()), groups),
            )
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker process; `fn` must be a module-level function.

        A crashed pool (a worker killed for memory, an engine that cannot load) is rebuilt and the job
        (a pure function of its arguments) is run once more on the new pool; a second crash is
        reported as ServiceUnavailable: a technical failure, never a client error or a verdict.
        """
        loop = asyncio.get_running_loop()
        for attempt in range(1, POOL_CRASH_ATTEMPTS + 1):
            try:
                return await loop.run_in_executor(self._ensure(), fn, *args)
            except BrokenProcessPool as exc:
                log.error(
                    "worker pool broke; it will be rebuilt",
                    extra={"fn": getattr(fn, "__name__", "?"), "attempt": attempt},
                )
                self.shutdown(wait=False)
                if attempt == POOL_CRASH_ATTEMPTS:
                    raise ServiceUnavailable(
                        "the analysis engines are unavailable; try again shortly"
                    ) from exc
        raise AssertionError("unreachable")

    def submit_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking variant for CLI commands and threads."""
        return self._ensure().submit(fn, *args).result()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers (pending jobs are cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None
