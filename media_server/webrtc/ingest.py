"""The WHIP endpoint's service object: validates offers, authenticates, owns the live sessions."""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from media_server.auth import WhipPrincipal, require_bearer
from media_server.errors import (
    BadInput,
    Forbidden,
    KuzetError,
    NotFoundError,
    ServerBusy,
    UnsupportedMediaType,
)
from media_server.services import Services
from media_server.settings import Settings
from media_server.tokens import token_hash
from media_server.webrtc.analysis import FeedbackLimits, FrameAdvisor
from media_server.webrtc.capture import EndedReason, SessionCapture, SessionSink
from media_server.webrtc.credentials import ServicesAuthenticator, WhipAuthenticator
from media_server.webrtc.heap import set_mmap_threshold
from media_server.webrtc.live import LiveFaceAnalysis, PoolLiveAnalysis
from media_server.webrtc.nodes import new_resource_id
from media_server.webrtc.sdp import OfferSummary, keep_loopback_candidates, validate_offer
from media_server.webrtc.session import MediaSession

log = logging.getLogger("kuzet.webrtc")

SDP_MEDIA_TYPE = "application/sdp"
# How long shutdown waits for sessions to hand their captures over.
_SHUTDOWN_WAIT_S = 30.0

__all__ = ["CheckinSink", "WhipIngest", "install"]


