"""The live calls of one node: the officer's publish, the live face probe and the viewers, per call.

A call is a check session of kind `call`. The person joins with a one-time link through the ordinary
WHIP ingest (their `MediaSession` runs the liveness challenge at the start and keeps going until the
officer ends it); the officer publishes here (`OfficerPublish`). Each side watches the other through WHEP
(`media_server.webrtc.whep`). Ending a call stores the officer's recording, ends the person's session (its
capture goes through the check-in pipeline: evidence, checks, verdict) and then records the officer's
decision as a review of that verdict.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from media_server.artifacts import store_artifact
from media_server.auth import Principal
from media_server.calls.live import LiveProbe
from media_server.calls.publish import OfficerPublish
from media_server.checkin.evidence import recording_content_type
from media_server.db import audit
from media_server.db.enums import ArtifactKind, Decision, SessionKind, SessionStatus
from media_server.db.models import CheckSession, Review, Verdict
from media_server.db.types import utcnow
from media_server.errors import BadInput, Conflict, KuzetError, NotFoundError
from media_server.schedules.tick import IssuedSession, request_on_demand
from media_server.services import Services
from media_server.webrtc.capture import EndedReason
from media_server.webrtc.ingest import WhipIngest
from media_server.webrtc.sdp import keep_loopback_candidates, validate_offer
from media_server.webrtc.session import MediaSession
from media_server.webrtc.whep import TrackSource, WhepEgress

log = logging.getLogger("kuzet.calls")

CALL_PATH = "/call/"
# How often ending a call looks for the person's verdict.
_VERDICT_POLL_S = 0.25


# (services, who, session_id, decision, comment) -> review id: the one way a decision is stored and audited.
RecordReview = Callable[[Services, Principal, str, Decision, str], str]


@dataclass(frozen=True, slots=True)
class CallEnded:
    """What ending a call did: the person's session judged (or never joined), the review written."""

    call_id: str
    joined: bool
    verdict_id: str | None
    decision: str | None
    review_id: str | None
    officer_recording: str | None

    def to_dict(self) -> dict[str, Any]:
        """The response body."""
        return {
            "call_id": self.call_id,
            "joined": self.joined,
            "verdict_id": self.verdict_id,
            "verdict": self.decision,
            "review_id": self.review_id,
            "officer_recording_artifact": self.officer_recording,
        }


def create_call(services: Services, person_id: str, who: Principal) -> IssuedSession:
    """A call session whose one-time link opens now (valid `calls.link_valid_min`), audited. Blocking."""
    with services.sessions() as db:
        issued = request_on_demand(
            db,
            person_id=person_id,
            kind=SessionKind.CALL,
            now=utcnow(),
            duration=timedelta(minutes=services.settings.calls.link_valid_min),
            requested_by=who.actor,
        )
    with services.sessions.begin() as db:
        audit.append(db, who.actor, "call.started", "session", issued.session_id, {"person_id": person_id})
    return issued


def load_call(services: Services, call_id: str) -> CheckSession:
    """The call's session row (detached); NotFoundError for another kind of session or none."""
    with services.sessions() as db:
        row = db.get(CheckSession, call_id)
        if row is None or row.kind is not SessionKind.CALL:
            raise NotFoundError("no such call")
        db.expunge(row)
        return row


