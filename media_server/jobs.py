"""Engine jobs from the flows: run in the worker pool, a crash becomes a TECHNICAL result."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from identity.checks import CheckKind, CheckResult, Outcome
from media_server.services import Services

log = logging.getLogger("kuzet.jobs")

T = TypeVar("T")


def technical(kind: CheckKind, code: str, message: str, **details: object) -> CheckResult:
    """A TECHNICAL result: the system could not check (never a violation)."""
    return CheckResult(kind, Outcome.TECHNICAL, code, message, details=details)


async def run_engine(
    services: Services, kind: CheckKind, fn: Callable[..., T], *args: object
) -> T | CheckResult:
    """Run `fn(*args)` in the worker pool; any crash becomes a TECHNICAL result (never a violation)."""
    name = getattr(fn, "__name__", "?")
    metrics = services.metrics
    metrics.jobs_in_flight.inc()
    started = time.perf_counter()
    try:
        answer = await services.workers.run(fn, *args)
        metrics.job_seconds.labels(name, "ok").observe(time.perf_counter() - started)
        return answer
    except Exception as exc:
        metrics.job_seconds.labels(name, "crashed").observe(time.perf_counter() - started)
        log.exception("engine job failed", extra={"job": name})
        return technical(
            kind,
            "engine_failure",
            "An analysis engine failed twice (a technical fault, not a violation): a reviewer decides "
            "and a retake is offered.",
            error=repr(exc),
        )
    finally:
        metrics.jobs_in_flight.dec()