class WhipIngest:
    """Creates, finds and ends WHIP sessions; one per app (on `app.state.whip_ingest`)."""

    def __init__(
        self,
        settings: Settings,
        authenticator: WhipAuthenticator,
        sink: SessionSink,
        *,
        live: LiveFaceAnalysis | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.sink = sink
        self._live = live
        self._on_refused = on_refused
        # Offers admitted whose session is not registered yet (authentication and setup in progress).
        self._reserved = 0
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
        # A call's session runs until the officer ends it (or calls.max_call_s).
        self._call_media = media.model_copy(update={"max_session_s": settings.calls.max_call_s})
        # resource id -> sha256 of the bearer that opened it (DELETE must present the same one).
        self._bearers: dict[str, str] = {}
        # Sessions that ended, kept a while so a client whose peer died still learns the outcome.
        self._ended: OrderedDict[str, tuple[str, float, dict[str, Any]]] = OrderedDict()

    @staticmethod
    def _check_content_type(content_type: str | None) -> None:
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != SDP_MEDIA_TYPE:
            raise UnsupportedMediaType(f"Content-Type must be {SDP_MEDIA_TYPE}")

    async def preflight(self, content_type: str | None, authorization: str | None) -> None:
        """What POST /whip checks before it reads a byte of the body: the media type and that the
        credential could open a session now (nothing is spent), so a bogus caller uploads nothing."""
        self._check_content_type(content_type)
        require_bearer(authorization)
        await self.authenticator.check(authorization)
        self._admit()

    def busy_sessions(self) -> int:
        """Sessions costing this node work now (live, or ended and not yet judged)."""
        return sum(1 for s in self.sessions.values() if s.busy) + self._reserved

    def _admit(self) -> None:
        """Refuse a new session the node cannot serve without loss (before any credential is spent)."""
        media = self.settings.media
        # Full, or already falling behind (the analysis of a live session is backing up: the machine
        # is slower than measured, e.g. shared): one more session would cost frames of all of them.
        lagging = any(s.analysis_lagging for s in self.sessions.values())
        if self.busy_sessions() >= media.live_session_capacity() or lagging:
            if self._on_refused is not None:
                self._on_refused()
            log.warning(
                "whip session refused: node at capacity",
                extra={"busy": self.busy_sessions(), "analysis_lagging": lagging},
            )
            raise ServerBusy(
                "this node is falling behind with its sessions; try again shortly"
                if lagging
                else f"this node is serving {media.live_session_capacity()} sessions; try again shortly",
                media.busy_retry_after_s,
            )

    async def open(self, content_type: str | None, authorization: str | None, body: bytes) -> tuple[str, str]:
        """POST /whip: (resource id, SDP answer). Checks run cheapest first; the credential is
        spent only on a well-formed offer, and given back when the media stack then refuses the
        offer, so a client bug does not burn a one-time link nor leave a session active."""
        self._check_content_type(content_type)
        token = require_bearer(authorization)
        offer, summary = validate_offer(body, max_bytes=self.settings.media.max_offer_bytes)
        # Checked again once the body arrived, and the slot held while the credential is checked and
        # spent, so concurrent offers cannot all pass one free slot.
        self._admit()
        self._reserved += 1
        try:
            principal = await self.authenticator.authenticate(authorization)
        except BaseException:
            self._reserved -= 1
            raise
        return await self._open_session(principal, token, offer, summary)

    async def _open_session(
        self, principal: WhipPrincipal, token: str, offer: str, summary: OfferSummary
    ) -> tuple[str, str]:
        if self.settings.media.loopback_only:
            offer = keep_loopback_candidates(offer)
        resource_id = new_resource_id(self.settings.node)
        workdir = self._root / resource_id
        try:
            await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
            is_call = principal.kind == "call"
            session = MediaSession(
                resource_id=resource_id,
                principal=principal,
                media=self._call_media if is_call else self.settings.media,
                liveness=self.settings.liveness,
                sink=self.sink,
                advisor=self._advisor,
                workdir=workdir,
                on_closed=self._forget,
                ends_after_challenge=not is_call,
                live=self._live,
            )
        except BaseException:
            self._reserved -= 1
            await self.authenticator.release(principal)
            raise
        # The reserved slot becomes the registered session (no await in between).
        self._reserved -= 1
        self.sessions[resource_id] = session
        self._bearers[resource_id] = token_hash(token)
        try:
            answer = await session.accept(offer, summary.media, summary.has_data_channel)
        except BaseException as exc:
            await self._abort(session, workdir)
            await self.authenticator.release(principal)
            if isinstance(exc, Exception) and not isinstance(exc, KuzetError):
                # The offer passed our checks but aiortc could not negotiate it (duplicate mids, a
                # BUNDLE naming no section, ...): the client's offer, not our fault; the link is kept.
                log.warning("offer refused by the media stack", extra={"error": repr(exc)})
                raise BadInput(f"the SDP offer could not be negotiated ({type(exc).__name__})") from exc
            raise
        log.info(
            "whip session opened",
            extra={"session": principal.session_id, "resource": resource_id, "kind": principal.kind},
        )
        return resource_id, answer

    async def _abort(self, session: MediaSession, workdir: Path) -> None:
        # aiortc can fail again while closing a half-negotiated peer: the session is dropped anyway.
        try:
            await session.abort()
        except Exception as exc:
            log.warning("aborting a refused session failed", extra={"error": repr(exc)})
            session.closed.set()
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        self._forget(session.resource_id)

    def _forget(self, resource_id: str) -> None:
        session = self.sessions.pop(resource_id, None)
        bearer = self._bearers.pop(resource_id, None)
        if session is not None and bearer is not None and session.end_reason is not None:
            self._ended[resource_id] = (bearer, time.monotonic(), _ended_state(session))
            while len(self._ended) > _ENDED_KEEP_MAX:
                self._ended.popitem(last=False)

    def live_session(self, session_id: str) -> MediaSession | None:
        """The live (not yet ended) WHIP session of a check session row, if this node holds it."""
        for session in self.sessions.values():
            if session.principal.session_id == session_id and session.end_reason is None:
                return session
        return None

    def state(self, resource_id: str, authorization: str | None) -> dict[str, Any]:
        """GET /whip/<id> (an extension of RFC 9725): live, processing, or ended with the outcome the
        data channel carried, for a client whose peer connection died before that message arrived."""
        token = require_bearer(authorization)
        now = time.monotonic()
        while self._ended and now - next(iter(self._ended.values()))[1] > _ENDED_KEEP_S:
            self._ended.popitem(last=False)
        session = self.sessions.get(resource_id)
        if session is not None:
            expected = self._bearers.get(resource_id, "")
            state: dict[str, Any] = (
                {"state": "live"}
                if session.end_reason is None
                else {"state": "processing", "ended_reason": session.end_reason.value}
            )
        elif resource_id in self._ended:
            expected, _, state = self._ended[resource_id]
        else:
            raise NotFoundError("no such WHIP session (or it ended too long ago)")
        if not hmac.compare_digest(expected, token_hash(token)):
            raise Forbidden("this WHIP session was opened with another credential")
        return state

    def delete(self, resource_id: str, authorization: str | None) -> None:
        """DELETE /whip/<id>: end the session (its capture still reaches the sink). RFC 9725: only
        with the same bearer credential that opened it."""
        token = require_bearer(authorization)
        session = self.sessions.get(resource_id)
        expected = self._bearers.get(resource_id)
        if session is None or expected is None:
            raise NotFoundError("no such WHIP session")
        if not hmac.compare_digest(expected, token_hash(token)):
            raise Forbidden("this WHIP session was opened with another credential")
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


# How long and how many ended sessions `WhipIngest.state` still answers for.
_ENDED_KEEP_S = 600.0
_ENDED_KEEP_MAX = 10_000


def _ended_state(session: MediaSession) -> dict[str, Any]:
    reason = session.end_reason.value if session.end_reason is not None else None
    outcome = session.outcome
    if outcome is None:
        # Nothing judged it (the sink gave no outcome): say so; a technical end is a retake.
        outcome = {"status": "technical_failure", "retake": True, "ended_reason": reason}
    return {"state": "ended", "ended_reason": reason, "outcome": outcome}


class CheckinSink:
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
    authenticator: Callable[[Services], WhipAuthenticator] | None = None,
    sink: Callable[[Services], SessionSink] | None = None,
) -> None:
    """Wire WHIP into an app built by `create_app`: the ingest is made in the lifespan (from the
    services) and its sessions are ended at shutdown. Factories default to the services' WHIP
    credentials (`ServicesAuthenticator`) and the check-in flow (`CheckinSink`)."""

    async def start(services: Services) -> None:
        # Frame-sized blocks go back to the OS when freed, not into malloc's arenas (webrtc/heap.py).
        set_mmap_threshold(services.settings.media.malloc_mmap_threshold_kb)
        ingest = WhipIngest(
            services.settings,
            (authenticator or ServicesAuthenticator)(services),
            (sink or CheckinSink)(services),
            # Frames are analysed on the analysis pool while the session runs (the node loads no model).
            live=PoolLiveAnalysis(services.workers),
            on_refused=services.metrics.sessions_refused_busy.inc,
        )
        app.state.whip_ingest = ingest
        services.metrics.live_sessions.set_function(lambda: len(ingest.sessions))

    async def stop(services: Services) -> None:
        ingest: WhipIngest | None = getattr(app.state, "whip_ingest", None)
        if ingest is not None:
            await ingest.close_all()

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)
