"""Analysis on Celery workers: the same module-level engine functions the local pool runs, on RabbitMQ.

`CeleryWorkerPool` has the interface of `media_server.workers.WorkerPool` (`run`, `submit_sync`,
`shutdown`), so the flows do not change: `build_pool` picks it when `KUZET_CELERY__BROKER_URL` is set.
An API node only publishes jobs and polls for results; engines load in `kuzet worker` processes
(`run_worker`), never on a media/API node.

Delivery: late acknowledgement (`acks_late`) and `reject_on_worker_lost`, one reserved job per process
(`worker_prefetch_multiplier=1`), durable queue and persistent messages: a worker killed mid-job never
acknowledged it, so RabbitMQ hands the job to another worker. A job may therefore run twice; the engine
functions are pure and the verdict is written once by the API node (enforced by the UNIQUE
verdicts(session_id) constraint, migration 0005).

Jobs carry numpy arrays and result dataclasses, so messages are pickled: the broker must be private to
the service (anyone who can publish to its queue can run code in the workers). Only functions of the
engine modules in ENGINE_MODULES are ever called.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, signals
from celery.result import AsyncResult
from celery.states import READY_STATES

from media_server.errors import ServiceUnavailable
from media_server.settings import Settings
from media_server.workers import die_with_parent, engine_groups, init_engines

log = logging.getLogger("kuzet.tasks")

T = TypeVar("T")

ENGINE_JOB = "kuzet.engine_job"
# The only modules whose functions a job may name.
ENGINE_MODULES = frozenset(
    {"identity.face.worker", "identity.voice.worker", "identity.pad.worker", "sobriety.worker"}
)
# Publishing retries across a broker restart (~1 minute in all) before the job is a technical failure.
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}
# Engines load in each worker process before it takes a job (dlib + torch: seconds, not Celery's 4 s).
WORKER_INIT_TIMEOUT_S = 300.0


def engine_job(module: str, name: str, args: tuple[Any, ...]) -> Any:
    """Call `module.name(*args)` in this worker process (an allowlisted engine module only)."""
    if module not in ENGINE_MODULES:
        raise ValueError(f"{module}.{name} is not an engine job")
    fn = getattr(importlib.import_module(module), name)
    return fn(*args)


def make_celery(settings: Settings) -> Celery:
    """The Celery app for `settings` (no global app: API nodes and workers each build their own)."""
    c = settings.celery
    backend = c.result_backend or settings.redis.url
    if not c.broker_url:
        raise ValueError("KUZET_CELERY__BROKER_URL is empty: there is no broker to use")
    if not backend:
        raise ValueError(
            "Celery needs a result backend: set KUZET_CELERY__RESULT_BACKEND or KUZET_REDIS__URL"
        )
    app = Celery("kuzet", broker=c.broker_url, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="pickle",
        result_serializer="pickle",
        accept_content=["pickle"],
        result_accept_content=["pickle"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=c.queue,
        task_default_delivery_mode="persistent",
        task_track_started=True,
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY,
        result_expires=c.result_expires_s,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a broker restart
        worker_proc_alive_timeout=WORKER_INIT_TIMEOUT_S,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.task(name=ENGINE_JOB, acks_late=True, reject_on_worker_lost=True)(engine_job)
    return app


class CeleryWorkerPool:
    """`WorkerPool`'s interface over Celery: `run(fn, *args)` awaits `fn(*args)` on some `kuzet worker`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app = make_celery(settings)

    def _send(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> AsyncResult:
        module, name = fn.__module__, fn.__qualname__
        if module not in ENGINE_MODULES or "." in name:
            raise ValueError(f"{module}.{name} is not a module-level function of an engine module")
        return self._app.send_task(ENGINE_JOB, args=(module, name, args), queue=self._settings.celery.queue)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Publish the job, then poll its result; the broker or a lost job is ServiceUnavailable."""
        c = self._settings.celery
        try:
            result = await asyncio.to_thread(self._send, fn, args)
        except ValueError:
            raise
        except Exception as exc:  # kombu's OperationalError and socket errors after the publish retries
            log.error("could not publish an analysis job", extra={"error": repr(exc)})
            raise ServiceUnavailable("the analysis queue is unavailable; try again shortly") from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + c.job_timeout_s
        while await asyncio.to_thread(lambda: result.state) not in READY_STATES:
            if loop.time() > deadline:
                log.error("analysis job timed out", extra={"task_id": result.id})
                raise ServiceUnavailable("the analysis job did not finish in time; try again shortly")
            await asyncio.sleep(c.result_poll_s)
        try:
            value: T = await asyncio.to_thread(result.get, timeout=c.job_timeout_s, propagate=True)
        finally:
            await asyncio.to_thread(result.forget)
        return value

    def submit_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking variant for CLI commands and threads."""
        result = self._send(fn, args)
        try:
            value: T = result.get(timeout=self._settings.celery.job_timeout_s, propagate=True)
        finally:
            result.forget()
        return value

    def warm(self) -> None:
        """Nothing to load on an API node: `kuzet worker` processes load their engines when they start
        (`worker_process_init`), before they take a job."""
        return None

    def shutdown(self, wait: bool = True) -> None:
        """Close the broker and backend connections (jobs in flight stay queued for the workers)."""
        self._app.close()


def run_worker(settings: Settings, *, concurrency: int | None = None, hostname: str | None = None) -> None:
    """Run a Celery worker in this process until stopped: engines load in each of its child processes,
    which die with it (PR_SET_PDEATHSIG)."""
    app = make_celery(settings)
    models_dir = str(settings.models.dir.resolve())
    groups = engine_groups(settings)
    main_pid = os.getpid()

    def _load_engines(**_: Any) -> None:
        die_with_parent(main_pid)
        init_engines(models_dir, groups)

    signals.worker_process_init.connect(_load_engines, weak=False)

    argv = [
        "worker",
        f"--concurrency={concurrency or settings.workers.processes}",
        "--pool=prefork",
        f"--queues={settings.celery.queue}",
        f"--loglevel={settings.log_level.upper()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname={hostname or f'kuzet-{main_pid}@%h'}",
    ]
    app.worker_main(argv)
