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
import queue
import signal
import sys
import time
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
# Longest wait for every worker of a pool to load its engines (dlib + torch + voice: seconds each).
WARM_TIMEOUT_S = 300.0


class AnalysisPool(Protocol):
    """Where engine jobs run: `fn` is a module-level function of an engine module."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    def submit_sync(self, fn: Callable[..., T], *args: Any) -> T: ...

    def warm(self) -> None:
        """Load the engines now (at service start), not on the first job; blocking."""
        ...

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


def _init_worker(
    models_dir: str, groups: dict[str, dict[str, Any]], parent_pid: int, ready: Any = None
) -> None:
    die_with_parent(parent_pid)
    init_engines(models_dir, groups)
    if ready is not None:
        ready.put(os.getpid())


def worker_pid() -> int:
    """The process id of the worker that runs this job (the pool's own no-op job)."""
    return os.getpid()


class WorkerPool:
    """A spawn process pool created on first use; `run` awaits a function call in a worker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._executor: ProcessPoolExecutor | None = None
        self._ready: Any = None
        # Worker processes that finished loading their engines (pids), for this pool generation.
        self.loaded: list[int] = []

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            s = self._settings
            ctx = multiprocessing.get_context("spawn")
            # Each worker reports here once its engines are loaded (initargs travel with the spawn).
            self._ready = ctx.Queue()
            self.loaded = []
            self._executor = ProcessPoolExecutor(
                max_workers=s.workers.processes,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(str(s.models.dir.resolve()), engine_groups(s), os.getpid(), self._ready),
            )
        return self._executor

    def warm(self) -> None:
        """Start every worker process and wait until each has loaded its engines.

        A spawn pool starts a process only when a job finds no idle one: one no-op job per process starts
        them all; each initializer reports its pid when its engines are loaded. Returns early (without
        error) when the pool is shut down meanwhile; raises TimeoutError after WARM_TIMEOUT_S.
        """
        executor = self._ensure()
        ready = self._ready
        n = self._settings.workers.processes
        for f in [executor.submit(worker_pid) for _ in range(n)]:
            f.result(timeout=WARM_TIMEOUT_S)
        deadline = time.monotonic() + WARM_TIMEOUT_S
        while len(self.loaded) < n:
            if self._executor is not executor:
                return  # shut down (or rebuilt after a crash) while warming
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n - len(self.loaded)} of {n} workers did not load their engines")
            try:
                self.loaded.append(int(ready.get(timeout=0.2)))
            except queue.Empty:
                continue

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