class CallHub:
    """Officer publishes, live probes and WHEP viewers of this node's calls (on `app.state.call_hub`)."""

    def __init__(
        self, services: Services, ingest: WhipIngest, egress: WhepEgress, record_review: RecordReview
    ) -> None:
        self.services = services
        # The workstation's review writer (`media_server.api.workstation.record_review`), injected.
        self.record_review = record_review
        self.ingest = ingest
        self.egress = egress
        self.publishes: dict[str, OfficerPublish] = {}
        self._publish_ids: dict[str, str] = {}  # call id -> resource id of its publish
        self.probes: dict[str, LiveProbe] = {}
        self._ending: set[str] = set()

    # --- sources ------------------------------------------------------------------------------------

    def person_source(self, session_id: str) -> MediaSession | None:
        """The live WHIP session of a call or check-in on this node."""
        return self.ingest.live_session(session_id)

    def officer_source(self, call_id: str) -> TrackSource | None:
        """The officer's live publish of a call."""
        publish = self.publishes.get(call_id)
        return None if publish is None or publish.ended else publish

    # --- the officer's publish ------------------------------------------------------------------

    async def publish(self, call: CheckSession, body: bytes) -> tuple[str, str]:
        """The officer's WHIP POST for a call: (resource id, SDP answer). Conflict when the call ended or
        the officer already publishes; BadInput for an offer that is not usable SDP."""
        media = self.services.settings.media
        offer, summary = validate_offer(body, max_bytes=media.max_offer_bytes)
        if call.status not in (SessionStatus.SCHEDULED, SessionStatus.ACTIVE) or call.id in self._ending:
            raise Conflict("this call has ended")
        current = self.publishes.get(call.id)
        if current is not None and not current.ended:
            raise Conflict("the officer already publishes to this call; end that first")
        if media.loopback_only:
            offer = keep_loopback_candidates(offer)
        resource_id = secrets.token_urlsafe(16)
        publish = OfficerPublish(
            call_id=call.id,
            media=media,
            workdir=self.services.settings.data_dir / "media" / f"call-{resource_id}",
        )
        try:
            answer = await publish.accept(offer, summary.media)
        except Exception as exc:
            await publish.close()
            await publish.discard()
            if isinstance(exc, KuzetError):
                raise
            raise BadInput(f"the SDP offer could not be negotiated ({type(exc).__name__})") from exc
        self.publishes[call.id] = publish
        self._publish_ids[call.id] = resource_id
        self.start_probe(call)
        return resource_id, answer

    def start_probe(self, call: CheckSession) -> None:
        """Start the live face probe of a call (once)."""
        if call.id not in self.probes:
            probe = LiveProbe(
                self.services,
                call.person_id,
                lambda: self.person_source(call.id),
                self.services.settings.calls.live_results_kept,
            )
            self.probes[call.id] = probe
            probe.start()

    async def unpublish(self, call_id: str, resource_id: str) -> str | None:
        """The officer's DELETE: the publish ends and its recording is stored now (the call goes on; the
        officer may publish again, which records anew). The artifact id, if anything was recorded."""
        if self._publish_ids.get(call_id) != resource_id:
            raise NotFoundError("no such publish")
        artifact = await self._store_officer_recording(call_id)
        self.publishes.pop(call_id, None)
        self._publish_ids.pop(call_id, None)
        return artifact

    async def _store_officer_recording(self, call_id: str) -> str | None:
        """Finish the officer's recording and store it as evidence of the call; the artifact id."""
        publish = self.publishes.get(call_id)
        if publish is None:
            return None
        result = await publish.close()
        if result is None or result.path is None:
            await publish.discard()
            return None
        path = result.path
        ref = await asyncio.to_thread(
            store_artifact,
            self.services,
            call_id,
            ArtifactKind.RECORDING,
            recording_content_type(path),
            {**result.meta, "side": "officer", "counts": result.counts},
            path=path,
        )
        await publish.discard()
        return ref.artifact_id

    # --- the end --------------------------------------------------------------------------------

    def _record(self, who: Principal, call_id: str, decision: Decision, comment: str) -> str:
        review_id = self.record_review(self.services, who, call_id, decision, comment)
        _audit_end(self.services, call_id, who, decision, comment, review_id)
        return review_id

    async def end(self, call_id: str, who: Principal, decision: Decision, comment: str) -> CallEnded:
        """End a call with the officer's decision: the officer's recording is stored, the person's session
        ends (evidence, checks, verdict through the check-in pipeline), then the decision is recorded as a
        review of that verdict (`review_decided`) and the call's end is audited (`call.ended`)."""
        call = await asyncio.to_thread(load_call, self.services, call_id)
        if call_id in self._ending:
            raise Conflict("this call is being ended")
        if call.status is SessionStatus.CANCELLED or await asyncio.to_thread(
            _reviewed, self.services, call_id
        ):
            raise Conflict("this call was already ended")
        self._ending.add(call_id)
        try:
            probe = self.probes.pop(call_id, None)
            if probe is not None:
                probe.stop()
            # Evidence first: the officer's recording is stored before the person's session is judged, so
            # the verdict's manifest lists both directions.
            officer_artifact = await self._store_officer_recording(call_id)
            session = self.person_source(call_id)
            if session is not None:
                session.end(EndedReason.COMPLETED)
            await self.egress.end_subject(call_id)
            joined = session is not None or call.status is not SessionStatus.SCHEDULED
            if not joined:
                await asyncio.to_thread(_cancel_unjoined, self.services, call_id, who, decision, comment)
                return CallEnded(call_id, False, None, None, None, officer_artifact)
            verdict = await self._wait_for_verdict(call_id)
            if verdict is None:
                raise Conflict("the person's checks are still running; post the decision again in a moment")
            review_id = await asyncio.to_thread(self._record, who, call_id, decision, comment)
            return CallEnded(call_id, True, verdict[0], verdict[1], review_id, officer_artifact)
        finally:
            self._ending.discard(call_id)
            self.publishes.pop(call_id, None)
            self._publish_ids.pop(call_id, None)

    async def _wait_for_verdict(self, call_id: str) -> tuple[str, str] | None:
        deadline = time.monotonic() + self.services.settings.calls.verdict_wait_s
        while time.monotonic() < deadline:
            found = await asyncio.to_thread(_verdict, self.services, call_id)
            if found is not None:
                return found
            await asyncio.sleep(_VERDICT_POLL_S)
        return None

    async def close_all(self) -> None:
        """Server shutdown: stop probes and publishes (recordings of calls never ended are kept on disk)."""
        for probe in self.probes.values():
            probe.stop()
        for publish in self.publishes.values():
            await publish.close()

    # --- what the officer's page shows ------------------------------------------------------------

    def live_state(self, call_id: str) -> dict[str, Any]:
        """Who is connected and the live face results (newest last)."""
        session = self.person_source(call_id)
        publish = self.publishes.get(call_id)
        probe = self.probes.get(call_id)
        return {
            "person_connected": session is not None,
            "person_stats": dict(session.stats) if session is not None else None,
            "officer_publishing": publish is not None and not publish.ended,
            "officer_frames": publish.stats() if publish is not None else None,
            "viewers": self.egress.count(call_id),
            "live": [r.to_dict() for r in probe.results] if probe is not None else [],
        }


