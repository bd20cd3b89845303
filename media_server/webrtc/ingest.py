"""The WHIP endpoint's service object: validates offers, authenticates, owns the live sessions."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from media_server.errors import NotFoundError, Unauthorized, UnsupportedMediaType
from media_server.services import Services
from media_server.settings import Settings
from media_server.webrtc.analysis import FeedbackLimits, FrameAdvisor
from media_server.webrtc.capture import EndedReason, SessionCapture, SessionSink
from media_server.webrtc.credentials import ServicesAuthenticator, WhipAuthenticator
from media_server.webrtc.sdp import keep_loopback_candidates, validate_offer
from media_server.webrtc.session import MediaSession

log = logging.getLogger("kuzet.webrtc")

SDP_MEDIA_TYPE = "application/sdp"
# How long shutdown waits for sessions to hand their captures over.
_SHUTDOWN_WAIT_S = 30.0

__all__ = ["PipelineSink", "WhipIngest", "install"]


class WhipIngest:
    """Creates, finds and ends WHIP sessions; one per app (on `app.state.whip_ingest`)."""

    def __init__(self, settings: Settings, authenticator: WhipAuthenticator, sink: SessionSink) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.sink = sink
        self.sessions: dict[str, MediaSession] = {}
        media = settings.media
        self._advisor = FrameAdvisor(
            FeedbackLimits(
                dark_luma=media.feedback_dark_luma,
                bright_luma=media.feedback_bright_luma,
                min_face_px=media.feedback_min_face_px,
            )
        )
        self._root = settings.data_dir / "media"

    async def open(self, content_type: str | None, authorization: str | None, body: bytes) -> tuple[str, str]:
        """POST /whip: (resource id, SDP answer). Checks run cheapest first; the credential is
        spent only on a well-formed offer, so a client bug does not burn a one-time link."""
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != SDP_MEDIA_TYPE:
            raise UnsupportedMediaType(f"Content-Type must be {SDP_MEDIA_TYPE}")
        if not authorization:
            raise Unauthorized("missing Authorization: Bearer credential")
        offer, summary = validate_offer(body, max_bytes=self.settings.media.max_offer_bytes)
        principal = await self.authenticator.authenticate(authorization)
        if self.settings.media.loopback_only:
            offer = keep_loopback_candidates(offer)
        resource_id = secrets.token_urlsafe(16)
        workdir = self._root / resource_id
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        session = MediaSession(
            resource_id=resource_id,
            principal=principal,
            media=self.settings.media,
            liveness=self.settings.liveness,
            sink=self.sink,
            advisor=self._advisor,
            workdir=workdir,
            on_closed=self._forget,
        )
        self.sessions[resource_id] = session
        try:
            answer = await session.accept(offer, summary.media, summary.has_data_channel)
        except BaseException:
            await session.abort()
            raise
        log.info(
            "whip session opened",
            extra={"session": principal.session_id, "resource": resource_id, "kind": principal.kind},
        )
        return resource_id, answer

    def _forget(self, resource_id: str) -> None:
        self.sessions.pop(resource_id, None)

    def delete(self, resource_id: str) -> None:
        """DELETE /whip/<id>: end the session (its capture still reaches the sink)."""
        session = self.sessions.get(resource_id)
        if session is None:
            raise NotFoundError("no such WHIP session")
        session.hangup()

    async def close_all(self) -> None:
        """End every live session (server shutdown) and wait for the hand-over to the sink."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.end(EndedReason.SERVER_SHUTDOWN)
            session.hangup()
        if sessions:
            await asyncio.wait(
                [asyncio.create_task(s.closed.wait()) for s in sessions], timeout=_SHUTDOWN_WAIT_S
            )


class PipelineSink:
    """The WHIP session's sink: `media_server.checkin.flow.finish_session(services, capture)`."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def finish(self, capture: SessionCapture) -> dict[str, Any] | None:
        from media_server.checkin.flow import finish_session

        result = await finish_session(self._services, capture)
        return result if isinstance(result, dict) else None


def install(
    app: FastAPI,
    *,
    authenticator: Callable[[Any], WhipAuthenticator] | None = None,
    sink: Callable[[Any], SessionSink] | None = None,
) -> None:
    """Wire WHIP into an app built by `create_app`: the ingest is made in the lifespan (from the
    services) and its sessions are ended at shutdown. Factories default to the real auth/pipeline."""

    async def start(services: Services) -> None:
        app.state.whip_ingest = WhipIngest(
            services.settings,
            (authenticator or ServicesAuthenticator)(services),
            (sink or PipelineSink)(services),
        )

    async def stop(services: Services) -> None:
        ingest: WhipIngest | None = getattr(app.state, "whip_ingest", None)
        if ingest is not None:
            await ingest.close_all()

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)
