"""The local worker pool: CPU-heavy engines run here (spawn processes), never on the event loop."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from media_server.settings import Settings

T = TypeVar("T")

# Each engine module exposes `init(models_dir: str, settings: dict) -> None` that only records its
# arguments; the engine itself loads on first use inside the worker process.
ENGINE_INITIALISERS: tuple[tuple[str, str], ...] = (
    ("identity.face.worker", "face"),
    ("identity.voice.worker", "voice"),
    ("identity.pad.worker", "pad"),
)


def _init_worker(models_dir: str, groups: dict[str, dict[str, Any]]) -> None:
    for module_name, group in ENGINE_INITIALISERS:
        module = importlib.import_module(module_name)
        module.init(models_dir, groups.get(group, {}))


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
        """Run `fn(*args)` in a worker process; `fn` must be a module-level function."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._ensure(), fn, *args)

    def submit_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking variant for CLI commands and threads."""
        return self._ensure().submit(fn, *args).result()

    def shutdown(self) -> None:
        """Stop the workers (pending jobs are cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