def _verdict(services: Services, call_id: str) -> tuple[str, str] | None:
    with services.sessions() as db:
        row = db.scalars(
            select(Verdict).where(Verdict.session_id == call_id).order_by(Verdict.created_at.desc())
        ).first()
        return (row.id, row.decision.value) if row is not None else None


def _reviewed(services: Services, call_id: str) -> bool:
    with services.sessions() as db:
        return db.scalars(select(Review.id).where(Review.session_id == call_id)).first() is not None


def _comment_hash(comment: str) -> str:
    return hashlib.sha256(comment.encode()).hexdigest()


def _audit_end(
    services: Services, call_id: str, who: Principal, decision: Decision, comment: str, review_id: str
) -> None:
    with services.sessions.begin() as db:
        audit.append(
            db,
            who.actor,
            "call.ended",
            "session",
            call_id,
            {"decision": decision.value, "review_id": review_id, "comment_sha256": _comment_hash(comment)},
        )


def _cancel_unjoined(
    services: Services, call_id: str, who: Principal, decision: Decision, comment: str
) -> None:
    """The person never joined: the call is cancelled (no missed-check violation), the officer's word kept."""
    with services.sessions.begin() as db:
        row = db.get(CheckSession, call_id)
        if row is not None and row.status is SessionStatus.SCHEDULED:
            row.status = SessionStatus.CANCELLED
            row.ended_at = utcnow()
            row.meta = {**(row.meta or {}), "call": {"joined": False}}
        audit.append(
            db,
            who.actor,
            "call.ended",
            "session",
            call_id,
            {"joined": False, "decision": decision.value, "comment_sha256": _comment_hash(comment)},
        )
