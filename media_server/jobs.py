"""Engine jobs from the flows: run in the worker pool, a crash becomes a TECHNICAL result."""

from __future__ import annotations

import logging
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
    try:
        return await services.workers.run(fn, *args)
    except Exception as exc:
        log.exception("engine job failed", extra={"job": getattr(fn, "__name__", "?")})
        return technical(
            kind,
            "engine_failure",
            "An analysis engine failed: the session goes to a reviewer and a retake is offered.",
            error=repr(exc),
        )
