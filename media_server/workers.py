"""Analysis pools: CPU-heavy engines run in worker processes, never on the event loop.

`WorkerPool` is the embedded default (a spawn process pool per node); `media_server.tasks.CeleryWorkerPool`
sends the same module-level engine functions to Celery workers (`kuzet worker`) when a broker is
configured. Both satisfy `AnalysisPool`; `build_pool(settings)` picks one.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

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
_PR_SET_PDEATHSIG = 1


class AnalysisPool(Protocol):
    """Where engine jobs run: `fn` is a module-level function of an engine module."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    def submit_sync(self, fn: Callable[..., T], *args: Any) -> T: ...

    def shutdown(self, wait: bool = True) -> None: ...


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if the parent is already gone.

    A server killed with -9 otherwise leaves its ~455 MB engine workers running as orphans.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed", extra={"errno": ctypes.get_errno()})
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


def engine_groups(settings: Settings) -> dict[str, dict[str, Any]]:
    """The settings groups each engine initialiser takes, as plain JSON-able dicts."""
    return {name: getattr(settings, name).model_dump(mode="json") for _, name in ENGINE_INITIALISERS}


def init_engines(models_dir: str, groups: dict[str, dict[str, Any]]) -> None:
    """Load every engine in this (worker) process."""
    for module_name, group in ENGINE_INITIALISERS:
        module = importlib.import_module(module_name)
        module.init_worker(models_dir, groups.get(group, {}))


def _init_worker(models_dir: str, groups: dict[str, dict[str, Any]], parent_pid: int) -> None:
    die_with_parent(parent_pid)
    init_engines(models_dir, groups)


class WorkerPool:
    """A spawn process pool created on first use; `run` awaits a function call in a worker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._executor: ProcessPoolExecutor | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            s = self._settings
            self._executor = ProcessPoolExecutor(
                max_workers=s.workers.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(s.models.dir.resolve()), engine_groups(s), os.getpid()),
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


def build_pool(settings: Settings) -> AnalysisPool:
    """Celery workers when a broker is configured, else the in-process spawn pool (embedded default)."""
    if settings.celery.broker_url:
        from media_server.tasks import CeleryWorkerPool

        return CeleryWorkerPool(settings)
    return WorkerPool(settings)
