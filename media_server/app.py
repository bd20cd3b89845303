"""FastAPI app factory: the one composition root of the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from media_server import logs, security
from media_server.breath import run_episode_clock
from media_server.errors import KuzetError, headers_for, status_for
from media_server.evidence.port import EvidenceError, ObjectLocked
from media_server.evidence.port import IntegrityError as EvidenceIntegrityError
from media_server.evidence.port import NotFound as EvidenceNotFound
from media_server.hygiene import install as install_hygiene
from media_server.keys import SignerUnavailable
from media_server.leader import build_lease
from media_server.links import deliver_link
from media_server.recovery import run_recovery
from media_server.schedules import IssuedSession, derive_seed_key, run_scheduler
from media_server.services import Services, build_services
from media_server.settings import Settings

log = logging.getLogger("kuzet")


async def _flush_spool_forever(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.evidence.spool_retry_s)
        try:
            n = await asyncio.to_thread(services.store.flush_spool)
            if n:
                log.info("spooled artifacts uploaded", extra={"count": n})
        except Exception:
            log.exception("spool flush failed; will retry")


def _link_deliverer(services: Services) -> Callable[[IssuedSession], Awaitable[None]]:
    """One-time links go to the agency's SMS/push gateway through the webhook (it holds the phone numbers);
    `media_server.links.deliver_link` records on the session whether the gateway accepted it."""

    async def deliver(issued: IssuedSession) -> None:
        await deliver_link(services, issued)

    return deliver


def create_app(
    settings: Settings | None = None, build: Callable[[Settings], Services] = build_services
) -> FastAPI:
    """The ASGI app. Resources are created in the lifespan, so importing this is cheap.

    `build` is the composition root: `build_services` makes the real ports; a test passes its own to run
    the same app and flows over fakes (an in-memory store, a pool that never forks, ...).
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(settings.log_level)
        services = await asyncio.to_thread(build, settings)
        app.state.services = services
        services.background.append(asyncio.create_task(_flush_spool_forever(services)))
        if settings.workers.warm_at_start:
            services.background.append(asyncio.create_task(_warm_workers(services)))
        lease = build_lease(settings.redis.url, "scheduler", int(settings.redis.lease_ttl_s * 1000))
        services.background.append(asyncio.create_task(run_recovery(services, lease.acquire)))
        services.background.append(
            asyncio.create_task(run_episode_clock(services, settings.schedules.tick_s, lease.acquire))
        )
        services.background.append(
            asyncio.create_task(
                run_scheduler(
                    services,
                    seed_key=derive_seed_key(services.keys.secret_key),
                    deliver=_link_deliverer(services),
                    is_leader=lease.acquire,
                )
            )
        )
        for hook in app.state.startup_hooks:
            await hook(services)
        log.info("kuzet ready", extra={"database": services.engine.url.get_backend_name()})
        try:
            yield
        finally:
            for task in services.background:
                task.cancel()
            for hook in app.state.shutdown_hooks:
                await hook(services)
            await services.notifier.aclose()
            services.workers.shutdown()
            services.engine.dispose()

    app = FastAPI(
        title="Kuzet",
        version="0.1.0",
        description="Remote identity-and-sobriety checks for probation supervision.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    _install_error_handlers(app)
    _install_middleware(app, settings)
    security.install(app, settings)
    _install_probes(app)
    _include_routers(app)
    install_hygiene(app)
    from media_server.webrtc.ingest import install as install_whip

    install_whip(app)
    from media_server.calls import install as install_calls

    install_calls(app)
    return app


async def _warm_workers(services: Services) -> None:
    """Load the analysis engines now, not on the first job (a failure here is retried by that job)."""
    try:
        await asyncio.to_thread(services.workers.warm)
        log.info("analysis workers warm")
    except Exception:
        log.exception("warming the analysis workers failed; they load on the first job")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KuzetError)
    async def domain_error(_: Request, exc: KuzetError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.code, "message": str(exc)}, status_code=status_for(exc), headers=headers_for(exc)
        )

    @app.exception_handler(EvidenceError)
    async def evidence_error(_: Request, exc: EvidenceError) -> JSONResponse:
        if isinstance(exc, EvidenceNotFound):
            return _error(404, "evidence_not_found", "this artifact is not in the evidence store")
        if isinstance(exc, EvidenceIntegrityError):
            log.error("stored evidence failed its hash check", extra={"error": str(exc)})
            return _error(
                409, "evidence_integrity", "the stored artifact does not match its SHA-256; reported"
            )
        if isinstance(exc, ObjectLocked):
            return _error(409, "evidence_locked", "this artifact is under retention or legal hold")
        return _error(503, "evidence_unavailable", "the evidence store is unavailable; try again shortly")

    @app.exception_handler(SignerUnavailable)
    async def signer_down(_: Request, exc: SignerUnavailable) -> JSONResponse:
        # The evidence is stored; the verdict waits for the signer (the recovery sweep or a resend).
        log.error("the evidence signer failed", extra={"error": str(exc)})
        response = _error(503, "signer_unavailable", "the evidence signer is unavailable; try again shortly")
        response.headers["Retry-After"] = str(app.state.settings.database.retry_after_s)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        ]
        return _error(422, "validation_error", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path == "/ws" or request.url.path.startswith("/ws/"):
            # Raised by routing (a method the page does not take: 405), outside the workstation's routes.
            from media_server.api.workstation import error_page

            # off the event loop: the page looks up who is logged in
            return await asyncio.to_thread(error_page, request, exc.status_code, str(exc.detail), exc.headers)
        return JSONResponse(
            {"error": "http_error", "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    limit = settings.evidence.max_upload_bytes

    @app.middleware("http")
    async def guard_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error(400, "bad_input", "Content-Length is not a number")
            if int(length) > limit:
                return _error(413, "too_large", f"upload exceeds the {limit} byte limit")
        start = time.perf_counter()
        response = await call_next(request)
        services: Services | None = getattr(request.app.state, "services", None)
        if services is not None:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            services.metrics.requests.labels(request.method, route, str(response.status_code)).inc()
            services.metrics.latency.labels(request.method, route).observe(time.perf_counter() - start)
        return response


def _install_probes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the database answers and the evidence store (or its spool) accepts writes."""
        services: Services = request.app.state.services

        def probe() -> dict[str, str]:
            with services.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return {"database": "ok", "evidence_store": "ok" if services.store.healthy() else "spooling"}

        try:
            checks = await asyncio.to_thread(probe)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        # An S3 outage degrades to the local spool: still ready, nothing is lost.
        return JSONResponse({"status": "ready", **checks})

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        services: Services = request.app.state.services
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _include_routers(app: FastAPI) -> None:
    from media_server.api import routers

    for router in routers():
        app.include_router(router)
