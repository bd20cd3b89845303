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
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

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


# A job whose first argument is a list of image arrays of at least this many bytes in all gets them through
# a file on tmpfs instead of the pool's pipe (pickling ~1 MB frames through it cost ~1.4 CPU-ms a frame,
# parent and worker together; the file ~0.3).
FRAME_FILE_MIN_BYTES = 256 * 1024
FRAME_FILE_PREFIX = "kuzet-frames-"


def frame_dir() -> Path:
    """Where frame files go: RAM-backed /dev/shm where there is one, else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


@dataclass(frozen=True, slots=True)
class FrameFile:
    """Frames written one after another (C order) to `path`; `layout` is each one's dtype and shape."""

    path: str
    layout: tuple[tuple[str, tuple[int, ...]], ...]


def _frames_to_spill(arg: object) -> list[npt.NDArray[Any]] | None:
    if not isinstance(arg, list) or not arg:
        return None
    if not all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in arg):
        return None  # only plain numeric pixels are raw bytes (object arrays hold pointers)
    return arg if sum(a.nbytes for a in arg) >= FRAME_FILE_MIN_BYTES else None


def write_frame_file(frames: list[npt.NDArray[Any]]) -> FrameFile:
    """The frames in a new owner-only file (the caller unlinks it when the job is over)."""
    path = frame_dir() / f"{FRAME_FILE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            for frame in frames:
                f.write(np.ascontiguousarray(frame).data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FrameFile(str(path), tuple((a.dtype.str, tuple(a.shape)) for a in frames))


def read_frame_file(ff: FrameFile) -> list[npt.NDArray[Any]]:
    """The frames of `ff` as writable arrays in memory (nothing refers to the file afterwards)."""
    sizes = [int(np.prod(shape)) * np.dtype(dtype).itemsize for dtype, shape in ff.layout]
    buf = np.empty(sum(sizes), dtype=np.uint8)
    with open(ff.path, "rb") as f:
        if f.readinto(buf.data) != buf.nbytes:
            raise ValueError(f"frame file {ff.path} is shorter than its layout")
    out: list[npt.NDArray[Any]] = []
    offset = 0
    for (dtype, shape), n in zip(ff.layout, sizes, strict=True):
        out.append(buf[offset : offset + n].view(np.dtype(dtype)).reshape(shape))
        offset += n
    return out


def discard_frame_file(ff: FrameFile) -> None:
    """Delete the file (tmpfs: no disk I/O)."""
    Path(ff.path).unlink(missing_ok=True)


def call_with_frame_file(fn: Callable[..., T], ff: FrameFile, *rest: Any) -> T:
    """Worker side of a spilled job: `fn(frames, *rest)` with the frames read back from `ff`."""
    return fn(read_frame_file(ff), *rest)


def remove_stale_frame_files(directory: Path | None = None) -> int:
    """Delete frame files left by processes that are gone (a node killed mid-job); returns how many."""
    removed = 0
    for path in (directory or frame_dir()).glob(f"{FRAME_FILE_PREFIX}*"):
        try:
            pid = int(path.name[len(FRAME_FILE_PREFIX) :].split("-", 1)[0])
            os.kill(pid, 0)
            continue  # its owner is alive
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue  # not ours to judge
        path.unlink(missing_ok=True)
        removed += 1
    return removed


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
    """Load every engine in this (worker) process, then run each once on a synthetic input."""
    for module_name, group in ENGINE_INITIALISERS:
        module = importlib.import_module(module_name)
        module.init_worker(models_dir, groups.get(group, {}))
    warm_up_engines()


def warm_up_engines() -> None:
    """One inference per engine on synthetic input, so a job never pays the libraries' first-call set-up
    (dlib's allocations, torch's first forward pass). A failure here is logged and left to the first job."""
    import numpy as np

    from identity.face import worker as face_worker
    from identity.pad import worker as pad_worker
    from identity.voice import worker as voice_worker

    steps: list[tuple[str, Callable[[], object]]] = [
        ("face", lambda: face_worker.current_engine().encode_chips([np.zeros((150, 150, 3), np.uint8)])),
        ("pad", lambda: pad_worker.pad_score_rgb(np.full((240, 320, 3), 128, np.uint8), (100, 60, 220, 180))),
        ("voice", voice_worker.warm_up),
    ]
    for name, step in steps:
        try:
            step()
        except Exception:
            log.warning("engine warm-up failed", extra={"engine": name}, exc_info=True)


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
            remove_stale_frame_files()
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
        frames = _frames_to_spill(args[0]) if args else None
        if frames is None:
            return await self._run(fn, *args)
        # Large frame lists go through a tmpfs file, not the pool's pipe (see FRAME_FILE_MIN_BYTES).
        ff = await asyncio.to_thread(write_frame_file, frames)
        try:
            return await self._run(call_with_frame_file, fn, ff, *args[1:])
        finally:
            discard_frame_file(ff)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
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
